//! The house rules a reader relies on, checked on the tree itself:
//!
//! - every source file under a crate's `src/` is named in ARCHITECTURE.md
//!   (its path below `src/`), so the map cannot drift from the tree;
//! - no source file is over 600 lines (unit tests kept in a `tests.rs` beside
//!   their module excepted): a longer one holds more than one idea;
//! - no two files import each other through `crate::` paths (in code, not
//!   in doc links): an import circle means a shared piece lives in the wrong
//!   place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

/// Most lines a source file may have.
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The workspace members' folders, from the root manifest.
fn members(root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .context("no members line in Cargo.toml")?;
    let list = line
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .context("members is not a one-line list")?
        .0;
    Ok(list
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| root.join(m))
        .collect())
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Each crate's `src/` folder with its files' paths below it.
fn sources(root: &Path) -> Result<Vec<(PathBuf, Vec<String>)>> {
    let mut all = Vec::new();
    for member in members(root)? {
        let src = member.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files)?;
        let rel = files
            .iter()
            .map(|f| {
                f.strip_prefix(&src)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .context("file outside src")
            })
            .collect::<Result<Vec<_>>>()?;
        all.push((src, rel));
    }
    Ok(all)
}

fn is_unit_tests(rel: &str) -> bool {
    rel == "tests.rs" || rel.ends_with("/tests.rs")
}

/// Whether the map names `rel` (a path below `src/`): spelled out, or as
/// the map lists a folder's files, its file name beside its folder's
/// (`dataset/` … `census.rs`). A top-level file by its name.
fn named(map: &str, rel: &str) -> bool {
    if map.contains(rel) {
        return true;
    }
    let mut parts = rel.rsplitn(3, '/');
    let file = parts.next().unwrap_or(rel);
    match parts.next() {
        Some(folder) => map.contains(&format!("{folder}/")) && map.contains(file),
        None => map.contains(file),
    }
}

#[test]
fn every_source_file_is_on_the_map() -> Result<()> {
    let root = root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md"))?;
    let mut missing = Vec::new();
    for (src, files) in sources(&root)? {
        for rel in files {
            // Unit tests beside their module are named by it.
            if is_unit_tests(&rel) {
                continue;
            }
            if !named(&map, &rel) {
                missing.push(src.join(&rel).display().to_string());
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these source files (add each where it belongs):\n{}",
        missing.join("\n")
    );
    Ok(())
}

#[test]
fn no_source_file_is_over_the_limit() -> Result<()> {
    let root = root();
    let mut long = Vec::new();
    for (src, files) in sources(&root)? {
        for rel in files.iter().filter(|r| !is_unit_tests(r)) {
            let lines = std::fs::read_to_string(src.join(rel))?.lines().count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", src.join(rel).display()));
            }
        }
    }
    ensure!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them along their ideas):\n{}",
        long.join("\n")
    );
    Ok(())
}

/// The file a `crate::a::b::…` path lands in: the longest prefix that is a
/// module file (`a/b.rs` or `a/b/mod.rs`).
fn module_file(files: &BTreeSet<&str>, segments: &[&str]) -> Option<String> {
    for n in (1..=segments.len()).rev() {
        let stem = segments[..n].join("/");
        for candidate in [format!("{stem}.rs"), format!("{stem}/mod.rs")] {
            if files.contains(candidate.as_str()) {
                return Some(candidate);
            }
        }
    }
    None
}

/// `crate::` paths in `text`, as their segments (identifiers only; the
/// first non-identifier ends a path).
fn crate_paths(text: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // Skip `taskcast_crate::` and the like.
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let segments: Vec<&str> = rest
            .split("::")
            .map_while(|s| {
                let end = s
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                (end > 0).then(|| &s[..end]).filter(|_| end == s.len())
            })
            .collect();
        // The last segment may end the path (`crate::a::B;`): take it too.
        let last = rest.split("::").nth(segments.len()).and_then(|s| {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            (end > 0).then(|| &s[..end])
        });
        let mut all = segments;
        all.extend(last);
        if !all.is_empty() {
            out.push(all);
        }
    }
    out
}

#[test]
fn no_two_files_import_each_other() -> Result<()> {
    let root = root();
    let mut circles = Vec::new();
    for (src, files) in sources(&root)? {
        let set: BTreeSet<&str> = files.iter().map(String::as_str).collect();
        let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for rel in &files {
            let text = std::fs::read_to_string(src.join(rel))?;
            // Doc links name modules without importing them.
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for path in crate_paths(&code) {
                if let Some(target) = module_file(&set, &path)
                    && target != *rel
                {
                    edges.entry(rel.as_str()).or_default().insert(target);
                }
            }
        }
        for (a, targets) in &edges {
            for b in targets {
                if a < &b.as_str() && edges.get(b.as_str()).is_some_and(|t| t.contains(*a)) {
                    circles.push(format!(
                        "{} <-> {}",
                        src.join(a).display(),
                        src.join(b).display()
                    ));
                }
            }
        }
    }
    ensure!(
        circles.is_empty(),
        "files that import each other (move the shared piece where both can use it):\n{}",
        circles.join("\n")
    );
    Ok(())
}

/// The map check must be able to fail: a file of a folder the map does not
/// list is missing, one it lists is not.
#[test]
fn an_unnamed_file_would_be_found() {
    let map = "`dataset/` — `census.rs` counts; `lib.rs`";
    assert!(named(map, "dataset/census.rs"));
    assert!(named(map, "lib.rs"));
    assert!(!named(map, "dataset/view.rs"));
    assert!(!named(map, "judge/census.rs"));
}

/// The circle check must be able to fail.
#[test]
fn a_circle_would_be_found() {
    let files: BTreeSet<&str> = ["predict.rs", "wire/mod.rs", "wire/decode.rs"].into();
    let paths = crate_paths("use crate::wire::decode::{A, B};\nuse crate::predict::Scored;");
    let targets: Vec<_> = paths
        .iter()
        .filter_map(|p| module_file(&files, p))
        .collect();
    assert_eq!(targets, ["wire/decode.rs", "predict.rs"]);
    assert!(crate_paths("taskcast_crate::x").is_empty());
}
