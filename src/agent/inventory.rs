//! Inventory: what an agent reports about its machine, gathered from the OS itself
//! (/etc/os-release, /proc, /sys, dpkg-query/rpm/opkg where present). Parsers are pure
//! functions over text, table-tested; `gather` is the thin layer that reads the files and runs
//! the package tools. The queries operators run over the facts match with
//! `outpost_storage::rollout::fact_matches`, on the node.

use serde_json::{Map, Value, json};

/// Facts of this machine. Stable between syncs unless something changed (boot time instead
/// of uptime), so the agent uploads only when the hash moves.
pub fn gather() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (cpu_model, cpu_count) = parse_cpuinfo(&read("/proc/cpuinfo"));
    let mut facts = Map::new();
    facts.insert(
        "os".into(),
        Value::Object(parse_os_release(&read("/etc/os-release"))),
    );
    facts.insert(
        "kernel".into(),
        json!(read("/proc/sys/kernel/osrelease").trim()),
    );
    facts.insert("hostname".into(), json!(crate::agent::system_hostname()));
    facts.insert(
        "cpu".into(),
        json!({ "model": cpu_model, "count": cpu_count }),
    );
    facts.insert(
        "memory_bytes".into(),
        json!(parse_meminfo_total(&read("/proc/meminfo"))),
    );
    facts.insert("boot_time".into(), json!(parse_btime(&read("/proc/stat"))));
    facts.insert("disks".into(), Value::Array(disks()));
    facts.insert("network".into(), Value::Array(interfaces()));
    facts.insert("packages".into(), Value::Array(packages()));
    Value::Object(facts)
}

/// `KEY=value` lines, quotes removed, keys lowercased (`ID=debian` -> `id: debian`).
pub fn parse_os_release(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            out.insert(k.trim().to_ascii_lowercase(), json!(v));
        }
    }
    out
}

/// (model name, logical CPU count).
pub fn parse_cpuinfo(text: &str) -> (String, usize) {
    let mut model = String::new();
    let mut count = 0;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "processor" => count += 1,
                "model name" if model.is_empty() => model = v.trim().to_string(),
                _ => {}
            }
        }
    }
    (model, count)
}

/// MemTotal in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Boot time (Unix seconds) from /proc/stat's `btime`.
pub fn parse_btime(text: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
}

/// `name\tversion` lines (dpkg-query, rpm and opkg output normalised to that).
pub fn parse_packages(text: &str) -> Vec<Value> {
    let mut out: Vec<Value> = text
        .lines()
        .filter_map(|l| {
            let (name, version) = l.split_once('\t')?;
            let name = name.trim();
            (!name.is_empty()).then(|| json!({ "name": name, "version": version.trim() }))
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

fn disks() -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram") {
            continue;
        }
        let sectors: u64 = std::fs::read_to_string(e.path().join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.push(json!({ "name": name, "bytes": sectors * 512 }));
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

fn interfaces() -> Vec<Value> {
    let addrs = if_addrs::get_if_addrs().unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mac = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
                .unwrap_or_default();
            let mut ips: Vec<String> = addrs
                .iter()
                .filter(|a| a.name == name)
                .map(|a| a.ip().to_string())
                .collect();
            ips.sort();
            json!({ "name": name, "mac": mac.trim(), "addresses": ips })
        })
        .collect()
}

fn packages() -> Vec<Value> {
    let tools: [(&str, &[&str]); 3] = [
        ("dpkg-query", &["-W", "-f", "${Package}\t${Version}\n"]),
        ("rpm", &["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]),
        ("opkg", &["list-installed"]),
    ];
    for (tool, args) in tools {
        let Ok(out) = std::process::Command::new(tool).args(args).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // opkg prints "name - version".
        let text = if tool == "opkg" {
            text.replace(" - ", "\t")
        } else {
            text.to_string()
        };
        return parse_packages(&text);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's facts, as the agent gathers them, fit the API's report caps with
    /// room to spare (the figures behind `REPORT_MAX_FACTS_BYTES` and `REPORT_MAX_FACTS`;
    /// `api::convert` holds wire's caps equal to storage's, and `tests/wire_compat.rs` runs
    /// storage's own check on these facts).
    #[test]
    fn this_machines_facts_fit_the_report_caps_with_room() {
        let facts = gather();
        let json = serde_json::to_string(&facts).unwrap();
        let mut values = 0usize;
        let mut stack = vec![&facts];
        while let Some(v) = stack.pop() {
            values += 1;
            match v {
                Value::Array(a) => stack.extend(a.iter()),
                Value::Object(o) => stack.extend(o.values()),
                _ => {}
            }
        }
        let packages = facts["packages"].as_array().map_or(0, Vec::len);
        eprintln!(
            "this machine: {} bytes of facts, {values} JSON values, {packages} packages",
            json.len()
        );
        assert!(json.len() * 2 <= crate::wire::REPORT_MAX_FACTS_BYTES);
        assert!(values * 4 <= crate::wire::REPORT_MAX_FACTS);
    }

    #[test]
    fn parsers() {
        let os = parse_os_release("# c\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian 12'\n");
        assert_eq!(os["id"], "debian");
        assert_eq!(os["version_id"], "12");
        assert_eq!(os["pretty_name"], "Debian 12");
        assert_eq!(
            parse_cpuinfo("processor : 0\nmodel name : X\nprocessor : 1\nmodel name : X\n"),
            ("X".into(), 2)
        );
        assert_eq!(
            parse_meminfo_total("MemTotal:  1024 kB\nMemFree: 1 kB\n"),
            Some(1024 * 1024)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let p = parse_packages("zlib\t1.2\nopenssl\t3.0\n\t\nbad line\n");
        assert_eq!(
            p,
            vec![
                json!({"name": "openssl", "version": "3.0"}),
                json!({"name": "zlib", "version": "1.2"})
            ]
        );
    }
}
