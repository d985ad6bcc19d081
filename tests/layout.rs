//! The shape of the workspace, read from the source text only (no process is started):
//!
//! - which room (top-level module) of `src/` may use which other room (`crate::<room>`) and
//!   which workspace crate (`outpost_<crate>`), so that the rooms form no circle and the client
//!   side (agent, wire) never decodes storage rows or Raft types;
//! - no import circle among the files of any crate of the workspace;
//! - no source file of any crate has more than 800 lines of code before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room of `src/` and the rooms it may use (`crate::<room>`). Lower rooms first.
const RULES: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("shared", &[]),
    ("peer_app", &["shared"]),
    ("blobs", &["peer_app", "shared"]),
    ("health", &["wire", "shared"]),
    (
        "metrics",
        &["peer_app", "blobs", "health", "wire", "shared"],
    ),
    (
        "api",
        &["metrics", "health", "peer_app", "blobs", "wire", "shared"],
    ),
    (
        "console",
        &[
            "api", "metrics", "health", "peer_app", "blobs", "wire", "shared",
        ],
    ),
    (
        "node",
        &[
            "console", "api", "metrics", "health", "peer_app", "blobs", "wire", "shared",
        ],
    ),
    ("agent", &["wire", "shared"]),
    ("harness", &["wire", "shared"]),
    (
        "cli",
        &["node", "agent", "harness", "health", "wire", "shared"],
    ),
];

/// The workspace crates each room of `src/` may name (`outpost_<crate>`). The client side
/// (`agent`, `wire`) sees only what a client machine has: certificates, bundles and discovery.
/// `shared` holds the node's data directory too, whose file keeps the Raft tuning.
const CRATES: &[(&str, &[&str])] = &[
    ("wire", &["bundles"]),
    ("shared", &["certs", "discovery", "raft"]),
    ("peer_app", &["bundles", "raft"]),
    ("blobs", &["bundles", "raft", "storage"]),
    ("health", &[]),
    ("metrics", &["bundles", "certs", "raft", "storage"]),
    ("api", &["bundles", "certs", "raft", "storage"]),
    ("console", &["certs", "raft", "storage"]),
    (
        "node",
        &["bundles", "certs", "discovery", "raft", "storage"],
    ),
    ("agent", &["bundles", "certs", "discovery"]),
    ("harness", &["bundles", "certs", "raft", "storage"]),
    ("cli", &["bundles", "certs", "discovery", "raft", "storage"]),
];

/// The workspace's library crates, as their names follow `outpost_`.
const WORKSPACE_CRATES: &[&str] = &["storage", "raft", "certs", "discovery", "bundles"];

/// The source folders of the workspace's crates (relative to the workspace root).
const CRATE_SOURCES: &[&str] = &[
    "src",
    "storage/src",
    "raft/src",
    "certs/src",
    "discovery/src",
    "offline-bundles/src",
];

const MAX_CODE_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
}

/// A file that holds only tests: `tests.rs` (a `#[cfg(test)] mod tests;`) or under `tests/`.
fn is_test_file(src: &Path, file: &Path) -> bool {
    let rel = file.strip_prefix(src).unwrap_or(file);
    file.file_stem().is_some_and(|s| s == "tests")
        || rel
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "tests"))
}

/// The text of a file up to its `#[cfg(test)]`, without comment lines: what the rules read.
fn code_before_tests(text: &str) -> String {
    text.split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Lines of code: neither blank nor a comment, before the file's tests.
fn code_lines(text: &str) -> usize {
    code_before_tests(text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The room a file of `src/` belongs to: its folder under `src/`, or its own name.
fn room(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every path a piece of code names after `prefix` (e.g. `crate::`), with `use` groups
/// expanded: `crate::{a::b, c}` gives `a::b` and `c`. Paths are split into their segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `outpost_crate::`
        }
        expand(&code[i + prefix.len()..], Vec::new(), &mut out);
    }
    out
}

/// Reads one path (or a `{...}` group of them) at the start of `rest`, below `head`.
fn expand(rest: &str, head: Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut start = 0usize;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[start..i], head.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[start..i], head.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let name = ident(rest);
    if name.is_empty() || name == "self" {
        if !head.is_empty() {
            out.push(head);
        }
        return;
    }
    let mut path = head;
    path.push(name.clone());
    match rest[name.len()..].strip_prefix("::") {
        Some(more) => expand(more, path, out),
        None => out.push(path),
    }
}

/// The workspace crates a piece of code names (`outpost_storage` gives `storage`).
fn crates_named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("outpost_") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name = ident(&code[i + "outpost_".len()..]);
        let rest = &code[i + "outpost_".len() + name.len()..];
        if WORKSPACE_CRATES.contains(&name.as_str()) && rest.starts_with("::") {
            out.insert(name);
        }
    }
    out
}

/// The rooms each file of `src/` reaches across the rules: `crate::<room>` outside its list,
/// or a workspace crate outside its list. Empty when the tree keeps the rules.
fn room_rule_breaks(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let crates: BTreeMap<&str, &[&str]> = CRATES.iter().copied().collect();
    let mut wrong = Vec::new();
    for f in &files {
        let Some(from) = room(src, f) else { continue };
        let allowed = rules
            .get(from.as_str())
            .unwrap_or_else(|| panic!("{}: room {from} has no rule in RULES", f.display()));
        let allowed_crates = crates
            .get(from.as_str())
            .unwrap_or_else(|| panic!("{}: room {from} has no rule in CRATES", f.display()));
        let text = std::fs::read_to_string(f).expect("reading a source file");
        // Tests of a room follow the same rules: a room's tests may not decode storage rows
        // the room itself may not see.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let used: BTreeSet<String> = paths_after(&code, "crate::")
            .into_iter()
            .filter_map(|p| p.into_iter().next())
            .collect();
        for to in used {
            if to != from && !allowed.contains(&to.as_str()) {
                wrong.push(format!("{} uses crate::{to}", f.display()));
            }
        }
        for c in crates_named(&code) {
            if !allowed_crates.contains(&c.as_str()) {
                wrong.push(format!(
                    "{} uses outpost_{c} (room {from} may use: {})",
                    f.display(),
                    allowed_crates.join(", ")
                ));
            }
        }
    }
    wrong
}

#[test]
fn rooms_use_only_rooms_and_crates_below_them_and_form_no_circle() {
    let wrong = room_rule_breaks(&root().join("src"));
    assert!(
        wrong.is_empty(),
        "uses across the rules:\n{}",
        wrong.join("\n")
    );
    // The rules themselves must form no circle (each room only uses rooms listed before it).
    for (i, (room, below)) in RULES.iter().enumerate() {
        for b in *below {
            let at = RULES.iter().position(|(r, _)| r == b);
            assert!(
                at.is_some_and(|at| at < i),
                "{room} may use {b}, which is not below it"
            );
        }
    }
    let rooms: Vec<&str> = RULES.iter().map(|(r, _)| *r).collect();
    let with_crates: Vec<&str> = CRATES.iter().map(|(r, _)| *r).collect();
    assert_eq!(rooms, with_crates, "RULES and CRATES list the same rooms");
}

/// The rule of the client side holds and can fail: a scratch copy of `src/` whose agent
/// names a storage record is refused, with the file named.
#[test]
fn the_rule_refuses_an_agent_that_decodes_a_storage_row() {
    let scratch = tempfile::tempdir().expect("a scratch dir");
    let src = scratch.path().join("src");
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    for f in &files {
        let rel = f.strip_prefix(root().join("src")).expect("under src");
        let to = src.join(rel);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(f, &to).expect("copying a source file");
    }
    assert!(
        room_rule_breaks(&src).is_empty(),
        "the copy keeps the rules"
    );
    let agent = src.join("agent/deployments.rs");
    let text = std::fs::read_to_string(&agent).expect("reading agent/deployments.rs");
    std::fs::write(
        &agent,
        format!("use outpost_storage::ClientRecord;\n{text}"),
    )
    .expect("writing the scratch change");
    let wrong = room_rule_breaks(&src);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].contains("agent/deployments.rs uses outpost_storage"),
        "{wrong:?}"
    );
}

/// The file a `crate::` path names: the deepest module of the path that is a file.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    let lib = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.is_file());
    let mut best = lib;
    let mut dir = src.to_path_buf();
    for seg in path {
        let file = dir.join(format!("{seg}.rs"));
        let folder = dir.join(seg).join("mod.rs");
        if file.is_file() {
            best = Some(file);
        } else if folder.is_file() {
            best = Some(folder);
        } else {
            break;
        }
        dir = dir.join(seg);
    }
    best
}

/// The import circles among the files of one crate: groups of files that reach one another
/// through `crate::` paths (each group sorted, one per circle). A module's `mod.rs` may use
/// its own parts and they may name it back (as with `super::`); siblings may not go round.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("reading a source file");
        let code = code_before_tests(&text);
        for p in paths_after(&code, "crate::") {
            // A file naming its own module's root (`mod.rs` of a folder it is in) is a part
            // naming its whole, like `super::`; only files beside or below are edges.
            if let Some(to) = file_of(src, &p)
                && &to != f
                && !to.ends_with("lib.rs")
                && !to.ends_with("main.rs")
                && !(to.ends_with("mod.rs") && to.parent().is_some_and(|d| f.starts_with(d)))
            {
                edges.entry(f.clone()).or_default().insert(to);
            }
        }
    }
    // Two files are in one circle when each reaches the other.
    let reach = |from: &PathBuf| -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<PathBuf> = edges.get(from).into_iter().flatten().cloned().collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(edges.get(&n).into_iter().flatten().cloned());
            }
        }
        seen
    };
    let reaches: BTreeMap<PathBuf, BTreeSet<PathBuf>> =
        files.iter().map(|f| (f.clone(), reach(f))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (f, r) in &reaches {
        let group: Vec<String> = r
            .iter()
            .filter(|g| reaches.get(*g).is_some_and(|back| back.contains(f)))
            .chain(r.contains(f).then_some(f))
            .map(|g| g.strip_prefix(src).unwrap_or(g).display().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if group.len() > 1 {
            groups.insert(group);
        }
    }
    groups.into_iter().collect()
}

#[test]
fn no_crate_has_an_import_circle_among_its_files() {
    let mut found = Vec::new();
    for c in CRATE_SOURCES {
        for group in circles(&root().join(c)) {
            found.push(format!("{c}: {}", group.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "files that reach one another through crate:: paths:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_finds_a_circle_and_follows_use_groups() {
    let scratch = tempfile::tempdir().expect("a scratch dir");
    let src = scratch.path();
    std::fs::create_dir_all(src.join("room")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod room;\n").expect("lib");
    std::fs::write(src.join("a.rs"), "use crate::{room::b::{X, Y}};\n").expect("a");
    std::fs::write(src.join("room/mod.rs"), "pub mod b;\n").expect("mod");
    std::fs::write(
        src.join("room/b.rs"),
        "pub struct X; pub struct Y(crate::a::Z);\n",
    )
    .expect("b");
    assert_eq!(
        circles(src),
        vec![vec!["a.rs".to_string(), "room/b.rs".to_string()]]
    );
    std::fs::write(src.join("room/b.rs"), "pub struct X; pub struct Y;\n").expect("b");
    assert!(circles(src).is_empty());
}

#[test]
fn no_file_of_any_crate_has_more_than_800_lines_of_code_before_its_tests() {
    let mut long = Vec::new();
    for c in CRATE_SOURCES {
        let src = root().join(c);
        let mut files = Vec::new();
        sources(&src, &mut files);
        for f in files.iter().filter(|f| !is_test_file(&src, f)) {
            let text = std::fs::read_to_string(f).expect("reading a source file");
            let n = code_lines(&text);
            if n > MAX_CODE_LINES {
                long.push(format!("{}: {n} lines of code", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_CODE_LINES} lines of code (comments, blank lines and tests aside):\n{}",
        long.join("\n")
    );
}

#[test]
fn code_lines_leave_out_comments_blanks_and_tests() {
    let text = "//! doc\nfn a() {}\n\n    // note\nfn b() {}\n#[cfg(test)]\nmod tests {}\n";
    assert_eq!(code_lines(text), 2);
}
