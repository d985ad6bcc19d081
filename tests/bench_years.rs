//! `outpost bench years` through the real binary, small: 20 clients, 3 simulated years of
//! 20 real seconds each. The table must have a row a year with plausible figures: every
//! write of the drive accepted, sizes and audit records counted, scheduled backups kept,
//! and retention (400 simulated days = 22 s here) compacted audit records by year 3 (the
//! leader's retention pass looks for a new policy at most a minute after it is set: year
//! 2 ends about that long after the policy, year 3 well after).

mod support;

use support::{exe, output, serial};

#[test]
fn three_small_years_give_three_plausible_rows() {
    let _serial = serial();
    let out = output(
        std::process::Command::new(exe())
            .args(["bench", "years", "--clients", "20", "--years", "3"])
            .args(["--year-secs", "20", "--json"])
            .env("RUST_LOG", "warn"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench years failed: {stderr}\n{stdout}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["year_secs"], 20.0);
    assert_eq!(report["backup_every_s"], 10, "6 h scaled is raised to 10 s");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{report}");
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{v} in {report}"));
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("{v} in {report}"));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(n(&r["year"]), i as u64 + 1);
        let d = &r["drive"];
        assert_eq!(n(&d["inventory"]["ok"]), 20 * 24, "{r}");
        assert_eq!(n(&d["results"]["ok"]), 20 * 12, "{r}");
        assert_eq!(n(&d["config"]["ok"]), 365, "{r}");
        assert_eq!(n(&d["rollouts"]["ok"]), 12, "{r}");
        for kind in ["inventory", "results", "config", "rollouts", "syncs"] {
            assert_eq!(n(&d[kind]["failed"]), 0, "{kind} in {r}");
        }
        assert!(n(&d["syncs"]["ok"]) > 0, "{r}");
        assert!(f(&d["seconds"]) >= 20.0, "{r}");
        assert!(n(&r["state_db_bytes"]) > 0, "{r}");
        assert!(n(&r["raft_db_bytes"]) > 0, "{r}");
        let (head, live) = (n(&r["audit_head"]), n(&r["audit_live"]));
        assert!(live > 0 && live <= head, "{r}");
        assert!(n(&r["backup_bytes"]) > 0, "{r}");
        let kept = n(&r["scheduled_files"]);
        assert!((1..=14).contains(&kept), "{r}");
        assert!(n(&r["scheduled_newest_bytes"]) > 0, "{r}");
        for t in ["verify_s", "page_s", "backup_s", "catch_up_s", "restart_s"] {
            assert!(f(&r[t]) > 0.0, "{t} in {r}");
        }
    }
    // Each year wrote more audit records, and retention moved the oldest out by year 3.
    assert!(n(&rows[1]["audit_head"]) > n(&rows[0]["audit_head"]));
    assert!(n(&rows[2]["audit_head"]) > n(&rows[1]["audit_head"]));
    assert!(
        n(&rows[2]["audit_live"]) < n(&rows[2]["audit_head"]),
        "nothing compacted by year 3: {}",
        rows[2]
    );
}
