//! The shape of bake's own source: its top-level modules form no import circle, so each can be
//! read (and changed) knowing only the modules below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules its code names (`use crate::m…` or an inline `crate::m::…` path),
/// comments and unit tests left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "lib" && name != "main" {
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, text) in &files {
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let mut uses = BTreeSet::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let m: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&m) && &m != name {
                    uses.insert(m);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A circle through `graph`, as the modules on it, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

#[test]
fn test_modules_form_no_import_circle() {
    let graph = imports();
    assert!(
        graph["release"].contains("refresh"),
        "the scan sees imports: {graph:?}"
    );
    assert_eq!(find_circle(&graph), None, "{graph:?}");
}

#[test]
fn test_a_circle_is_found() {
    let set = |ms: &[&str]| ms.iter().map(|m| (*m).to_owned()).collect::<BTreeSet<_>>();
    let graph = BTreeMap::from([
        ("cli".to_owned(), set(&["exit"])),
        ("exit".to_owned(), set(&["output"])),
        ("output".to_owned(), set(&["cli"])),
    ]);
    assert_eq!(
        find_circle(&graph),
        Some(vec![
            "cli".into(),
            "exit".into(),
            "output".into(),
            "cli".into()
        ])
    );
}
