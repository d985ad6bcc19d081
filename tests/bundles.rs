//! Offline bundles through the real binary: authoring commands, import on a follower,
//! replication of the blobs to every node, a corpus of malformed bundles each refused with
//! its reason and nothing left behind, replay refusal, and kill -9 at several points of an
//! import. Tests in this file run one at a time.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, now, ok, or_dump, run_exe, s, serial};

#[path = "../offline-bundles/tests/common/mod.rs"]
#[allow(dead_code, clippy::all)]
mod bcommon;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bcommon::{Draft, Part, pk, sha, tar_bytes};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost_bundles::{MANIFEST_NAME, PAYLOAD_PREFIX, PayloadEntry, PayloadKind};

const T: Duration = Duration::from_secs(30);

/// Writes the public key files of test seeds 1..=3 into `dir`.
fn seed_keys(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for seed in 1..=3u8 {
        let p = dir.join(format!("seed{seed}.pub"));
        std::fs::write(&p, outpost_bundles::public_file_text(&pk(seed)))?;
        out.push(p);
    }
    Ok(out)
}

/// An `n`-node cluster under `ROOT/cluster` trusting the bundle keys `trust`, `threshold` of
/// them needed per bundle.
async fn cluster_trusting(
    root: &Path,
    n: usize,
    trust: &[PathBuf],
    threshold: usize,
) -> Result<LocalCluster> {
    let mut init_args = Vec::new();
    for k in trust {
        init_args.extend(["--bundle-trust".to_string(), s(k).to_string()]);
    }
    init_args.extend(["--bundle-threshold".into(), threshold.to_string()]);
    let opts = LocalOptions {
        init_args,
        ..LocalOptions::default()
    };
    LocalCluster::start(&root.join("cluster"), &exe(), n, opts).await
}

/// Every file under a node's blob store (relative paths), temp files included.
fn store_files(node_dir: &Path) -> Vec<String> {
    let root = node_dir.join("blobs");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                out.push(
                    p.strip_prefix(&root)
                        .map(|r| r.display().to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    out.sort();
    out
}

fn list_json(c: &LocalCluster, i: usize) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &c.cli(i, &["bundle", "list", "--json"])?,
    )?)
}

fn bundle_ids(v: &serde_json::Value) -> Vec<String> {
    v["bundles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Imports `file` through node `i`; returns (success, stdout, stderr).
fn import(c: &LocalCluster, i: usize, file: &Path) -> Result<(bool, String, String)> {
    run_exe(&[
        "bundle",
        "import",
        s(file),
        "--data-dir",
        s(&c.nodes[i].dir),
    ])
}

const TOOL: &[u8] = &[7u8; 300_000];
const CONF: &[u8] = b"[global]\nsite.mode = \"strict\"\n";

/// A draft created a minute ago: a bundle created later than the cluster time floor plus
/// the allowed skew is refused, and the shared fixtures are dated in 2027.
fn draft(parts: &[(&str, &[u8])]) -> Draft {
    let mut d = Draft::new(parts);
    d.manifest.created = now() - 60;
    d
}

fn good_draft() -> Draft {
    let mut d = draft(&[("tool", TOOL), ("site.conf", CONF)]);
    d.manifest.version = 6;
    d.manifest.payloads[1].kind = PayloadKind::Config;
    d.sign(&[1, 2]);
    d
}

fn with_manifest(edit: impl FnOnce(&mut Draft)) -> Draft {
    let mut d = good_draft();
    edit(&mut d);
    d.sign(&[1, 2]);
    d
}

fn with_parts(d: &Draft, edit: impl FnOnce(&mut Vec<Part>)) -> Vec<u8> {
    let mut parts = d.parts();
    edit(&mut parts);
    tar_bytes(&parts)
}

/// (what, bundle bytes, text the refusal on stderr must contain).
fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let d = good_draft();
    let mut v: Vec<(&'static str, Vec<u8>, &'static str)> = Vec::new();
    let mut bad_sig = good_draft();
    let sig = &mut bad_sig.sigs.signatures[0].signature;
    *sig = format!(
        "{}{}",
        if sig.starts_with('0') { "1" } else { "0" },
        &sig[1..]
    );
    v.push(("bad signature", bad_sig.to_bytes(), "bad signature by key"));
    let mut none = good_draft();
    none.sign(&[]);
    v.push(("missing signature", none.to_bytes(), "carries no signature"));
    let mut unknown = good_draft();
    unknown.sign(&[9]);
    v.push(("unknown key", unknown.to_bytes(), "unknown key"));
    let mut one = good_draft();
    one.sign(&[1]);
    v.push(("threshold not met", one.to_bytes(), "threshold not met"));
    let mut twice = good_draft();
    twice.sign(&[2, 2]);
    v.push(("one key counts once", twice.to_bytes(), "threshold not met"));
    let mut edited = good_draft();
    edited.bytes.extend_from_slice(b" ");
    v.push((
        "manifest changed after signing",
        edited.to_bytes(),
        "bad signature",
    ));
    v.push((
        "expired",
        with_manifest(|d| {
            d.manifest.created = now() - 7200;
            d.manifest.expires = now() - 3600;
        })
        .to_bytes(),
        "expired",
    ));
    v.push((
        "wrong cluster",
        with_manifest(|d| d.manifest.targets = vec!["some-other-cluster".into()]).to_bytes(),
        "not cluster",
    ));
    v.push((
        "unlisted payload",
        with_parts(&d, |p| {
            p.insert(4, Part::file(&format!("{PAYLOAD_PREFIX}extra"), b"x"))
        }),
        "not listed in the manifest",
    ));
    v.push((
        "duplicate payload",
        with_parts(&d, |p| {
            let dup = p[3].clone();
            p.insert(4, dup)
        }),
        "appears twice",
    ));
    v.push((
        "missing payload",
        with_parts(&d, |p| {
            p.pop();
        }),
        "is missing",
    ));
    v.push((
        "payloads out of order",
        with_parts(&d, |p| p.swap(3, 4)),
        "out of order",
    ));
    v.push((
        "size lie in the tar header",
        with_parts(&d, |p| p[4].header_size = Some(CONF.len() as u64 + 1)),
        "the manifest says",
    ));
    v.push((
        "hash mismatch",
        with_parts(&d, |p| {
            if let Some(b) = p[3].data.last_mut() {
                *b ^= 1;
            }
        }),
        "has sha256",
    ));
    v.push((
        "absolute path",
        with_parts(&d, |p| p.insert(3, Part::file("/etc/passwd", b"root"))),
        "unsafe name",
    ));
    v.push((
        "dot-dot path",
        with_parts(&d, |p| p.insert(3, Part::file("payloads/../../x", b"x"))),
        "unsafe name",
    ));
    v.push((
        "symlink entry",
        with_parts(&d, |p| {
            p.insert(
                3,
                Part {
                    typ: b'2',
                    ..Part::file("payloads/tool", b"")
                },
            )
        }),
        "only regular files",
    ));
    v.push((
        "device entry",
        with_parts(&d, |p| {
            p.insert(
                3,
                Part {
                    typ: b'3',
                    ..Part::file("payloads/tool", b"")
                },
            )
        }),
        "only regular files",
    ));
    let full = d.to_bytes();
    v.push((
        "truncated inside a payload",
        full[..full.len() - 1024 - 600].to_vec(),
        "truncated",
    ));
    v.push((
        "truncated before the end blocks",
        full[..full.len() - 1024].to_vec(),
        "truncated",
    ));
    let mut trailing = full.clone();
    trailing.extend_from_slice(b"garbage");
    trailing.extend(std::iter::repeat_n(0u8, 505));
    v.push(("trailing garbage", trailing, "trailing garbage"));
    v.push((
        "manifest over the size limit",
        with_parts(&d, |p| p[1].header_size = Some(5 << 20)),
        "over the limit",
    ));
    v.push((
        "payload over the size limit",
        with_manifest(|d| {
            d.manifest.payloads.push(PayloadEntry {
                name: "huge".into(),
                kind: PayloadKind::Artifact,
                size: 65 << 30,
                sha256: sha(b"huge"),
            })
        })
        .to_bytes(),
        "over the limit",
    ));
    v.push((
        "too many payloads",
        with_manifest(|d| {
            d.manifest.payloads = (0..10_001)
                .map(|i| PayloadEntry {
                    name: format!("p{i}"),
                    kind: PayloadKind::Artifact,
                    size: 1,
                    sha256: sha(b"x"),
                })
                .collect()
        })
        .to_bytes(),
        "over the limit",
    ));
    v.push((
        "not a bundle",
        tar_bytes(&[Part::file("readme.txt", b"hello")]),
        "not an outpost bundle",
    ));
    v.push((
        "unsupported format",
        with_parts(&d, |p| {
            p[0] = Part::file("outpost-bundle", b"outpost-bundle format 9\n")
        }),
        "unsupported bundle format",
    ));
    v.push((
        "manifest not JSON",
        with_parts(&d, |p| p[1] = Part::file(MANIFEST_NAME, b"{not json")),
        "does not parse",
    ));
    v.push(("empty file", Vec::new(), "truncated"));
    let bad_conf: &[u8] = b"[plant]\nmode = 1\n";
    let mut conf = draft(&[("tool", TOOL), ("site.conf", bad_conf)]);
    conf.manifest.version = 6;
    conf.manifest.payloads[1].kind = PayloadKind::Config;
    conf.sign(&[1, 2]);
    v.push((
        "config payload with an unknown table (refused after its blobs were stored)",
        conf.to_bytes(),
        "unknown table [plant]",
    ));
    let mut unknown_and_truncated = good_draft();
    unknown_and_truncated.sign(&[9]);
    let b = unknown_and_truncated.to_bytes();
    v.push((
        "unknown key and truncated: the first fault is named",
        b[..b.len() - 2000].to_vec(),
        "unknown key",
    ));
    v.push((
        "expired and wrong cluster: expiry is checked first",
        with_manifest(|d| {
            d.manifest.created = now() - 7200;
            d.manifest.expires = now() - 3600;
            d.manifest.targets = vec!["some-other-cluster".into()];
        })
        .to_bytes(),
        "expired",
    ));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn author_import_replicate_and_refuse() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // Authoring on a "connected machine": two keys, a spec, create with one key, sign with the other.
    let ka = root.join("ka");
    let kb = root.join("kb");
    ok(&["bundle", "keygen", "-o", s(&ka)]).expect("keygen a");
    ok(&["bundle", "keygen", "-o", s(&kb)]).expect("keygen b");
    let mode = std::fs::metadata(&ka).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600), "secret key file mode");
    let files = root.join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let deb: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(files.join("tool_1.2_amd64.deb"), &deb).expect("write payload");
    std::fs::write(files.join("site.toml"), "[global]\nntp = \"10.0.0.1\"\n").expect("write");
    let spec = root.join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"site\"\nversion = 3\n\n[[payload]]\npath = \"files/tool_1.2_amd64.deb\"\nkind = \"artifact\"\nname = \"tool\"\n\n[[payload]]\npath = \"files/site.toml\"\nkind = \"config\"\n",
    )
    .expect("spec");
    let b1 = root.join("b1.obundle");
    ok(&[
        "bundle",
        "create",
        "--spec",
        s(&spec),
        "--key",
        s(&ka),
        "-o",
        s(&b1),
    ])
    .expect("create");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["bundle", "inspect", s(&b1), "--json"]).expect("inspect"))
            .expect("inspect json");
    assert_eq!(inspect["manifest"]["version"], 3);
    assert_eq!(inspect["signed_by"].as_array().map(Vec::len), Some(1));
    let kpub = |k: &Path| format!("{}.pub", k.display());
    let (pa, pb) = (kpub(&ka), kpub(&kb));
    let verify2 = [
        "bundle",
        "verify",
        s(&b1),
        "--trust",
        &pa,
        "--trust",
        &pb,
        "--threshold",
        "2",
    ];
    let (good2, _, err) = run_exe(&verify2).expect("verify");
    assert!(
        !good2 && err.contains("threshold not met"),
        "one signature of two: {err}"
    );
    ok(&["bundle", "sign", s(&b1), "--key", s(&kb)]).expect("sign");
    ok(&verify2).expect("verify after the second signature");
    // tar still lists it.
    let tar = Command::new("tar").arg("tvf").arg(&b1).output();
    if let Ok(t) = tar {
        assert!(String::from_utf8_lossy(&t.stdout).contains("payloads/tool"));
    }

    // The cluster trusts ka, kb and the corpus seeds 1-3, 2 signatures needed.
    let mut trust = vec![PathBuf::from(&pa), PathBuf::from(&pb)];
    trust.extend(seed_keys(root).expect("seed keys"));
    let mut c = cluster_trusting(root, 3, &trust, 2)
        .await
        .expect("three-node cluster");
    let r = async {
        let leader = c.leader(T).await?;
        let follower = (0..3).find(|&i| i != leader).context("a follower")?;

        // The malformed corpus: each refused with its reason, nothing kept on any node.
        let before: Vec<Vec<String>> = c.nodes.iter().map(|n| store_files(&n.dir)).collect();
        let cases = corpus();
        assert!(cases.len() >= 25, "corpus has {} cases", cases.len());
        for (i, (what, bytes, want)) in cases.iter().enumerate() {
            let f = root.join(format!("bad{i}.obundle"));
            std::fs::write(&f, bytes)?;
            let (good, _, err) = import(&c, follower, &f)?;
            assert!(!good, "{what}: accepted");
            assert!(err.contains(want), "{what}: stderr {err:?} lacks {want:?}");
        }
        assert!(
            bundle_ids(&list_json(&c, follower)?).is_empty(),
            "a refused bundle is listed"
        );
        let after: Vec<Vec<String>> = c.nodes.iter().map(|n| store_files(&n.dir)).collect();
        assert_eq!(before, after, "the blob stores changed");

        // The authored bundle, imported on a follower, reaches every node's store.
        let t0 = Instant::now();
        let (good, out, err) = import(&c, follower, &b1)?;
        assert!(good, "import: {err}");
        assert!(out.contains("imported bundle"), "{out}");
        let deadline = Instant::now() + T;
        let listing = loop {
            let v = list_json(&c, leader)?;
            let full = v["bundles"][0]["payloads"].as_array().is_some_and(|ps| {
                ps.iter()
                    .all(|p| p["held_by"].as_array().map(Vec::len) == Some(3))
            });
            if full {
                break v;
            }
            if Instant::now() > deadline {
                bail!("blobs not on every node in time: {v}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "import + replication to 3 nodes of a 3 MB bundle: {:?}",
            t0.elapsed()
        );
        for p in listing["bundles"][0]["payloads"]
            .as_array()
            .context("payloads")?
        {
            let sha256 = p["sha256"].as_str().context("sha256")?;
            for n in &c.nodes {
                let blob = n.dir.join("blobs/sha256").join(&sha256[..2]).join(sha256);
                let data = std::fs::read(&blob).with_context(|| format!("{}", blob.display()))?;
                assert_eq!(sha(&data), sha256, "{} holds a bad copy", n.name);
            }
        }
        // Every node lists it, and its config payload is applied with it.
        for i in 0..3 {
            assert_eq!(bundle_ids(&list_json(&c, i)?).len(), 1, "node {i}");
        }
        let ntp = c.cli(leader, &["config", "get", "ntp", "--linearizable"])?;
        assert!(ntp.contains("10.0.0.1"), "config from the bundle: {ntp}");

        // The very same bundle again: a no-op. An older version of the channel: refused.
        let (good, out, _) = import(&c, leader, &b1)?;
        assert!(good && out.contains("already imported"), "{out}");
        let newer = root.join("v6.obundle");
        std::fs::write(&newer, good_bytes())?;
        let (good, _, err) = import(&c, leader, &newer)?;
        assert!(good, "version 6: {err}");
        let (good, _, err) = import(&c, follower, &b1)?;
        assert!(
            !good && err.contains("not greater"),
            "replay of version 3: {err}"
        );
        let older = root.join("v5.obundle");
        let mut v5 = good_draft();
        v5.manifest.version = 5;
        v5.manifest.id = "5".repeat(32);
        v5.sign(&[1, 3]);
        std::fs::write(&older, v5.to_bytes())?;
        let (good, _, err) = import(&c, follower, &older)?;
        assert!(
            !good && err.contains("not greater"),
            "version 5 after 6: {err}"
        );
        assert_eq!(bundle_ids(&list_json(&c, follower)?).len(), 2);

        // Trust rotation: a trust bundle signed by two current root keys (and its own new
        // root keys) makes kc the only release key; the seed keys stop counting.
        let kc = root.join("kc");
        ok(&["bundle", "keygen", "-o", s(&kc)])?;
        let trust_spec = root.join("trust.toml");
        std::fs::write(
            &trust_spec,
            format!(
                "type = \"trust\"\nversion = 2\n[trust]\nroot_keys = [\"{pa}\", \"{pb}\"]\nroot_threshold = 2\nrelease_keys = [\"{}.pub\"]\nrelease_threshold = 1\n",
                kc.display()
            ),
        )?;
        let tb = root.join("trust-2.obundle");
        ok(&["bundle", "create", "--spec", s(&trust_spec), "--key", s(&ka), "-o", s(&tb)])?;
        let (good, _, err) = import(&c, follower, &tb)?;
        assert!(!good && err.contains("threshold not met"), "one root signature: {err}");
        ok(&["bundle", "sign", s(&tb), "--key", s(&kb)])?;
        let (good, out, err) = import(&c, follower, &tb)?;
        assert!(good && out.contains("trust version 2"), "rotation: {out} {err}");
        let mut v7 = good_draft();
        v7.manifest.version = 7;
        v7.manifest.id = "7".repeat(32);
        v7.sign(&[1, 2]);
        let f7 = root.join("v7.obundle");
        std::fs::write(&f7, v7.to_bytes())?;
        let (good, _, err) = import(&c, leader, &f7)?;
        assert!(!good && err.contains("unknown key"), "old release keys after rotation: {err}");
        let spec7 = root.join("spec7.toml");
        std::fs::write(
            &spec7,
            "channel = \"site\"\nversion = 7\n[[payload]]\npath = \"files/site.toml\"\nkind = \"config\"\n",
        )?;
        let b7 = root.join("b7.obundle");
        ok(&["bundle", "create", "--spec", s(&spec7), "--key", s(&kc), "-o", s(&b7)])?;
        let (good, _, err) = import(&c, leader, &b7)?;
        assert!(good, "new release key: {err}");
        assert_eq!(bundle_ids(&list_json(&c, follower)?).len(), 4);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
    c.kill9(0);
}

fn good_bytes() -> Vec<u8> {
    good_draft().to_bytes()
}

/// Feeds the first `n` bytes of `bundle` to `outpost bundle import` through a FIFO, kills the
/// importer with SIGKILL (and the node too when `kill_node`), restarts the node and checks
/// that it shows the whole bundle or none of it, with no temp files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_import_leaves_no_trace() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let trust = seed_keys(root).expect("keys");
    let mut c = cluster_trusting(root, 1, &trust, 2)
        .await
        .expect("one-node cluster");
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut d = draft(&[("first", &big), ("second", &big[..1_500_000])]);
    d.sign(&[1, 2]);
    let bytes = d.to_bytes();
    let head = tar_bytes(&d.head_parts()).len() - 1024;
    // (what, bytes fed, kill the node as well)
    let points = [
        ("after the head, before any payload byte", head, false),
        ("inside the first payload", head + 1_000_000, false),
        ("between the payloads", head + 512 + 2_000_000, true),
        (
            "inside the second payload",
            head + 512 * 2 + 2_000_000 + 700_000,
            false,
        ),
        ("everything but the end blocks", bytes.len() - 1024, true),
    ];
    let r = async {
        for (what, fed, kill_node) in points {
            let fifo = root.join("usb.obundle");
            let _ = std::fs::remove_file(&fifo);
            let cpath = std::ffi::CString::new(s(&fifo))?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) } != 0 {
                bail!("mkfifo: {}", std::io::Error::last_os_error());
            }
            let mut child = Command::new(exe())
                .args([
                    "bundle",
                    "import",
                    s(&fifo),
                    "--data-dir",
                    s(&c.nodes[0].dir),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let prefix = bytes[..fed].to_vec();
            let fifo_w = fifo.clone();
            let feeder = std::thread::spawn(move || -> std::io::Result<()> {
                let mut f = std::fs::OpenOptions::new().write(true).open(&fifo_w)?;
                f.write_all(&prefix)?;
                // Hold the pipe open (no EOF) until the importer is killed.
                std::thread::sleep(Duration::from_millis(600));
                Ok(())
            });
            // Let the importer consume what it was fed (the pipe holds at most 64 KiB).
            tokio::time::sleep(Duration::from_millis(400)).await;
            if kill_node {
                c.kill9(0);
            }
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "{what}: the importer ended before it was killed"
            );
            let left = store_files(&c.nodes[0].dir);
            if what.starts_with("inside") {
                assert!(
                    left.iter().any(|f| f.starts_with("tmp/")),
                    "{what}: no partial payload in tmp/ at the kill: {left:?}"
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = feeder.join();
            c.kill9(0);
            c.serve(0).await?;
            c.wait_ready(0, T).await?;
            let files = store_files(&c.nodes[0].dir);
            assert!(
                files.iter().all(|f| !f.starts_with("tmp/")),
                "{what}: temp files left: {files:?}"
            );
            let listed = bundle_ids(&list_json(&c, 0)?);
            assert!(
                listed.is_empty(),
                "{what}: half an import is listed: {listed:?}"
            );
            assert!(
                files.is_empty(),
                "{what}: blobs of an uncommitted import kept: {files:?}"
            );
        }
        // The store is fine afterwards: the same bundle imports whole.
        let f = root.join("whole.obundle");
        std::fs::write(&f, &bytes)?;
        let (good, _, err) = import(&c, 0, &f)?;
        assert!(good, "{err}");
        assert_eq!(store_files(&c.nodes[0].dir).len(), 2);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// Unmounts on drop, also when the test panics.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node whose blob store fills up refuses the import with "disk full" and keeps nothing.
/// Needs root to mount a 1 MiB tmpfs over the node's blob store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_and_keeps_nothing() {
    let _g = serial();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "disk-full test needs root to mount a small tmpfs";
        if std::env::var_os("CI").is_some() {
            panic!("{why} (CI is set, so this is a failure)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let trust = seed_keys(root).expect("keys");
    let mut c = cluster_trusting(root, 1, &trust, 2)
        .await
        .expect("one-node cluster");
    let blobs = c.nodes[0].dir.join("blobs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&blobs)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        let why = "mount -t tmpfs failed (no mount privilege in this container?)";
        if std::env::var_os("CI").is_some() {
            panic!("{why} (CI is set, so this is a failure)");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let _m = Mount(blobs.clone());
    let r = async {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut d = draft(&[("big", &big)]);
        d.sign(&[1, 2]);
        let f = root.join("big.obundle");
        std::fs::write(&f, d.to_bytes())?;
        let (good, _, err) = import(&c, 0, &f)?;
        assert!(!good && err.contains("disk full"), "{err}");
        let left = store_files(&c.nodes[0].dir);
        assert!(left.is_empty(), "kept after disk full: {left:?}");
        assert!(bundle_ids(&list_json(&c, 0)?).is_empty());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
    c.kill9(0);
}
