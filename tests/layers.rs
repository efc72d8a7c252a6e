//! The shape of the source tree, as docs/DESIGN.md states it: every module in one layer,
//! data flowing down (no module uses one of a higher layer), no import loop between
//! folders or modules, no function over 80 lines outside tests, and no setting read from
//! the environment outside `config/`. Read from `src/` as text: what a `use crate::…`,
//! a `crate::…` path or a `super::…` path names, doc comments and test modules aside.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// DESIGN's layers, lowest first: a top-level module (or a file of one) and its layer.
const LAYERS: &[(&str, u8)] = &[
    ("error", 1),
    ("constants", 1),
    ("fsutil", 1),
    ("output", 1),
    ("logging", 1),
    ("progress", 1),
    ("wal", 1),
    ("config", 2),
    ("storage", 2),
    ("crypto", 2),
    ("codec", 2),
    ("objects", 2),
    ("layout", 3),
    ("pgbackrest", 3),
    ("barman", 3),
    ("archive", 3),
    ("pg", 3),
    ("standby", 4),
    ("restore", 4),
    ("push", 4),
    ("inspect", 4),
    ("cutover", 4),
    ("context", 5),
    ("commands", 5),
    ("cli", 5),
    ("fuzzing", 5),
    ("lib", 5),
    ("main", 5),
];

/// The longest function allowed outside tests, in lines from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `storage/mod.rs` -> `storage`, `storage/s3.rs` -> `storage::s3`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src/").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The source of a file without its test module and without comments.
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("a readable source file");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every path a `{…}` group after `base::` names, nested groups expanded.
fn expand_group(base: &str, group: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    for item in items {
        let item = item.trim();
        let item = match item.contains('{') {
            true => item,
            false => item.split(" as ").next().unwrap_or(""),
        };
        if item.is_empty() {
            continue;
        }
        match item.find("::{") {
            Some(at) => {
                let inner = &item[at + 3..item.len() - 1];
                expand_group(&format!("{base}::{}", &item[..at]), inner, out);
            }
            None => out.push(format!("{base}::{item}")),
        }
    }
}

/// Every `crate::…` and `super::…` path in `code`, as absolute module paths.
fn paths_in(code: &str, module: &str, is_mod_rs: bool) -> Vec<String> {
    let parent: Vec<&str> = {
        let mut parts: Vec<&str> = module.split("::").collect();
        if !is_mod_rs {
            parts.pop();
        }
        // `super` from a mod.rs names the folder's parent; from a file, its folder's.
        if is_mod_rs {
            parts.pop();
        }
        parts
    };
    let mut out = Vec::new();
    for (anchor, base) in [("crate::", String::new()), ("super::", parent.join("::"))] {
        let mut rest = code;
        while let Some(at) = rest.find(anchor) {
            let preceded = rest[..at].chars().next_back().is_some_and(is_path_char);
            let after = &rest[at + anchor.len()..];
            rest = after;
            if preceded {
                continue;
            }
            let end = after.find(|c: char| !is_path_char(c)).unwrap_or(after.len());
            let path = after[..end].trim_end_matches(':');
            let absolute = match base.is_empty() {
                true => path.to_string(),
                false => format!("{base}::{path}"),
            };
            if after[end..].starts_with('{') && after[..end].ends_with("::") {
                let mut depth = 0;
                let mut close = end;
                for (i, c) in after[end..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = end + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                expand_group(&absolute, &after[end + 1..close], &mut out);
            } else {
                out.push(absolute);
            }
        }
    }
    out
}

/// The longest known module that `path` starts with.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|n| modules.get(&parts[..n].join("::")))
}

fn layer_of(module: &str) -> Option<u8> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().find(|(name, _)| *name == top).map(|(_, layer)| *layer)
}

struct Tree {
    files: BTreeMap<String, PathBuf>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn tree() -> Tree {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    let files: BTreeMap<String, PathBuf> = paths.into_iter().map(|p| (module_of(&p), p)).collect();
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let is_mod_rs = path.file_name().is_some_and(|f| f == "mod.rs");
        for used in paths_in(&code_of(path), module, is_mod_rs) {
            if let Some(target) = resolve(&used, &modules) {
                if target != module {
                    edges.entry(module.clone()).or_default().insert(target.clone());
                }
            }
        }
    }
    Tree { files, edges }
}

/// The strongly connected groups of more than one node (Tarjan's algorithm).
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(next) = s.graph.get(v) {
            for w in next {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn every_module_has_a_layer_and_uses_only_its_own_and_lower_ones() {
    let tree = tree();
    let unplaced: Vec<&String> = tree.files.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to DESIGN and LAYERS): {unplaced:?}"
    );
    let mut upward = Vec::new();
    for (from, targets) in &tree.edges {
        for to in targets {
            if layer_of(to) > layer_of(from) {
                upward.push(format!("{from} (layer {:?}) uses {to} (layer {:?})", layer_of(from), layer_of(to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports that run up the layers:\n{}", upward.join("\n"));
}

#[test]
fn no_import_loop_between_folders_or_modules() {
    let tree = tree();
    assert!(
        tree.edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the import graph was not read: the check would pass on nothing"
    );
    let module_loops = loops(&tree.edges);
    assert!(module_loops.is_empty(), "modules that import each other: {module_loops:?}");
    let folder = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut folders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &tree.edges {
        for to in targets {
            if folder(from) != folder(to) {
                folders.entry(folder(from)).or_default().insert(folder(to));
            }
        }
    }
    let folder_loops = loops(&folders);
    assert!(folder_loops.is_empty(), "folders that import each other: {folder_loops:?}");
}

#[test]
fn the_checks_see_a_loop_and_an_upward_import() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("codec".into()).or_default().insert("crypto".into());
    graph.entry("crypto".into()).or_default().insert("codec".into());
    graph.entry("crypto".into()).or_default().insert("error".into());
    assert_eq!(loops(&graph), vec![vec!["codec".to_string(), "crypto".to_string()]]);
    let used = paths_in("use crate::a::{b, c::{d, e as f}};\nlet x = crate::g::h();\n", "storage::s3", false);
    assert_eq!(used, ["a::b", "a::c::d", "a::c::e", "g::h"]);
    assert_eq!(paths_in("use super::Archive;", "archive::walg", false), ["archive::Archive"]);
    assert_eq!(paths_in("use super::x;", "archive", true), ["x"]);
    assert!(layer_of("storage::s3") < layer_of("restore::fetch"));
}

/// `(file, line, name, lines)` of every function longer than the limit, test modules aside.
fn long_functions() -> Vec<(String, usize, String, usize)> {
    let tree = tree();
    let mut out = Vec::new();
    for path in tree.files.values() {
        let text = fs::read_to_string(path).expect("a readable source file");
        let lines: Vec<&str> = text.lines().collect();
        let end = lines
            .windows(2)
            .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod tests"))
            .unwrap_or(lines.len());
        let mut i = 0;
        while i < end {
            let line = lines[i];
            let indent = line.len() - line.trim_start().len();
            let head = line.trim_start();
            let head = head
                .strip_prefix("pub ")
                .or_else(|| head.strip_prefix("pub(crate) "))
                .unwrap_or(head);
            let head = head.strip_prefix("async ").unwrap_or(head);
            if let Some(rest) = head.strip_prefix("fn ") {
                if !line.trim_end().ends_with(';') {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    let close = (i + 1..end)
                        .find(|&j| lines[j].len() - lines[j].trim_start().len() == indent && lines[j].trim_start().starts_with('}'))
                        .unwrap_or(end);
                    let length = close - i + 1;
                    if length > MAX_FUNCTION_LINES {
                        let file = path.strip_prefix(src()).unwrap_or(path).display().to_string();
                        out.push((file, i + 1, name, length));
                    }
                    i = close;
                }
            }
            i += 1;
        }
    }
    out
}

#[test]
fn no_function_outside_tests_is_over_80_lines() {
    let long = long_functions();
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (file, line, name, lines): {long:?}"
    );
}

/// Variables read where they are used because they are not walfetch's settings: the
/// search path for programs, and the terminal convention for colour.
const NOT_SETTINGS: &[&str] = &["\"PATH\"", "\"NO_COLOR\""];

#[test]
fn no_setting_is_read_from_the_environment_outside_config() {
    let tree = tree();
    let mut readers = Vec::new();
    for (module, path) in &tree.files {
        if module == "config" || module.starts_with("config::") {
            continue;
        }
        for (n, line) in code_of(path).lines().enumerate() {
            let reads = ["env::var(", "env::var_os(", "env::vars()", "env::vars_os()"]
                .iter()
                .any(|call| line.contains(call));
            if reads && !NOT_SETTINGS.iter().any(|name| line.contains(name)) {
                readers.push(format!("{}:{}: {}", module, n + 1, line.trim()));
            }
        }
    }
    assert!(
        readers.is_empty(),
        "environment read outside config/ (add the setting to config):\n{}",
        readers.join("\n")
    );
}
