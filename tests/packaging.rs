//! The packages of `packaging/` (issue 11), made by `packaging/build.sh` from the binary these
//! tests were built with (no release build): the unit's hardening score, the .deb's contents and
//! maintainer scripts and an install into a scratch root, the .deb's service under a real
//! systemd (the host's own system booted in a throw-away `systemd-nspawn` container), the
//! offline tarball's `install.sh` into a prefix and back out, and the image built FROM scratch
//! with no network.
//!
//! Root and the tools `.ci/deps-packaging.sh` installs are needed; without them a test prints
//! why and passes, unless `CI` is set, where it fails. Nothing is left on the machine: scratch
//! roots and the container's overlay are temporary, the test image is removed when the test
//! binary exits, and the packages are written under cargo's target dir.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use outpost::harness::localcluster::free_port;
use support::{command_ok, output, serial};

/// systemd-analyze's exposure scale is 0.0–10.0; the product asks for at most 2.0.
const MAX_EXPOSURE: f64 = 2.0;
/// The name the test image gets (tagged VERSION and latest), removed at the end.
const TEST_IMAGE: &str = "localhost/outpost-packaging-test";

#[test]
fn the_unit_is_hardened() {
    let _g = serial();
    if !require("systemd-analyze", have("systemd-analyze")) {
        return;
    }
    let unit = repo().join("packaging/outpost.service");
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(&unit),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure(&text);
    println!("systemd-analyze security --offline=true packaging/outpost.service: exposure {score}");
    assert!(
        out.status.success() && score <= MAX_EXPOSURE,
        "the unit's exposure is {score}, above {MAX_EXPOSURE}:\n{text}"
    );
    // What hardening must not take away from the node (ARCHITECTURE.md, "Packaging").
    let unit_text = fs::read_to_string(&unit).unwrap();
    for line in [
        "ExecStart=/usr/bin/outpost serve --data-dir /var/lib/outpost",
        "User=outpost",
        "StateDirectory=outpost",
        "StateDirectoryMode=0700",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "LimitNOFILE=65536",
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "packaging/outpost.service lacks {line:?}"
        );
    }
}

#[test]
fn the_deb_holds_the_binary_unit_user_and_data_dir_and_installs_into_a_scratch_root() {
    let _g = serial();
    if !require("root (dpkg installs as root)", is_root())
        || !require("dpkg and dpkg-deb", have("dpkg") && have("dpkg-deb"))
        || !require("setpriv", have("setpriv"))
    {
        return;
    }
    let Some(p) = packages() else { return };

    // Contents: these files and nothing else, owned by root.
    let listing = command_ok(Command::new("dpkg-deb").arg("-c").arg(&p.deb));
    let files: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[1], *f.last().unwrap())
        })
        .collect();
    let mut names: Vec<&str> = files.iter().map(|f| f.2).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "./usr/bin/outpost",
            "./usr/lib/systemd/system/outpost.service",
            "./usr/lib/sysusers.d/outpost.conf",
            "./usr/lib/tmpfiles.d/outpost.conf",
            "./usr/share/doc/outpost/README.md",
            "./usr/share/doc/outpost/copyright",
        ],
        "dpkg-deb -c:\n{listing}"
    );
    for (mode, owner, name) in &files {
        assert_eq!(*owner, "0/0", "{name} is not root's:\n{listing}");
        let want = if name.ends_with("/outpost") {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(*mode, want, "{name}:\n{listing}");
    }

    // Control fields and the maintainer scripts cargo-deb generated around ours.
    let info = command_ok(Command::new("dpkg-deb").arg("-I").arg(&p.deb));
    for want in [
        "Package: outpost".to_string(),
        format!("Version: {}-1", p.version),
        "systemd | systemd-standalone-sysusers".to_string(),
    ] {
        assert!(info.contains(&want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    let control = tempfile::tempdir().unwrap();
    command_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&p.deb)
            .arg(control.path()),
    );
    let script = |name: &str| fs::read_to_string(control.path().join(name)).unwrap();
    let postinst = script("postinst");
    for want in [
        "systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} outpost.conf",
        "systemd-tmpfiles --create ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} outpost.conf",
        "deb-systemd-helper enable outpost.service",
    ] {
        assert!(
            postinst.contains(want),
            "postinst lacks {want:?}:\n{postinst}"
        );
    }
    let sysusers_at = postinst.find("systemd-sysusers").unwrap();
    let tmpfiles_at = postinst.rfind("systemd-tmpfiles --create").unwrap();
    assert!(
        sysusers_at < tmpfiles_at,
        "postinst must make the user before its data dir"
    );
    assert!(script("prerm").contains("deb-systemd-invoke stop outpost.service"));
    let postrm = script("postrm");
    assert!(
        postrm.contains("rm -rf \"${DPKG_ROOT:-}/var/lib/outpost\""),
        "postrm does not delete the data dir on purge:\n{postrm}"
    );

    // Install into a scratch root: dpkg runs the maintainer scripts outside a chroot with
    // DPKG_ROOT set (the root has no shell of its own), ignoring the dependencies it lacks.
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    fs::set_permissions(r, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args);
        c
    };
    command_ok(&mut dpkg(&["-i", p.deb.to_str().unwrap()]));

    let user = passwd_line(r, "outpost").expect("postinst made no user outpost");
    let f: Vec<&str> = user.split(':').collect();
    let (uid, gid): (u32, u32) = (f[2].parse().unwrap(), f[3].parse().unwrap());
    assert!(
        (1..1000).contains(&uid),
        "outpost is not a system user: {user}"
    );
    assert_eq!(f[5], "/var/lib/outpost", "{user}");
    assert!(f[6].ends_with("nologin"), "outpost can log in: {user}");
    let data = r.join("var/lib/outpost");
    let meta = fs::metadata(&data).expect("postinst made no /var/lib/outpost");
    assert_eq!(meta.mode() & 0o7777, 0o700, "/var/lib/outpost mode");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "/var/lib/outpost owner"
    );
    // An absolute link, meant for the root it is in.
    let wants = r.join("etc/systemd/system/multi-user.target.wants/outpost.service");
    let link = fs::read_link(&wants).expect("postinst did not enable outpost.service");
    assert!(
        link.ends_with("systemd/system/outpost.service"),
        "{} -> {}",
        wants.display(),
        link.display()
    );
    assert_eq!(
        fs::read(r.join("usr/lib/systemd/system/outpost.service")).unwrap(),
        fs::read(repo().join("packaging/outpost.service")).unwrap(),
        "the packaged unit differs from packaging/outpost.service"
    );
    let bin = r.join("usr/bin/outpost");
    let version = command_ok(Command::new(&bin).arg("--version"));
    assert_eq!(version.trim(), format!("outpost {}", p.version));

    // The node runs as that user, without privileges, from that directory; root reaches it
    // over the admin socket.
    serve_as(&bin, &data, uid, gid);

    // Reinstalling (an upgrade to the same version) keeps the user and the node's data.
    command_ok(&mut dpkg(&["-i", p.deb.to_str().unwrap()]));
    assert_eq!(passwd_line(r, "outpost").as_deref(), Some(user.as_str()));
    assert!(data.join("node.toml").exists(), "reinstall lost the node");
    // Remove keeps the data; purge deletes it. The user stays, as Debian leaves system users.
    command_ok(&mut dpkg(&["--remove", "outpost"]));
    assert!(!bin.exists(), "remove left /usr/bin/outpost");
    assert!(
        data.join("node.toml").exists(),
        "remove deleted the node's data"
    );
    command_ok(&mut dpkg(&["--purge", "outpost"]));
    assert!(!data.exists(), "purge left /var/lib/outpost");
    assert!(!r.join("usr/lib/systemd/system/outpost.service").exists());
    let status = output(&mut dpkg(&["-s", "outpost"]));
    assert!(
        !status.status.success() || !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "dpkg still lists outpost after purge"
    );
}

#[test]
fn the_deb_service_runs_hardened_under_systemd() {
    let _g = serial();
    if !require("root (mounts an overlay, boots a container)", is_root())
        || !require(
            "systemd-nspawn, nsenter, timeout",
            have("systemd-nspawn") && have("nsenter") && have("timeout"),
        )
    {
        return;
    }
    let Some(p) = packages() else { return };
    let Some(c) = Booted::start(&p.deb) else {
        return;
    };

    // Install as an operator would; nothing starts until the node is made.
    c.ok("dpkg -i /root/outpost.deb");
    assert_eq!(
        c.ok("stat -c '%a %U:%G' /var/lib/outpost"),
        "700 outpost:outpost"
    );
    assert_eq!(c.ok("systemctl is-enabled outpost.service"), "enabled");
    c.ok("systemctl start outpost.service");
    assert_eq!(
        c.ok("systemctl show -p ConditionResult --value outpost.service"),
        "no",
        "the service must wait for `outpost init`"
    );

    // README, "Install from a USB stick": make the node as the user, then start the service.
    c.ok(
        "runuser -u outpost -- outpost init --data-dir /var/lib/outpost --name n1 \
         --api-addr 127.0.0.1:7443 --peer-addr 127.0.0.1:7444 >/dev/null",
    );
    c.ok("systemctl start outpost.service");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = c.sh("outpost status --json");
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"leader_id\": 1") {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the service did not serve within 60 s:\n{}\n{}",
                c.sh_text("systemctl status --no-pager outpost.service"),
                c.sh_text("journalctl --no-pager -n 40 -u outpost.service")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    c.ok("outpost config set site.name lab");
    assert_eq!(c.ok("outpost config get site.name"), "lab");

    // The process has what the unit promises: not root, no capabilities, no new privileges,
    // a system call filter, the open-files limit raised (to the unit's, or the host's lower
    // hard limit).
    let pid = c.ok("systemctl show -p MainPID --value outpost.service");
    let status = c.ok(&format!("cat /proc/{pid}/status"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), c.ok("id -u outpost"), "{status}");
    assert_eq!(field("CapEff"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(field("Seccomp"), "2", "{status}");
    let limits = c.ok(&format!("grep 'open files' /proc/{pid}/limits"));
    let soft: u64 = limits.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(soft > 1024, "open-files limit not raised: {limits}");
    let live = c.sh_text("systemd-analyze security outpost.service");
    let score = exposure(&live);
    println!("systemd-analyze security outpost.service (loaded, running): exposure {score}");
    assert!(score <= MAX_EXPOSURE, "{live}");

    // SIGTERM stops it cleanly; a restart serves the same node.
    c.ok("systemctl restart outpost.service");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.sh_text("outpost config get site.name").trim() != "lab" {
        assert!(Instant::now() < deadline, "no answer after a restart");
        std::thread::sleep(Duration::from_millis(300));
    }
    c.ok("systemctl stop outpost.service");
    assert_eq!(
        c.ok("systemctl show -p Result --value outpost.service"),
        "success"
    );

    // Purge removes the package, the unit and the data.
    c.ok("dpkg --purge outpost");
    c.ok("test ! -e /usr/bin/outpost && test ! -e /var/lib/outpost");
    c.ok("systemctl daemon-reload && ! systemctl cat outpost.service >/dev/null 2>&1");
}

#[test]
fn the_tarball_installs_into_a_prefix_and_back_out_without_network() {
    let _g = serial();
    if !require("root (install.sh creates a system user)", is_root())
        || !require(
            "unshare, systemd-sysusers, systemd-tmpfiles, userdel",
            have("unshare")
                && have("systemd-sysusers")
                && have("systemd-tmpfiles")
                && have("userdel"),
        )
    {
        return;
    }
    let Some(p) = packages() else { return };
    let name = format!("outpost-{}-linux-{}", p.version, std::env::consts::ARCH);
    assert_eq!(
        p.tarball.file_name().unwrap().to_str().unwrap(),
        format!("{name}.tar.gz")
    );
    let listing = command_ok(Command::new("tar").arg("-tzf").arg(&p.tarball));
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    let want: Vec<String> = [
        "",
        "README.md",
        "SHA256SUMS",
        "install.sh",
        "outpost",
        "outpost-sysusers.conf",
        "outpost-tmpfiles.conf",
        "outpost.service",
    ]
    .iter()
    .map(|f| format!("{name}/{f}"))
    .collect();
    assert_eq!(names, want, "tar -tzf");

    let work = tempfile::tempdir().unwrap();
    command_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&p.tarball)
            .arg("-C")
            .arg(work.path()),
    );
    let dir = work.path().join(&name);
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums.lines().count(),
        7 - 1,
        "SHA256SUMS names every other file:\n{sums}"
    );
    command_ok(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&dir),
    );

    // A file that is not the release's: nothing is installed.
    let bad = work.path().join("tampered");
    command_ok(Command::new("cp").arg("-a").arg(&dir).arg(&bad));
    fs::OpenOptions::new()
        .append(true)
        .open(bad.join("outpost.service"))
        .unwrap()
        .write_all(b"ExecStartPre=/bin/true\n")
        .unwrap();
    let refused_root = tempfile::tempdir().unwrap();
    let o = output(&mut install(&bad, refused_root.path(), &[]));
    assert!(!o.status.success(), "install.sh accepted a tampered file");
    assert!(String::from_utf8_lossy(&o.stderr).contains("SHA256SUMS"));
    assert_eq!(fs::read_dir(refused_root.path()).unwrap().count(), 0);

    // Install twice (idempotent), with no network at all.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    command_ok(&mut install(&dir, r, &[]));
    let user = passwd_line(r, "outpost").expect("install.sh made no user outpost");
    command_ok(&mut install(&dir, r, &[]));
    assert_eq!(passwd_line(r, "outpost").as_deref(), Some(user.as_str()));
    let f: Vec<&str> = user.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    for (path, mode, src) in [
        ("usr/bin/outpost", 0o755, "outpost"),
        (
            "usr/lib/systemd/system/outpost.service",
            0o644,
            "outpost.service",
        ),
        (
            "usr/lib/sysusers.d/outpost.conf",
            0o644,
            "outpost-sysusers.conf",
        ),
        (
            "usr/lib/tmpfiles.d/outpost.conf",
            0o644,
            "outpost-tmpfiles.conf",
        ),
        ("usr/share/doc/outpost/README.md", 0o644, "README.md"),
    ] {
        let m = fs::metadata(r.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(m.mode() & 0o7777, mode, "{path} mode");
        assert_eq!(
            fs::read(r.join(path)).unwrap(),
            fs::read(dir.join(src)).unwrap()
        );
    }
    let data = r.join("var/lib/outpost");
    let m = fs::metadata(&data).expect("install.sh made no /var/lib/outpost");
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o700, uid),
        "/var/lib/outpost"
    );
    let version = command_ok(Command::new(r.join("usr/bin/outpost")).arg("--version"));
    assert_eq!(version.trim(), format!("outpost {}", p.version));

    // Uninstall keeps the data and the user; --purge deletes both.
    fs::write(data.join("node.toml"), "format = 1\n").unwrap();
    command_ok(&mut install(&dir, r, &["--uninstall"]));
    assert!(!r.join("usr/bin/outpost").exists());
    assert!(!r.join("usr/lib/systemd/system/outpost.service").exists());
    assert!(!r.join("usr/share/doc/outpost").exists());
    assert!(
        data.join("node.toml").exists(),
        "--uninstall deleted the data"
    );
    assert!(
        passwd_line(r, "outpost").is_some(),
        "--uninstall deleted the user"
    );
    command_ok(&mut install(&dir, r, &["--uninstall", "--purge"]));
    assert!(!data.exists(), "--purge left the data dir");
    assert!(passwd_line(r, "outpost").is_none(), "--purge left the user");
    let groups = fs::read_to_string(r.join("etc/group")).unwrap();
    assert!(
        !groups.lines().any(|l| l.starts_with("outpost:")),
        "{groups}"
    );
}

#[test]
fn the_image_is_built_from_scratch_without_network_and_runs() {
    let _g = serial();
    if !require("root (podman)", is_root()) || !require("podman", have("podman")) {
        return;
    }
    let Some(p) = packages() else { return };
    let image = p
        .image
        .as_deref()
        .expect("build.sh --image ran, podman being here");
    assert!(
        p.dir
            .join(format!("outpost-{}-image.tar", p.version))
            .exists(),
        "build.sh --image saved no image archive"
    );

    // No base image: the layers are the two COPYs of the build context.
    let fmt =
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{len .RootFS.Layers}}";
    let config =
        command_ok(Command::new("podman").args(["image", "inspect", "--format", fmt, image]));
    assert_eq!(
        config.trim(),
        "10001:10001|[\"/usr/bin/outpost\"]|[\"serve\",\"--data-dir\",\"/var/lib/outpost\"]|2"
    );
    let history =
        command_ok(Command::new("podman").args(["history", "--format", "{{.CreatedBy}}", image]));
    assert!(!history.contains("FROM "), "{history}");

    // The image's own file system runs the node as its user: its libraries and loader are
    // there, the data dir is the user's. (Run by chroot, so no container runtime is needed.)
    let ctr = format!("outpost-packaging-test-{}", std::process::id());
    command_ok(Command::new("podman").args(["create", "--name", &ctr, image]));
    let _ctr = ContainerGuard(ctr.clone());
    let rootfs = PathBuf::from(command_ok(Command::new("podman").args(["mount", &ctr])).trim());
    let as_user = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg("--userspec=10001:10001")
            .arg(&rootfs)
            .arg("/usr/bin/outpost")
            .args(args);
        c
    };
    let version = command_ok(&mut as_user(&["--version"]));
    assert_eq!(version.trim(), format!("outpost {}", p.version));
    let (api, peer) = (free_port().unwrap(), free_port().unwrap());
    let (api, peer) = (format!("127.0.0.1:{api}"), format!("127.0.0.1:{peer}"));
    command_ok(&mut as_user(&[
        "init",
        "--name",
        "c1",
        "--api-addr",
        &api,
        "--peer-addr",
        &peer,
        "--no-mdns",
    ]));
    let log = fs::File::create(p.dir.join("image-node.log")).unwrap();
    let mut node = as_user(&["serve"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = holds_within(Duration::from_secs(30), || {
        let o = output(&mut as_user(&["status", "--json"]));
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"leader_id\": 1")
    });
    stop(&mut node);
    assert!(
        served,
        "{}",
        fs::read_to_string(p.dir.join("image-node.log")).unwrap()
    );
}

// ---- the packages, made once --------------------------------------------------------------

struct Packages {
    dir: PathBuf,
    version: String,
    deb: PathBuf,
    tarball: PathBuf,
    /// `TEST_IMAGE:VERSION`, when podman is here to build it.
    image: Option<String>,
}

/// `packaging/build.sh --binary <this test's outpost>` into cargo's temp dir for tests, once.
fn packages() -> Option<&'static Packages> {
    static PACKAGES: OnceLock<Option<Packages>> = OnceLock::new();
    PACKAGES
        .get_or_init(|| {
            if !require("cargo-deb", cargo_deb()) {
                return None;
            }
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packaging");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            let image = is_root() && have("podman");
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join("packaging/build.sh"))
                .arg("--binary")
                .arg(env!("CARGO_BIN_EXE_outpost"))
                .arg("--out")
                .arg(&dir);
            if image {
                cmd.args(["--image", "--image-name", TEST_IMAGE]);
                // SAFETY: registers a plain function to run once when the process exits.
                unsafe { libc::atexit(remove_test_image) };
            }
            let started = Instant::now();
            print!("{}", command_ok(&mut cmd));
            println!("packaging/build.sh took {:.1?}", started.elapsed());
            let version = command_ok(Command::new(env!("CARGO_BIN_EXE_outpost")).arg("--version"))
                .trim()
                .trim_start_matches("outpost ")
                .to_string();
            let deb = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .expect("build.sh made no .deb");
            let tarball = dir.join(format!(
                "outpost-{version}-linux-{}.tar.gz",
                std::env::consts::ARCH
            ));
            assert!(tarball.exists(), "build.sh made no {}", tarball.display());
            Some(Packages {
                image: image.then(|| format!("{TEST_IMAGE}:{version}")),
                dir,
                version,
                deb,
                tarball,
            })
        })
        .as_ref()
}

/// Removes the test image (both its tags) when the test binary exits, whichever tests ran.
extern "C" fn remove_test_image() {
    let _ = Command::new("podman")
        .args(["rmi", "--force", &format!("{TEST_IMAGE}:latest")])
        .args(packages().and_then(|p| p.image.as_deref()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The node from `bin` as `uid:gid` with no capabilities and no new privileges, as the unit
/// runs it: init, serve, answer root over the admin socket, stop on SIGTERM.
fn serve_as(bin: &Path, data: &Path, uid: u32, gid: u32) {
    let as_user = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(bin)
        .args(args)
        .arg("--data-dir")
        .arg(data);
        c
    };
    let (api, peer) = (free_port().unwrap(), free_port().unwrap());
    let (api, peer) = (format!("127.0.0.1:{api}"), format!("127.0.0.1:{peer}"));
    command_ok(&mut as_user(&[
        "init",
        "--name",
        "n1",
        "--api-addr",
        &api,
        "--peer-addr",
        &peer,
        "--no-mdns",
    ]));
    let log_path = data.parent().unwrap().join("outpost-node.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut node = as_user(&["serve"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = holds_within(Duration::from_secs(30), || {
        let o = output(
            Command::new(bin)
                .args(["status", "--json", "--data-dir"])
                .arg(data),
        );
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("\"leader_id\": 1")
    });
    let status = stop(&mut node);
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let _ = fs::remove_file(&log_path);
    assert!(
        served,
        "the packaged node did not serve as uid {uid}:\n{log}"
    );
    assert!(
        status.success(),
        "the node did not stop cleanly on SIGTERM ({status}):\n{log}"
    );
}

// ---- the host's own system, booted in a throw-away container ---------------------------

/// The host's root file system under a tmpfs overlay (nothing reaches the host's disk),
/// booted by `systemd-nspawn` to basic.target with a private network, the .deb copied in.
struct Booted {
    base: tempfile::TempDir,
    nspawn: Option<Child>,
    pid1: u32,
}

impl Booted {
    fn start(deb: &Path) -> Option<Booted> {
        let base = tempfile::tempdir().unwrap();
        let (upper, merged) = (base.path().join("upper"), base.path().join("merged"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&merged).unwrap();
        let mut c = Booted {
            base,
            nspawn: None,
            pid1: 0,
        };
        let tmpfs = output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g", "tmpfs"])
                .arg(&upper),
        );
        if !require("a tmpfs mount", tmpfs.status.success()) {
            return None;
        }
        fs::create_dir_all(upper.join("u")).unwrap();
        fs::create_dir_all(upper.join("w")).unwrap();
        let opts = format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.join("u").display(),
            upper.join("w").display()
        );
        let overlay = output(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &opts])
                .arg(&merged),
        );
        if !require(
            &format!(
                "an overlay of / ({})",
                String::from_utf8_lossy(&overlay.stderr).trim()
            ),
            overlay.status.success(),
        ) {
            return None;
        }
        fs::copy(deb, merged.join("root/outpost.deb")).unwrap();
        // Images made for containers forbid service starts in maintainer scripts (exit 101);
        // this one is a whole system, so the scripts act as on a real machine.
        let _ = fs::remove_file(merged.join("usr/sbin/policy-rc.d"));

        let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .replace('-', "");
        // A machine id of its own, so that its journal is not taken for the host's.
        fs::write(merged.join("etc/machine-id"), format!("{uuid}\n")).unwrap();
        let log = fs::File::create(c.base.path().join("nspawn.log")).unwrap();
        let child = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&merged)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=read-only",
                "--quiet",
                &format!("--uuid={uuid}"),
                &format!("--machine=outpost-pkg-{}", std::process::id()),
                "systemd.unit=basic.target",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let nspawn_pid = child.id();
        c.nspawn = Some(child);
        let found = holds_within(Duration::from_secs(30), || {
            match child_named(nspawn_pid, "systemd") {
                Some(p) => {
                    c.pid1 = p;
                    true
                }
                None => false,
            }
        });
        if !require(
            &format!("systemd booted by systemd-nspawn\n{}", c.log()),
            found,
        ) {
            return None;
        }
        // systemctl reaches PID 1 once it has made its socket; then --wait blocks until the
        // boot is done.
        let mut state = String::new();
        let booted = holds_within(Duration::from_secs(120), || {
            state = c.sh_text("systemctl is-system-running --wait");
            matches!(state.trim(), "running" | "degraded")
        });
        if !require(
            &format!("a booted container (state {:?})\n{}", state.trim(), c.log()),
            booted,
        ) {
            return None;
        }
        Some(c)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.base.path().join("nspawn.log")).unwrap_or_default()
    }

    /// `sh -c SCRIPT` inside the container (all its namespaces), bounded by 120 s.
    fn sh(&self, script: &str) -> Output {
        output(
            Command::new("timeout")
                .args([
                    "120",
                    "nsenter",
                    "-t",
                    &self.pid1.to_string(),
                    "-a",
                    "--",
                    "sh",
                    "-c",
                    script,
                ])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }

    fn sh_text(&self, script: &str) -> String {
        let o = self.sh(script);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// The trimmed stdout of a script that must succeed.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "in the container: {script}: {}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            // SIGTERM asks systemd-nspawn to power the container off.
            // SAFETY: kill with a pid we spawned and still hold.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let done = holds_within(Duration::from_secs(60), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let mut unmounted = true;
        for m in ["merged", "upper"] {
            let path = self.base.path().join(m);
            if mounted(&path) && !output(Command::new("umount").arg(&path)).status.success() {
                let _ = output(Command::new("umount").arg("-l").arg(&path));
            }
            unmounted &= !mounted(&path);
        }
        if !unmounted {
            // Never delete through a mount of the host's root: leave the directory behind.
            let base = std::mem::replace(&mut self.base, tempfile::tempdir().unwrap());
            eprintln!("left {} mounted", base.keep().display());
        }
    }
}

/// Whether something is mounted at `path` (as /proc/self/mounts spells it).
fn mounted(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*path))
}

/// A child process of `parent` whose name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let comm = comm.split_once(" (").map(|c| c.1).unwrap_or("");
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && comm == name {
            return Some(pid);
        }
    }
    None
}

// ---- helpers ------------------------------------------------------------------------------

/// Unmounts and removes the test container (and its anonymous volume) at the end.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = output(Command::new("podman").args(["umount", &self.0]));
        let _ = output(Command::new("podman").args(["rm", "--force", "--volumes", &self.0]));
    }
}

/// `install.sh ARGS --prefix ROOT` from an unpacked tarball, in a network namespace of its
/// own: it has no network to touch.
fn install(dir: &Path, root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.arg("--net")
        .arg(dir.join("install.sh"))
        .args(args)
        .arg("--prefix")
        .arg(root);
    c
}

fn passwd_line(root: &Path, user: &str) -> Option<String> {
    let text = fs::read_to_string(root.join("etc/passwd")).ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .map(str::to_string)
}

/// The number in systemd-analyze's last line, `→ Overall exposure level for X: 1.1 OK`.
fn exposure(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    line.rsplit_once(": ")
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

/// SIGTERM, then the exit status (SIGKILL after 30 s).
fn stop(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill with a pid we spawned and still hold.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if holds_within(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        return child.wait().unwrap();
    }
    let _ = child.kill();
    child.wait().unwrap()
}

/// Whether `f` comes to hold within `limit`, polled every 200 ms; the caller asserts it with
/// what it knows (unlike `support::wait_for`, which panics itself).
fn holds_within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a need is met; if not, says so and skips the test, or fails it when `CI` is set.
fn require(what: &str, met: bool) -> bool {
    if met {
        return true;
    }
    let msg = format!("tests/packaging: needs {what} (run as root, after .ci/deps-packaging.sh)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so this is a failure)");
    }
    eprintln!("skipped: {msg}");
    false
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn cargo_deb() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
