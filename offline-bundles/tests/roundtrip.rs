//! Authoring tools end to end: keygen, create from a spec, sign, inspect, verify, import;
//! m-of-n thresholds, trust rotation, re-import, replay, crash leftovers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use common::*;
use outpost_bundles::{
    BlobStatus, BundleError, BundleType, ChannelFloor, ImportContext, ImportOutcome, Limits,
    Progress, PublicKey, SigningKey, TrustDocument, VerifiedBundle, VerifyOptions, create_bundle,
    import_file, inspect_file, keygen, load_signing_key, public_key_path, sign_bundle, verify_file,
};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("files")).unwrap();
        fs::write(
            dir.path().join("files/tool_1.2_amd64.deb"),
            vec![42u8; 200_000],
        )
        .unwrap();
        fs::write(dir.path().join("files/site.conf"), b"ntp=10.0.0.1\n").unwrap();
        fs::write(dir.path().join("files/empty"), b"").unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self, name: &str) -> (SigningKey, PublicKey) {
        let path = self.path(name);
        let public = keygen(&path).unwrap();
        (load_signing_key(&path).unwrap(), public)
    }

    fn spec(&self, name: &str, version: u64, extra: &str) -> PathBuf {
        let text = format!(
            r#"channel = "site"
version = {version}
expires = "2027-06-01T00:00:00Z"
{extra}
[[payload]]
path = "files/tool_1.2_amd64.deb"
kind = "artifact"
name = "tool"

[[payload]]
path = "files/site.conf"
kind = "config"

[[payload]]
path = "files/empty"
kind = "outpost-release"
"#
        );
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path
    }
}

const CREATED: i64 = 1_790_000_000; // 2026-09
const BEFORE_EXPIRY: i64 = 1_800_000_000; // 2027-01

fn ctx_for(trust: TrustDocument) -> ImportContext {
    ImportContext {
        trust,
        cluster_id: "c1".into(),
        channel_floors: BTreeMap::new(),
        time_floor: BEFORE_EXPIRY,
        limits: Limits::default(),
    }
}

fn imported(out: ImportOutcome) -> VerifiedBundle {
    match out {
        ImportOutcome::Imported(b) => b,
        other => panic!("expected Imported, got {other:?}"),
    }
}

#[test]
fn create_sign_inspect_verify_import() {
    let site = Site::new();
    let (k1, p1) = site.key("release1.key");
    let (k2, p2) = site.key("release2.key");
    assert_eq!(
        fs::read_to_string(public_key_path(&site.path("release1.key")))
            .unwrap()
            .len(),
        94
    );
    let spec = site.spec("spec.toml", 3, "targets = [\"c1\"]");
    let out = site.path("site-3.obundle");
    let m = create_bundle(&spec, &[k1], &out, CREATED).unwrap();
    assert_eq!(m.payloads.len(), 3);
    assert_eq!(m.payloads[1].name, "site.conf");
    assert_eq!(m.payloads[0].sha256, sha(&[42u8; 200_000]));
    assert_eq!(m.expires, 1_811_808_000);

    // 2 of 2 needed: one signature is not enough, the second `sign` makes it.
    let trust = TrustDocument::initial(vec![p1, p2], 2).unwrap();
    let opts = VerifyOptions {
        trust: trust.clone(),
        cluster_id: Some("c1".into()),
        time_floor: Some(BEFORE_EXPIRY),
        limits: Limits::default(),
    };
    assert!(matches!(
        verify_file(&out, &opts),
        Err(BundleError::ThresholdNotMet {
            have: 1,
            need: 2,
            ..
        })
    ));
    sign_bundle(&out, &k2).unwrap();
    sign_bundle(&out, &k2).unwrap(); // idempotent
    let info = inspect_file(&out).unwrap();
    assert_eq!(info.signed_by.len(), 2);
    assert_eq!(info.manifest, m);
    let text = info.to_text();
    assert!(text.contains("channel    site\n"), "{text}");
    assert!(text.contains("expires    2027-06-01T00:00:00Z\n"), "{text}");
    assert!(
        text.contains("payload    tool artifact 200000 bytes sha256 "),
        "{text}"
    );
    assert_eq!(text.matches("signed by").count(), 2);
    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains("\"outpost-release\""), "{json}");
    let verified = verify_file(&out, &opts).unwrap();
    assert_eq!(verified.signers.len(), 2);
    assert!(verified.payloads.iter().all(|p| p.path.is_none()));

    // `tar tvf` still lists it, in order.
    if let Ok(listing) = std::process::Command::new("tar")
        .arg("tf")
        .arg(&out)
        .output()
    {
        let names = String::from_utf8_lossy(&listing.stdout).to_string();
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            [
                "outpost-bundle",
                "manifest.json",
                "signatures.json",
                "payloads/tool",
                "payloads/site.conf",
                "payloads/empty"
            ]
        );
    }

    let store = store_in(site.dir.path());
    let mut seen: Vec<Progress> = Vec::new();
    let b = imported(
        import_file(&out, &store, &ctx_for(trust.clone()), &mut |p| seen.push(p)).unwrap(),
    );
    let size = fs::metadata(&out).unwrap().len();
    assert_eq!(seen.last().unwrap().done, size);
    assert!(seen.iter().all(|p| p.total == Some(size)));
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    for p in &b.payloads {
        let path = p.path.as_ref().unwrap();
        assert_eq!(store.verify(&p.sha256).unwrap(), BlobStatus::Ok);
        assert_eq!(path, &store.blob_path(&p.sha256).unwrap());
    }
    assert_eq!(
        fs::read(b.payloads[1].path.as_ref().unwrap()).unwrap(),
        b"ntp=10.0.0.1\n"
    );

    // Re-import of the very same bundle at the current version: a no-op.
    let mut ctx = ctx_for(trust.clone());
    ctx.channel_floors.insert(
        "site".into(),
        ChannelFloor {
            version: 3,
            manifest_sha256: b.manifest_sha256.clone(),
        },
    );
    let again = import_file(&out, &store, &ctx, &mut |_| {}).unwrap();
    assert_eq!(
        again,
        ImportOutcome::AlreadyImported {
            id: m.id.clone(),
            manifest_sha256: b.manifest_sha256.clone()
        }
    );

    // Another bundle with the same version is refused; a newer one imports and shares blobs.
    let spec3b = site.spec("spec3b.toml", 3, "");
    let other = site.path("other.obundle");
    let k1 = load_signing_key(&site.path("release1.key")).unwrap();
    create_bundle(&spec3b, &[k1.clone(), k2.clone()], &other, CREATED).unwrap();
    assert!(matches!(
        import_file(&other, &store, &ctx, &mut |_| {}),
        Err(BundleError::VersionNotGreater {
            version: 3,
            floor: 3,
            ..
        })
    ));
    let spec4 = site.spec("spec4.toml", 4, "");
    let newer = site.path("newer.obundle");
    create_bundle(&spec4, &[k1, k2], &newer, CREATED).unwrap();
    let b4 = imported(import_file(&newer, &store, &ctx, &mut |_| {}).unwrap());
    assert_eq!(b4.manifest.version, 4);
    assert_eq!(store.list().unwrap().len(), 3);

    // Replay of the older bundle after 4 is committed.
    ctx.channel_floors.insert(
        "site".into(),
        ChannelFloor {
            version: 4,
            manifest_sha256: b4.manifest_sha256.clone(),
        },
    );
    assert!(matches!(
        import_file(&out, &store, &ctx, &mut |_| {}),
        Err(BundleError::VersionNotGreater {
            version: 3,
            floor: 4,
            ..
        })
    ));

    // Expired against the cluster time floor, wrong cluster.
    let mut late = ctx_for(trust.clone());
    late.time_floor = m.expires;
    assert!(matches!(
        import_file(&out, &store, &late, &mut |_| {}),
        Err(BundleError::Expired { .. })
    ));
    let mut elsewhere = ctx_for(trust);
    elsewhere.cluster_id = "c2".into();
    assert!(matches!(
        import_file(&out, &store, &elsewhere, &mut |_| {}),
        Err(BundleError::WrongCluster { .. })
    ));
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn sign_refuses_a_corrupt_bundle_and_leaves_it_untouched() {
    let site = Site::new();
    let (k1, _) = site.key("k1");
    let (k2, _) = site.key("k2");
    let out = site.path("b.obundle");
    create_bundle(&site.spec("s.toml", 1, ""), &[k1], &out, CREATED).unwrap();
    let mut bytes = fs::read(&out).unwrap();
    // end blocks, `empty` header, `site.conf` header + data: then the tail of `tool`.
    let at = bytes.len() - 1024 - 512 - 1024 - 600;
    bytes[at] ^= 0xff;
    fs::write(&out, &bytes).unwrap();
    let err = sign_bundle(&out, &k2).unwrap_err();
    assert!(matches!(err, BundleError::HashMismatch { .. }), "{err:?}");
    assert_eq!(fs::read(&out).unwrap(), bytes);
    let temps = fs::read_dir(site.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(temps, 0);
}

#[test]
fn m_of_n_thresholds() {
    let site = Site::new();
    let keys: Vec<(SigningKey, PublicKey)> =
        (0..4).map(|i| site.key(&format!("k{i}.key"))).collect();
    let trust = TrustDocument::initial(keys[..3].iter().map(|k| k.1).collect(), 2).unwrap();
    let spec = site.spec("spec.toml", 1, "");
    let cases: &[(&[usize], bool)] = &[
        (&[0], false),
        (&[0, 1], true),
        (&[1, 2], true),
        (&[0, 1, 2], true),
        (&[2, 2], false),
        (&[3], false),
        (&[0, 3], false),
        (&[1, 2, 3], true),
    ];
    for (i, (signers, ok)) in cases.iter().enumerate() {
        let out = site.path(&format!("b{i}.obundle"));
        let ks: Vec<SigningKey> = signers.iter().map(|&s| keys[s].0.clone()).collect();
        create_bundle(&spec, &ks, &out, CREATED).unwrap();
        let store = store_in(&site.path(&format!("store{i}")));
        let got = import_file(&out, &store, &ctx_for(trust.clone()), &mut |_| {});
        assert_eq!(got.is_ok(), *ok, "signers {signers:?}: {got:?}");
        if !ok {
            assert!(store.list().unwrap().is_empty());
        }
    }
}

fn trust_spec(site: &Site, name: &str, version: u64, root: &[&str], release: &[&str]) -> PathBuf {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}.pub\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "type = \"trust\"\nversion = {version}\nexpires = \"2027-06-01T00:00:00Z\"\n[trust]\nroot_keys = [{}]\nroot_threshold = {}\nrelease_keys = [{}]\nrelease_threshold = 1\n[channel_resets]\nsite = 7\n",
        list(root),
        root.len(),
        list(release)
    );
    let path = site.path(name);
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn trust_rotation() {
    let site = Site::new();
    let (root1, r1) = site.key("root1");
    let (root2, _) = site.key("root2");
    let (rel1, a1) = site.key("rel1");
    let (rel2, _) = site.key("rel2");
    let current = TrustDocument {
        version: 1,
        root: outpost_bundles::RoleKeys {
            keys: vec![r1],
            threshold: 1,
        },
        release: outpost_bundles::RoleKeys {
            keys: vec![a1],
            threshold: 1,
        },
    };
    let store = store_in(site.dir.path());
    let ctx = ctx_for(current.clone());

    // Version 2 moves root to root2 and release to rel2.
    let spec = trust_spec(&site, "trust2.toml", 2, &["root2"], &["rel2"]);
    let only_old = site.path("t-old.obundle");
    create_bundle(&spec, std::slice::from_ref(&root1), &only_old, CREATED).unwrap();
    assert!(matches!(
        import_file(&only_old, &store, &ctx, &mut |_| {}),
        Err(BundleError::ThresholdNotMet {
            role: "new root",
            ..
        })
    ));
    let only_new = site.path("t-new.obundle");
    create_bundle(&spec, std::slice::from_ref(&root2), &only_new, CREATED).unwrap();
    assert!(matches!(
        import_file(&only_new, &store, &ctx, &mut |_| {}),
        Err(BundleError::ThresholdNotMet {
            role: "current root",
            ..
        })
    ));
    let release_signed = site.path("t-rel.obundle");
    create_bundle(
        &spec,
        &[rel1.clone(), root2.clone()],
        &release_signed,
        CREATED,
    )
    .unwrap();
    assert!(import_file(&release_signed, &store, &ctx, &mut |_| {}).is_err());

    let both = site.path("t-both.obundle");
    create_bundle(&spec, std::slice::from_ref(&root1), &both, CREATED).unwrap();
    sign_bundle(&both, &root2).unwrap();
    let b = imported(import_file(&both, &store, &ctx, &mut |_| {}).unwrap());
    assert_eq!(b.manifest.bundle_type, BundleType::Trust);
    assert_eq!(
        b.manifest.channel_resets,
        BTreeMap::from([("site".to_string(), 7)])
    );
    let new = b.manifest.trust.clone().unwrap();
    assert_eq!(new.version, 2);
    assert!(b.payloads.is_empty());

    // The caller commits `new`; from now on rel1 is refused and rel2 accepted.
    let ctx2 = ctx_for(new.clone());
    assert!(matches!(
        import_file(&both, &store, &ctx2, &mut |_| {}),
        Ok(ImportOutcome::AlreadyImported { .. })
    ));
    let content = site.spec("c.toml", 1, "");
    let old_signed = site.path("c-old.obundle");
    create_bundle(&content, &[rel1], &old_signed, CREATED).unwrap();
    assert!(matches!(
        import_file(&old_signed, &store, &ctx2, &mut |_| {}),
        Err(BundleError::UnknownKey { .. })
    ));
    let new_signed = site.path("c-new.obundle");
    create_bundle(&content, &[rel2], &new_signed, CREATED).unwrap();
    imported(import_file(&new_signed, &store, &ctx2, &mut |_| {}).unwrap());
}

#[test]
fn trust_version_must_be_next() {
    let site = Site::new();
    let (root1, r1) = site.key("root1");
    let (_, a1) = site.key("rel1");
    let current = TrustDocument {
        version: 1,
        root: outpost_bundles::RoleKeys {
            keys: vec![r1],
            threshold: 1,
        },
        release: outpost_bundles::RoleKeys {
            keys: vec![a1],
            threshold: 1,
        },
    };
    let store = store_in(site.dir.path());
    let spec = trust_spec(&site, "trust3.toml", 3, &["root1"], &["rel1"]);
    let out = site.path("t3.obundle");
    create_bundle(&spec, &[root1], &out, CREATED).unwrap();
    assert!(matches!(
        import_file(&out, &store, &ctx_for(current), &mut |_| {}),
        Err(BundleError::TrustVersion {
            current: 1,
            found: 3
        })
    ));
}

#[test]
fn crash_leftovers_are_cleaned() {
    // A node killed mid-import leaves temp files and possibly complete blobs nobody
    // references; start-up removes the first, gc the second, referenced blobs stay.
    let site = Site::new();
    let (k, p) = site.key("k");
    let trust = TrustDocument::initial(vec![p], 1).unwrap();
    let out = site.path("b.obundle");
    create_bundle(&site.spec("s.toml", 1, ""), &[k], &out, CREATED).unwrap();
    let store = store_in(site.dir.path());
    let b = imported(import_file(&out, &store, &ctx_for(trust), &mut |_| {}).unwrap());
    fs::write(store.root().join("tmp/abc.part"), b"half a payload").unwrap();
    let orphan = store
        .put_verified(&b"orphan"[..], &sha(b"orphan"), 6)
        .unwrap();
    assert_eq!(store.clean_tmp().unwrap(), 1);
    let keep: BTreeSet<String> = b.payloads.iter().map(|p| p.sha256.clone()).collect();
    let report = store.gc(&keep).unwrap();
    assert_eq!(report.removed, vec![sha(b"orphan")]);
    assert!(!orphan.exists());
    for h in &keep {
        assert_eq!(store.verify(h).unwrap(), BlobStatus::Ok);
    }
}

#[test]
fn create_refuses_bad_specs() {
    let site = Site::new();
    let (k, _) = site.key("k");
    let write = |name: &str, text: &str| -> PathBuf {
        let p = site.path(name);
        fs::write(&p, text).unwrap();
        p
    };
    let out = site.path("x.obundle");
    let cases: Vec<(PathBuf, &str)> = vec![
        (write("a.toml", "version = 1\nbogus = 1\n"), "SpecParse"),
        (
            write(
                "b.toml",
                "channel = \"site\"\nversion = 1\nexpires = \"soon\"\n",
            ),
            "SpecInvalid",
        ),
        (
            write(
                "c.toml",
                "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"files/nope\"\nkind = \"config\"\n",
            ),
            "Io",
        ),
        (
            write("d.toml", "channel = \"a/b\"\nversion = 1\n"),
            "ManifestInvalid",
        ),
        (
            write(
                "e.toml",
                "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"files/site.conf\"\nkind = \"config\"\nname = \"../x\"\n",
            ),
            "UnsafeName",
        ),
    ];
    for (spec, want) in cases {
        let err = create_bundle(&spec, std::slice::from_ref(&k), &out, CREATED).unwrap_err();
        assert!(
            format!("{err:?}").starts_with(want),
            "{}: {err:?}",
            spec.display()
        );
        assert!(!out.exists());
    }
    // Nothing but the inputs in the directory: no temp files from the failed writes.
    let stray: Vec<_> = fs::read_dir(site.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty());
}
