//! The rooms of `src/` depend downwards only. Each top-level module has a layer; a module may
//! name (`crate::room`) only rooms in lower layers, so there is no cycle and no arrow from a
//! lower room to a higher one. The order is the one `docs/architecture.md` describes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. Rooms on one line share a layer and must not name each other.
const LAYERS: &[&[&str]] = &[
    &["domain", "clock", "transport", "telemetry"],
    &["crypto"],
    &["config"],
    &["oauth", "atlassian", "store", "invite"],
    &["app"],
    &["alerts"],
    &["lifecycle"],
    &["pacing"],
    &["delivery"],
    &["jobs"],
    &["onboarding", "report"],
    &["http"],
    &["daemon"],
    &["sandbox"],
    &["demo"],
    &["cli"],
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The rooms a line of code names through `crate::`, including grouped imports
/// (`use crate::{a::B, c}`).
fn rooms_named(line: &str) -> Vec<String> {
    let mut rooms = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Split the group at its top-level commas; each item starts with a room's name.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(String::new()),
                    _ => {}
                }
                if let Some(item) = items.last_mut() {
                    item.push(c);
                }
            }
            for item in items {
                let ident: String = item
                    .trim_start_matches(',')
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() && ident != "self" {
                    rooms.push(ident);
                }
            }
        } else {
            let ident: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                rooms.push(ident);
            }
        }
        rest = after;
    }
    rooms
}

#[test]
fn rooms_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let first = relative.components().next().expect("a path component");
        let room = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if room == "lib" || room == "main" {
            continue;
        }
        let Some(own_layer) = layer_of(&room) else {
            violations.insert(format!("src/{room} has no layer in LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source is readable");
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for named in rooms_named(line) {
                if named == room {
                    continue;
                }
                match layer_of(&named) {
                    Some(layer) if layer < own_layer => {}
                    Some(_) => {
                        violations.insert(format!(
                            "{}:{}: {room} names {named}, which is not below it",
                            relative.display(),
                            number + 1
                        ));
                    }
                    None => {
                        violations.insert(format!(
                            "{}:{}: {room} names crate::{named}, which has no layer",
                            relative.display(),
                            number + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "arrows that point up or sideways:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn grouped_imports_are_read() {
    assert_eq!(
        rooms_named("use crate::{store::grants::{self, Grant}, alerts, clock::Clock};"),
        ["store", "alerts", "clock"]
    );
    assert_eq!(rooms_named("let x = crate::store::ping(y);"), ["store"]);
}
