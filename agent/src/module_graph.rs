//! A test that keeps the agent's module graph one-way: it reads every file under `src/`,
//! collects the `crate::…` and `super::…` paths each one uses, and fails on any cycle among
//! sibling modules (`api ↔ peers`, `cli::run ↔ cli::docs`, …), naming the files that close
//! it. A module may use its parent's items and its own children; only references between
//! siblings (at any depth) count.
//!
//! It is a text scan, not a compiler: it strips `//` comments, resolves each path to the
//! longest known module prefix and ignores paths it cannot resolve (types, `self::`, macros).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type ModPath = Vec<String>;

/// Every module file under `root` by module path (`api/mod.rs` → `["api"]`).
fn modules(root: &Path) -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .with_extension("");
            let mut segments: ModPath = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(
                segments.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                segments.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(segments, text);
        }
    }
    out
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named at `rest` (just after `crate::` or `super::`): `a::b::C` gives `[a, b, C]`;
/// `a::{b, c::D}` gives `[a]`, `[a, b]`, `[a, c, D]`.
fn paths_at(rest: &str) -> Vec<ModPath> {
    let mut prefix = Vec::new();
    let mut s = rest;
    loop {
        let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
        if end == 0 {
            break;
        }
        prefix.push(s[..end].to_owned());
        s = &s[end..];
        match s.strip_prefix("::") {
            Some(next) => s = next.trim_start(),
            None => return vec![prefix],
        }
    }
    let mut out = vec![prefix.clone()];
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0usize;
        let mut item = String::new();
        let mut items = Vec::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        for item in items {
            for tail in paths_at(item.trim()) {
                let mut p = prefix.clone();
                p.extend(tail);
                out.push(p);
            }
        }
    }
    out
}

/// Every module path `file` (module `me`) refers to, resolved against `known`.
fn references(me: &ModPath, text: &str, known: &BTreeMap<ModPath, String>) -> BTreeSet<ModPath> {
    let code = strip_comments(text);
    let mut out = BTreeSet::new();
    let mut resolve = |path: ModPath| {
        for len in (1..=path.len()).rev() {
            if known.contains_key(&path[..len]) {
                out.insert(path[..len].to_vec());
                return;
            }
        }
    };
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(is_ident) {
            continue; // `kdelta_crate::`, not ours
        }
        for p in paths_at(&code[i + "crate::".len()..]) {
            resolve(p);
        }
    }
    let mut i = 0;
    while let Some(found) = code[i..].find("super::") {
        let start = i + found;
        i = start + "super::".len();
        if (start > 0 && code[..start].ends_with(is_ident)) || code[..start].ends_with("super::") {
            continue;
        }
        let mut rest = &code[start..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        let Some(base) = me.len().checked_sub(up) else {
            continue;
        };
        for p in paths_at(rest) {
            let mut full = me[..base].to_vec();
            full.extend(p);
            resolve(full);
        }
    }
    out
}

/// Edges between siblings: parent → (from child → to child → files making the edge).
type Edges = BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, BTreeSet<String>>>>;

fn sibling_edges(known: &BTreeMap<ModPath, String>) -> Edges {
    let mut edges: Edges = BTreeMap::new();
    for (me, text) in known {
        for target in references(me, text, known) {
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < me.len() && common < target.len() {
                edges
                    .entry(me[..common].to_vec())
                    .or_default()
                    .entry(me[common].clone())
                    .or_default()
                    .entry(target[common].clone())
                    .or_default()
                    .insert(me.join("::"));
            }
        }
    }
    edges
}

/// One cycle in `graph`, as the list of nodes, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn agent_modules_have_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&root);
    assert!(
        known.contains_key(&vec!["api".to_owned()]),
        "scan found no api module"
    );
    let mut problems = Vec::new();
    for (parent, graph) in sibling_edges(&known) {
        if let Some(cycle) = find_cycle(&graph) {
            let within = if parent.is_empty() {
                "crate".to_owned()
            } else {
                parent.join("::")
            };
            let mut text = format!("cycle in {within}: {}", cycle.join(" → "));
            for pair in cycle.windows(2) {
                let files = &graph[&pair[0]][&pair[1]];
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                text.push_str(&format!(
                    "\n  {} → {} (in {})",
                    pair[0],
                    pair[1],
                    files.join(", ")
                ));
            }
            problems.push(text);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_references_and_cycles() {
    let mut known = BTreeMap::new();
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<ModPath>();
    known.insert(m("a"), "use crate::b::{self, Thing};\n".to_owned());
    known.insert(
        m("b"),
        "// crate::a in a comment\nuse super::c::x;\n".to_owned(),
    );
    known.insert(m("c"), "fn f() { crate::a::g() }".to_owned());
    known.insert(m("c::x"), "use super::super::a;".to_owned());
    let edges = sibling_edges(&known);
    let root = &edges[&Vec::<String>::new()];
    assert_eq!(root["a"].keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(root["b"].keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(
        root["c"]["a"],
        BTreeSet::from(["c".to_owned(), "c::x".to_owned()])
    );
    assert_eq!(find_cycle(root).unwrap(), ["a", "b", "c", "a"]);
    known.insert(m("c"), String::new());
    known.insert(m("c::x"), String::new());
    assert_eq!(
        find_cycle(&sibling_edges(&known)[&Vec::<String>::new()]),
        None
    );
}
