//! The wire is the contract: response bodies captured from nodes of earlier versions
//! (`tests/fixtures/wire/<version>/`, how in its README) decode with today's `outpost::wire`
//! types and encode again to the very same JSON. A missing, extra or renamed field fails, so a
//! node of this version serves an agent or a CLI of those versions, and reads what they send.
//!
//! A release that adds a field captures a new directory and adds it to `VERSIONS`; the old
//! directories stay (see `src/wire/mod.rs`), and the field goes in `ADDED`: an older capture
//! then encodes back with that one field more, which an older agent ignores, and nothing else
//! may differ.

use std::collections::BTreeMap;
use std::path::PathBuf;

use outpost::wire;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every captured version, oldest first; each holds the files of the routes it served
/// (`check_all` says from which version a route has one).
const VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"];

/// Fields added after a capture: (the first version whose fixtures hold it, fixture, path with
/// array indices as `[]`, e.g. `$.bundles[].payloads[].x`). Encoding a fixture of an older
/// version back may show these, and only these, as extra.
const ADDED: &[(&str, &str, &str)] = &[
    // Rollouts (issue 22): labels, removals after `abort --uninstall`, the rollout's status.
    ("0.2.0", "clients", "$[].labels"),
    ("0.2.0", "client", "$.labels"),
    ("0.2.0", "agent-sync", "$.removals"),
    ("0.2.0", "deployment-status", "$.state"),
    ("0.2.0", "deployment-status", "$.phase"),
    ("0.2.0", "deployment-status", "$.phases"),
    ("0.2.0", "deployment-status", "$.clients"),
    ("0.2.0", "deployment-status", "$.reason"),
    ("0.2.0", "deployment-status", "$.approved_by"),
    ("0.2.0", "deployment-status", "$.windows"),
    ("0.2.0", "deployment-status", "$.window_open"),
    ("0.2.0", "deployment-status", "$.selector"),
    ("0.2.0", "deployment-status", "$.soak_ms"),
    ("0.2.0", "deployment-status", "$.max_failures"),
    ("0.2.0", "deployment-status", "$.allowed_failures"),
    ("0.2.0", "deployment-status", "$.start_at_ms"),
    ("0.2.0", "deployment-status", "$.uninstall"),
    // Year five (issue 24): a node's backups in status; the audit chain's base (retention),
    // the node's verified mark and how much a check read.
    ("0.4.0", "status", "$.backup"),
    ("0.4.0", "audit-verify", "$.local.base"),
    ("0.4.0", "audit-verify", "$.local.verified"),
    ("0.4.0", "audit-verify", "$.local.walked"),
    ("0.4.0", "audit-verify", "$.local.incremental"),
    ("0.4.0", "audit-verify", "$.peers[].chain.base"),
    ("0.4.0", "audit-verify", "$.peers[].chain.verified"),
    ("0.4.0", "audit-verify", "$.peers[].chain.walked"),
    ("0.4.0", "audit-verify", "$.peers[].chain.incremental"),
];

/// Whether `path`, extra in today's encoding of fixture `name` of `version`, is declared in
/// `added` as a field of a later version of `versions`.
fn declared_addition(
    added: &[(&str, &str, &str)],
    versions: &[&str],
    version: &str,
    name: &str,
    path: &str,
) -> bool {
    let rank = |v: &str| versions.iter().position(|x| *x == v);
    let mut generic = String::new();
    let mut in_index = false;
    for ch in path.chars() {
        match ch {
            '[' => {
                in_index = true;
                generic.push('[');
            }
            ']' => {
                in_index = false;
                generic.push(']');
            }
            _ if in_index => {}
            _ => generic.push(ch),
        }
    }
    added.iter().any(|(since, fixture, field)| {
        *fixture == name && *field == generic && rank(since) > rank(version)
    })
}

fn fixture(version: &str, name: &str) -> (PathBuf, Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wire")
        .join(version)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()));
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()));
    (path, value)
}

/// Where two JSON values differ, one line per path: missing, extra or changed. `extra` gets
/// the paths only today's encoding has.
fn differences(
    path: &str,
    captured: &Value,
    ours: &Value,
    out: &mut Vec<String>,
    extra: &mut Vec<String>,
) {
    match (captured, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(bv) => differences(&p, av, bv, out, extra),
                    None => out.push(format!("{p}: missing in today's encoding (was {av})")),
                }
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    out.push(format!("{path}.{k}: extra in today's encoding ({bv})"));
                    extra.push(format!("{path}.{k}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), av, bv, out, extra);
            }
        }
        _ if captured != ours => out.push(format!("{path}: captured {captured}, today {ours}")),
        _ => {}
    }
}

/// Decodes the fixture as `T`, encodes it again, and requires the same JSON.
fn round_trip<T: DeserializeOwned + Serialize>(version: &str, name: &str) {
    let (path, captured) = fixture(version, name);
    let decoded: T = serde_json::from_value(captured.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: does not decode as {}: {e}",
            path.display(),
            std::any::type_name::<T>()
        )
    });
    let ours = serde_json::to_value(&decoded).expect("today's type encodes");
    let (mut diff, mut extra) = (Vec::new(), Vec::new());
    differences("$", &captured, &ours, &mut diff, &mut extra);
    // Fields added after this capture, and declared, are what an older agent ignores.
    let declared: Vec<String> = extra
        .into_iter()
        .filter(|p| declared_addition(ADDED, VERSIONS, version, name, p))
        .collect();
    diff.retain(|line| {
        !declared
            .iter()
            .any(|p| line.starts_with(&format!("{p}: extra")))
    });
    assert!(
        diff.is_empty(),
        "{} as {}: today's JSON differs from the captured one:\n  {}",
        path.display(),
        std::any::type_name::<T>(),
        diff.join("\n  ")
    );
    if declared.is_empty() {
        assert_eq!(captured, ours, "{}: today's JSON differs", path.display());
    }
}

/// Each captured route and the wire type its body decodes as.
fn check_all(version: &str) {
    round_trip::<wire::StatusView>(version, "status");
    round_trip::<Vec<wire::TokenRecord>>(version, "tokens");
    round_trip::<Vec<wire::NodeRecord>>(version, "nodes");
    round_trip::<Vec<wire::ConfigEntry>>(version, "config");
    round_trip::<wire::ConfigEntry>(version, "config-entry");
    round_trip::<BTreeMap<String, String>>(version, "config-effective");
    round_trip::<Vec<wire::AuditRecord>>(version, "audit");
    round_trip::<wire::AuditVerifyView>(version, "audit-verify");
    round_trip::<Vec<wire::InventoryMatch>>(version, "inventory-query");
    round_trip::<wire::InventoryView>(version, "inventory-show");
    round_trip::<Vec<wire::ClientRecord>>(version, "clients");
    round_trip::<wire::ClientRecord>(version, "client");
    round_trip::<wire::BundleList>(version, "bundles");
    round_trip::<wire::BundleContext>(version, "bundles-context");
    round_trip::<Vec<wire::DeploymentRecord>>(version, "deployments");
    round_trip::<wire::DeploymentStatusView>(version, "deployment-status");
    round_trip::<wire::UpgradeView>(version, "upgrade");
    round_trip::<wire::AgentSync>(version, "agent-sync");
    round_trip::<BTreeMap<String, String>>(version, "agent-config");
    round_trip::<Option<wire::AgentTrust>>(version, "agent-trust");
    round_trip::<Vec<wire::Assignment>>(version, "agent-assignments");
    round_trip::<wire::EnrollResponse>(version, "enroll");
    // Routes a version added: captured from that version on.
    let rank = |v: &str| VERSIONS.iter().position(|x| *x == v);
    if rank(version) >= rank("0.3.0") {
        round_trip::<wire::DoctorReport>(version, "doctor");
    }
    if rank(version) >= rank("0.4.0") {
        round_trip::<Option<wire::AuditCheckpoint>>(version, "audit-checkpoint");
    }
    if rank(version) >= rank("0.5.0") {
        round_trip::<Vec<wire::RoleView>>(version, "roles");
        round_trip::<wire::RoleView>(version, "role");
    }
}

#[test]
fn captured_responses_of_every_version_decode_and_encode_the_same() {
    for version in VERSIONS {
        check_all(version);
    }
}

/// Every fixture file is checked: a capture that adds a route must add it to `check_all`.
#[test]
fn every_fixture_file_is_checked() {
    let checked = include_str!("wire_compat.rs");
    for version in VERSIONS {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/wire")
            .join(version);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let mut seen = 0;
        for entry in entries {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_string_lossy();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            seen += 1;
            assert!(
                checked.contains(&format!("(version, \"{stem}\")")),
                "{}/{name} is not round-tripped by check_all",
                dir.display()
            );
        }
        assert!(seen >= 20, "{}: only {seen} fixtures", dir.display());
    }
}

/// The differences are what the failure message shows: a renamed field reads as one missing
/// and one extra, a changed value as changed.
#[test]
fn a_renamed_or_changed_field_is_reported() {
    let captured = serde_json::json!({"a": 1, "b": {"c": [1, 2]}});
    let ours = serde_json::json!({"a2": 1, "b": {"c": [1, 3]}});
    let (mut diff, mut extra) = (Vec::new(), Vec::new());
    differences("$", &captured, &ours, &mut diff, &mut extra);
    assert_eq!(extra, ["$.a2"]);
    // Declared for a later version: accepted for older captures only, indices generic.
    let added = [("0.2.0", "bundles", "$.bundles[].payloads[].x")];
    let versions = ["0.1.0", "0.2.0"];
    let path = "$.bundles[3].payloads[12].x";
    assert!(declared_addition(
        &added, &versions, "0.1.0", "bundles", path
    ));
    assert!(!declared_addition(
        &added, &versions, "0.2.0", "bundles", path
    ));
    assert!(!declared_addition(
        &added, &versions, "0.1.0", "status", path
    ));
    assert!(!declared_addition(
        &added, &versions, "0.1.0", "bundles", "$.x"
    ));
    assert!(!declared_addition(
        &added,
        &["0.1.0"],
        "0.1.0",
        "bundles",
        path
    ));
    assert_eq!(
        diff,
        [
            "$.a: missing in today's encoding (was 1)",
            "$.b.c[1]: captured 2, today 3",
            "$.a2: extra in today's encoding (1)",
        ]
    );
}

/// This machine's facts, as the agent gathers them, pass the node's own report check (moved
/// here from `agent/inventory.rs`, which may not see the storage crate).
#[test]
fn this_machines_facts_pass_the_nodes_report_check() {
    let facts = outpost::agent::inventory::gather();
    let json = serde_json::to_string(&facts).expect("facts encode");
    assert!(outpost_storage::check_report_size(&facts, json.len()).is_ok());
}
