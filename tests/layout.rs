//! The shape of `src/`: which room (top-level module) may use which, so that the rooms form
//! no circle, and no source file grows past 800 lines of code before its tests. Reads the
//! source text only; no process is started.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room of `src/` and the rooms it may use (`crate::<room>`). Lower rooms first.
const RULES: &[(&str, &[&str])] = &[
    ("wire", &[]),
    ("shared", &[]),
    ("blobs", &["shared"]),
    ("api", &["wire", "shared", "blobs"]),
    ("console", &["api", "blobs", "wire", "shared"]),
    ("node", &["console", "api", "blobs", "wire", "shared"]),
    ("agent", &["wire", "shared"]),
    ("harness", &["wire", "shared"]),
    ("cli", &["node", "agent", "harness", "wire", "shared"]),
];

const MAX_CODE_LINES: usize = 800;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("reading src/") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The room a file belongs to: its folder under `src/`, or its own name.
fn room(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The rooms a file names as `crate::<room>` in code (comments may name any room).
fn uses(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = code.as_str();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `outpost_crate::`
        }
        let name: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

#[test]
fn rooms_use_only_rooms_below_them_and_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for f in &files {
        let Some(from) = room(&src, f) else { continue };
        let allowed = rules
            .get(from.as_str())
            .unwrap_or_else(|| panic!("{}: room {from} has no rule in RULES", f.display()));
        let text = std::fs::read_to_string(f).expect("reading a source file");
        for to in uses(&text) {
            if to == from {
                continue;
            }
            if !allowed.contains(&to.as_str()) {
                wrong.push(format!("{} uses crate::{to}", f.display()));
            }
            graph.entry(from.clone()).or_default().insert(to);
        }
    }
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
    assert!(graph.len() >= 6, "too few rooms found: {graph:?}");
}

#[test]
fn no_file_has_more_than_800_lines_of_code_before_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("reading a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let n = code.lines().count();
        if n > MAX_CODE_LINES {
            long.push(format!("{}: {n} lines", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_CODE_LINES} lines:\n{}",
        long.join("\n")
    );
}
