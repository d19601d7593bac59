//! The module layers of docs/architecture.md hold: a module refers (`crate::name`) only to
//! modules of its own layer or below, outside its test code. A new top-level module must
//! be given a layer here.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each top-level module of `src/`, lowest first.
const LAYERS: &[(&str, u8)] = &[
    ("sys", 0),
    ("time", 0),
    ("metrics", 0),
    ("ratelimit", 0),
    ("fec", 0),
    ("config", 1),
    ("keys", 2),
    ("crypto", 2),
    ("auth", 2),
    ("ice", 3),
    ("discovery", 4),
    ("state", 4),
    ("cluster", 4),
    ("http", 5),
    ("signal", 5),
    ("daemon", 6),
    ("client", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots and bins.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Code outside `#[cfg(test)]` modules and comments: everything before the first test
/// module (the project keeps them last, or in sibling `tests.rs` files, skipped here),
/// less comment lines, whose links to other modules import nothing.
fn non_test_code(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module names referred to as `crate::name` or `crate::{name, …}`.
fn referenced_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn modules_import_only_from_their_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeMap::new();
    let mut unknown = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(own) = layer(&module) else {
            unknown.push(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in referenced_modules(&non_test_code(&text)) {
            match layer(&target) {
                Some(l) if l > own => {
                    violations
                        .entry(format!("{} ({module}, layer {own})", file.display()))
                        .or_insert_with(Vec::new)
                        .push(format!("{target} (layer {l})"));
                }
                _ => {}
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(unknown.is_empty(), "modules without a layer: {unknown:?}");
    assert!(
        violations.is_empty(),
        "imports from a layer above: {violations:#?}"
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let code = "//! See [`crate::daemon`].\nuse crate::state::AppState;\nuse crate::{config, http::X};\n#[cfg(test)]\nuse crate::daemon;";
    let refs = referenced_modules(&non_test_code(code));
    assert_eq!(refs, ["state", "config", "http"]);
    assert!(layer("state") > layer("keys"));
}
