//! The malformed-bundle corpus: every bundle is built here, refused with the right variant,
//! its message names the offending entry, and the blob store is exactly as before.

mod common;

use common::*;
use outpost_bundles::{
    BundleError, BundleType, ImportContext, ImportOutcome, PayloadEntry, PayloadKind, RoleKeys,
    TrustDocument, import_bundle,
};

type Check = fn(&BundleError) -> bool;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    ctx: ImportContext,
    check: Check,
    /// Text the refusal message must contain (the offending entry or key).
    names: String,
}

const TOOL: &[u8] = &[7u8; 3000];
const CONF: &[u8] = b"site.conf: mode=strict\n";

fn good() -> Draft {
    Draft::new(&[("tool", TOOL), ("site.conf", CONF)])
}

fn with_manifest(edit: impl FnOnce(&mut Draft)) -> Draft {
    let mut d = good();
    edit(&mut d);
    d.sign(&[1, 2]);
    d
}

fn replace_part(d: &Draft, index: usize, part: Part) -> Vec<u8> {
    let mut parts = d.parts();
    parts[index] = part;
    tar_bytes(&parts)
}

fn insert_part(d: &Draft, index: usize, part: Part) -> Vec<u8> {
    let mut parts = d.parts();
    parts.insert(index, part);
    tar_bytes(&parts)
}

fn corpus() -> Vec<Case> {
    let ctx = context();
    let d = good();
    let tool_sha = d.manifest.payloads[0].sha256.clone();
    let mut cases = Vec::new();
    let mut add = |name: &'static str, bytes: Vec<u8>, check: Check, names: &str| {
        cases.push(Case {
            name,
            bytes,
            ctx: ctx.clone(),
            check,
            names: names.to_string(),
        })
    };

    // ---- signatures ----
    let mut bad_sig = good();
    let s = &mut bad_sig.sigs.signatures[0].signature;
    *s = format!("{}{}", if s.starts_with('0') { "1" } else { "0" }, &s[1..]);
    add(
        "bad signature",
        bad_sig.to_bytes(),
        |e| matches!(e, BundleError::BadSignature { .. }),
        &pk(1).key_id(),
    );
    let mut none = good();
    none.sign(&[]);
    add(
        "missing signature",
        none.to_bytes(),
        |e| matches!(e, BundleError::MissingSignature { .. }),
        "signatures.json",
    );
    let mut unknown = good();
    unknown.sign(&[9, 1]);
    add(
        "unknown key",
        unknown.to_bytes(),
        |e| matches!(e, BundleError::UnknownKey { .. }),
        &pk(9).key_id(),
    );
    let mut one = good();
    one.sign(&[3]);
    add(
        "threshold not met",
        one.to_bytes(),
        |e| {
            matches!(
                e,
                BundleError::ThresholdNotMet {
                    have: 1,
                    need: 2,
                    ..
                }
            )
        },
        "release",
    );
    let mut same_key_twice = good();
    same_key_twice.sign(&[3, 3]);
    add(
        "one key counts once",
        same_key_twice.to_bytes(),
        |e| matches!(e, BundleError::ThresholdNotMet { have: 1, .. }),
        "1 valid",
    );
    let mut root_signed = good();
    root_signed.sign(&[100, 101]);
    add(
        "root keys do not sign content",
        root_signed.to_bytes(),
        |e| matches!(e, BundleError::UnknownKey { .. }),
        &pk(100).key_id(),
    );
    let mut edited = good();
    edited.bytes.extend_from_slice(b" ");
    add(
        "manifest bytes changed after signing",
        edited.to_bytes(),
        |e| matches!(e, BundleError::BadSignature { .. }),
        &pk(1).key_id(),
    );
    let trust_prefixed = {
        let bytes = outpost_bundles::manifest_bytes(&good().manifest).unwrap();
        let sig = |s| outpost_bundles::sign_manifest(&key(s), BundleType::Trust, &bytes);
        let mut g = good();
        g.sigs.signatures = vec![sig(1), sig(2)];
        g
    };
    add(
        "signed with the trust prefix",
        trust_prefixed.to_bytes(),
        |e| matches!(e, BundleError::BadSignature { .. }),
        "bad signature",
    );
    let mut unlisted_and_unsigned = good();
    unlisted_and_unsigned.sign(&[9]);
    add(
        "unknown key and unlisted entry: signature refused first",
        insert_part(
            &unlisted_and_unsigned,
            5,
            Part::file("payloads/extra", b"x"),
        ),
        |e| matches!(e, BundleError::UnknownKey { .. }),
        &pk(9).key_id(),
    );

    // ---- policy ----
    let expired = with_manifest(|d| d.manifest.expires = NOW);
    add(
        "expired",
        expired.to_bytes(),
        |e| matches!(e, BundleError::Expired { .. }),
        &expired.manifest.id,
    );
    let wrong = with_manifest(|d| d.manifest.targets = vec!["cluster-b".into()]);
    add(
        "wrong cluster",
        wrong.to_bytes(),
        |e| matches!(e, BundleError::WrongCluster { .. }),
        "cluster-b",
    );
    let same = with_manifest(|d| d.manifest.version = 5);
    add(
        "version equal to the floor",
        same.to_bytes(),
        |e| {
            matches!(
                e,
                BundleError::VersionNotGreater {
                    version: 5,
                    floor: 5,
                    ..
                }
            )
        },
        "\"site\"",
    );
    let older = with_manifest(|d| d.manifest.version = 2);
    add(
        "older version (replay)",
        older.to_bytes(),
        |e| matches!(e, BundleError::VersionNotGreater { .. }),
        "version 2",
    );

    // ---- payload entries ----
    add(
        "unlisted payload at the end",
        insert_part(&d, 5, Part::file("payloads/extra", b"x")),
        |e| matches!(e, BundleError::UnlistedPayload { .. }),
        "payloads/extra",
    );
    add(
        "unlisted payload in the middle",
        insert_part(&d, 4, Part::file("payloads/extra", b"x")),
        |e| matches!(e, BundleError::UnlistedPayload { .. }),
        "payloads/extra",
    );
    add(
        "unlisted file outside payloads/",
        insert_part(&d, 5, Part::file("etc/cron.d/evil", b"x")),
        |e| matches!(e, BundleError::UnlistedPayload { .. }),
        "etc/cron.d/evil",
    );
    add(
        "duplicate payload entry",
        insert_part(&d, 4, Part::file("payloads/tool", TOOL)),
        |e| matches!(e, BundleError::DuplicatePayload { .. }),
        "payloads/tool",
    );
    let dup = with_manifest(|d| {
        let p = d.manifest.payloads[0].clone();
        d.manifest.payloads.push(p);
        d.payloads.push(("tool".into(), TOOL.to_vec()));
    });
    add(
        "duplicate name in the manifest",
        dup.to_bytes(),
        |e| matches!(e, BundleError::DuplicatePayload { .. }),
        "tool",
    );
    add(
        "second manifest entry",
        insert_part(&d, 3, Part::file("manifest.json", b"{}")),
        |e| matches!(e, BundleError::DuplicatePayload { .. }),
        "manifest.json",
    );
    let mut missing = d.parts();
    missing.pop();
    add(
        "missing payload",
        tar_bytes(&missing),
        |e| matches!(e, BundleError::MissingPayload { .. }),
        "site.conf",
    );
    let mut swapped = d.parts();
    swapped.swap(3, 4);
    add(
        "payloads out of order",
        tar_bytes(&swapped),
        |e| matches!(e, BundleError::OutOfOrder { .. }),
        "payloads/site.conf",
    );
    let mut sig_first = d.parts();
    sig_first.swap(1, 2);
    add(
        "signatures before manifest",
        tar_bytes(&sig_first),
        |e| matches!(e, BundleError::OutOfOrder { .. }),
        "signatures.json",
    );
    let mut manifest_first = d.parts();
    manifest_first.remove(0);
    add(
        "manifest before marker",
        tar_bytes(&manifest_first),
        |e| matches!(e, BundleError::OutOfOrder { .. }),
        "manifest.json",
    );

    // ---- sizes and hashes ----
    let size_lie = with_manifest(|d| d.manifest.payloads[1].size += 1);
    add(
        "declared size larger than the entry",
        size_lie.to_bytes(),
        |e| matches!(e, BundleError::SizeMismatch { .. }),
        "payloads/site.conf",
    );
    let mut header_lie = d.parts();
    header_lie[4].header_size = Some(CONF.len() as u64 + 512);
    add(
        "header size larger than declared",
        tar_bytes(&header_lie),
        |e| matches!(e, BundleError::SizeMismatch { .. }),
        "payloads/site.conf",
    );
    let mut flipped = d.parts();
    flipped[4].data[0] ^= 1;
    add(
        "hash mismatch in the second payload (first already stored)",
        tar_bytes(&flipped),
        |e| matches!(e, BundleError::HashMismatch { .. }),
        "payloads/site.conf",
    );
    let mut swapped_content = d.parts();
    swapped_content[3].data = vec![8u8; TOOL.len()];
    add(
        "hash mismatch, same size",
        tar_bytes(&swapped_content),
        |e| matches!(e, BundleError::HashMismatch { .. }),
        &tool_sha,
    );

    // ---- names and entry types ----
    add(
        "absolute name",
        insert_part(&d, 3, Part::file("/etc/passwd", b"root")),
        |e| matches!(e, BundleError::UnsafeName { .. }),
        "/etc/passwd",
    );
    add(
        "dot-dot name",
        insert_part(&d, 3, Part::file("payloads/../../x", b"x")),
        |e| matches!(e, BundleError::UnsafeName { .. }),
        "payloads/../../x",
    );
    let traversal = with_manifest(|d| {
        d.manifest.payloads[1].name = "..".into();
        d.payloads[1].0 = "..".into();
    });
    add(
        "dot-dot payload name in the manifest",
        traversal.to_bytes(),
        |e| matches!(e, BundleError::UnsafeName { .. }),
        "..",
    );
    for (name, typ) in [
        ("symlink entry", b'2'),
        ("hard link entry", b'1'),
        ("directory entry", b'5'),
        ("character device entry", b'3'),
        ("block device entry", b'4'),
        ("fifo entry", b'6'),
        ("PAX header", b'x'),
    ] {
        let mut p = Part::file("payloads/tool", b"");
        p.typ = typ;
        add(
            name,
            replace_part(&d, 3, p),
            |e| matches!(e, BundleError::NotRegularFile { .. }),
            "payloads/tool",
        );
    }

    // ---- framing ----
    let full = d.to_bytes();
    let entries_len = tar_entries(&d.parts()).len();
    let tool_start = tar_entries(&d.head_parts()).len() + 512;
    add(
        "truncated inside the first payload",
        full[..tool_start + 1000].to_vec(),
        |e| matches!(e, BundleError::Truncated { .. }),
        "payloads/tool",
    );
    add(
        "truncated inside the last payload",
        full[..entries_len - 512 + 10].to_vec(),
        |e| matches!(e, BundleError::Truncated { .. }),
        "payloads/site.conf",
    );
    add(
        "truncated before the end blocks",
        full[..entries_len].to_vec(),
        |e| matches!(e, BundleError::Truncated { .. }),
        "end of archive",
    );
    add(
        "truncated inside the manifest",
        full[..1536 + 100].to_vec(),
        |e| matches!(e, BundleError::Truncated { .. }),
        "manifest.json",
    );
    let mut garbage = full.clone();
    garbage.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    add(
        "trailing garbage",
        garbage,
        |e| matches!(e, BundleError::TrailingGarbage { .. }),
        "trailing garbage",
    );
    let mut endless = full.clone();
    endless.extend(std::iter::repeat_n(0u8, 1 << 20));
    add(
        "endless zero padding",
        endless,
        |e| matches!(e, BundleError::TrailingGarbage { .. }),
        "trailing garbage",
    );
    let mut padding = full.clone();
    padding[tool_start + TOOL.len() + 3] = 1;
    add(
        "non-zero padding",
        padding,
        |e| matches!(e, BundleError::BadPadding { .. }),
        "payloads/tool",
    );
    let mut checksum = full.clone();
    checksum[tool_start - 512 + 50] ^= 0x20;
    add(
        "corrupt header checksum",
        checksum,
        |e| matches!(e, BundleError::MalformedHeader { .. }),
        "checksum",
    );
    add(
        "not a tar at all",
        b"PK\x03\x04 this is a zip".repeat(40),
        |e| matches!(e, BundleError::MalformedHeader { .. }),
        "byte 0",
    );
    add(
        "empty file",
        Vec::new(),
        |e| matches!(e, BundleError::Truncated { .. }),
        "end of archive",
    );

    // ---- format marker ----
    add(
        "wrong format marker",
        replace_part(&d, 0, Part::file("outpost-bundle", b"hello\n")),
        |e| matches!(e, BundleError::WrongFormat { .. }),
        "outpost-bundle",
    );
    add(
        "other first entry",
        replace_part(&d, 0, Part::file("README", b"hi\n")),
        |e| matches!(e, BundleError::WrongFormat { .. }),
        "README",
    );
    add(
        "future format",
        replace_part(
            &d,
            0,
            Part::file("outpost-bundle", b"outpost-bundle format 2\n"),
        ),
        |e| matches!(e, BundleError::UnsupportedFormat { .. }),
        "\"2\"",
    );
    add(
        "empty archive",
        tar_bytes(&[]),
        |e| matches!(e, BundleError::WrongFormat { .. }),
        "empty archive",
    );

    // ---- limits and manifest ----
    let big =
        with_manifest(|d| d.manifest.targets = (0..5000).map(|i| format!("cluster-{i}")).collect());
    add(
        "manifest over the limit",
        big.to_bytes(),
        |e| matches!(e, BundleError::ManifestTooLarge { .. }),
        "manifest.json",
    );
    let huge = with_manifest(|d| d.manifest.payloads[0].size = 2 << 20);
    add(
        "payload over the limit",
        huge.to_bytes(),
        |e| matches!(e, BundleError::PayloadTooLarge { .. }),
        "tool",
    );
    let many = with_manifest(|d| {
        for i in 0..20 {
            d.manifest.payloads.push(PayloadEntry {
                name: format!("p{i}"),
                kind: PayloadKind::Config,
                size: 0,
                sha256: sha(b""),
            });
        }
    });
    add(
        "too many payloads",
        many.to_bytes(),
        |e| matches!(e, BundleError::TooManyPayloads { .. }),
        "22",
    );
    let total = with_manifest(|d| {
        for i in 0..5 {
            d.manifest.payloads.push(PayloadEntry {
                name: format!("p{i}"),
                kind: PayloadKind::Config,
                size: 1 << 20,
                sha256: sha(b""),
            });
        }
    });
    add(
        "payloads together over the limit",
        total.to_bytes(),
        |e| matches!(e, BundleError::BundleTooLarge { .. }),
        "limit",
    );
    let mut sigs_big = good();
    for _ in 0..200 {
        let extra = sigs_big.sigs.signatures[0].clone();
        sigs_big.sigs.signatures.push(extra);
    }
    add(
        "signature document over the limit",
        sigs_big.to_bytes(),
        |e| matches!(e, BundleError::SignaturesTooLarge { .. }),
        "signatures.json",
    );
    add(
        "manifest not JSON",
        replace_part(&d, 1, Part::file("manifest.json", b"channel = 'site'")),
        |e| matches!(e, BundleError::ManifestParse { .. }),
        "manifest.json",
    );
    let mut g = good();
    g.bytes = String::from_utf8(g.bytes.clone())
        .unwrap()
        .replacen('{', "{\"unsigned_extra\": true,", 1)
        .into_bytes();
    add(
        "unknown manifest field",
        g.to_bytes(),
        |e| matches!(e, BundleError::ManifestParse { .. }),
        "manifest.json",
    );
    add(
        "signatures not JSON",
        replace_part(&d, 2, Part::file("signatures.json", b"[]")),
        |e| matches!(e, BundleError::SignaturesParse { .. }),
        "signatures.json",
    );

    // ---- trust bundles ----
    let mut new_trust = trust();
    new_trust.version = 2;
    new_trust.root = RoleKeys {
        keys: vec![pk(110)],
        threshold: 1,
    };
    let trust_draft = |t: TrustDocument, seeds: &[u8]| {
        let mut d = Draft::new(&[]);
        d.manifest.bundle_type = BundleType::Trust;
        d.manifest.channel = None;
        d.manifest.version = t.version;
        d.manifest.trust = Some(t);
        d.sign(seeds);
        d
    };
    add(
        "trust bundle signed by release keys",
        trust_draft(new_trust.clone(), &[1, 2, 110]).to_bytes(),
        |e| matches!(e, BundleError::UnknownKey { .. }),
        &pk(1).key_id(),
    );
    add(
        "trust bundle without the new root",
        trust_draft(new_trust.clone(), &[100, 101]).to_bytes(),
        |e| {
            matches!(
                e,
                BundleError::ThresholdNotMet {
                    role: "new root",
                    ..
                }
            )
        },
        "new root",
    );
    add(
        "trust bundle with one old root",
        trust_draft(new_trust.clone(), &[100, 110]).to_bytes(),
        |e| {
            matches!(
                e,
                BundleError::ThresholdNotMet {
                    role: "current root",
                    ..
                }
            )
        },
        "current root",
    );
    let mut skip = new_trust.clone();
    skip.version = 3;
    add(
        "trust version skips one",
        trust_draft(skip, &[100, 101, 110]).to_bytes(),
        |e| matches!(e, BundleError::TrustVersion { .. }),
        "version 3",
    );
    cases
}

#[test]
fn every_malformed_bundle_is_refused_and_leaves_the_store_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    // The store already holds a bundle sharing one payload (CONF) with the corpus bundles:
    // a refused import must not remove a blob it did not create.
    let mut earlier = Draft::new(&[("site.conf", CONF), ("old", b"old tool")]);
    earlier.manifest.version = 4;
    earlier.sign(&[1, 2]);
    let mut ctx0 = context();
    ctx0.channel_floors.clear();
    let out = import_bundle(&earlier.to_bytes()[..], None, &store, &ctx0, &mut |_| {}).unwrap();
    assert!(matches!(out, ImportOutcome::Imported(_)));
    let before = snapshot(dir.path());
    assert!(before.len() >= 6, "{before:?}");

    let cases = corpus();
    assert!(cases.len() >= 25, "corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = import_bundle(&case.bytes[..], None, &store, &case.ctx, &mut |_| {});
        match &got {
            Err(e) if (case.check)(e) => {
                let msg = e.to_string();
                if !msg.contains(&case.names) {
                    failures.push(format!(
                        "{}: message {msg:?} lacks {:?}",
                        case.name, case.names
                    ));
                }
            }
            other => failures.push(format!("{}: got {other:?}", case.name)),
        }
        let after = snapshot(dir.path());
        if after != before {
            failures.push(format!("{}: store changed: {after:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("corpus: {} malformed bundles refused", cases.len());
}

#[test]
fn the_unbroken_bundle_of_the_corpus_imports() {
    // Guards the corpus: its base bundle is good, so each refusal comes from its one defect.
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let out = import_bundle(
        &good().to_bytes()[..],
        None,
        &store,
        &context(),
        &mut |_| {},
    )
    .unwrap();
    let ImportOutcome::Imported(b) = out else {
        panic!("{out:?}")
    };
    assert_eq!(b.payloads.len(), 2);
    for p in &b.payloads {
        assert_eq!(
            store.verify(&p.sha256).unwrap(),
            outpost_bundles::BlobStatus::Ok
        );
    }
}
