//! The crate's modules form the DAG its documentation describes: every
//! `crate::module` a module's source names is an edge listed in the "In
//! full" list of `src/lib.rs`, every listed edge is in the code, and the
//! edges have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

/// `pub mod x;` lines of lib.rs.
fn modules(lib: &str) -> Vec<String> {
    lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string)).collect()
}

/// The text of a module: `x.rs`, or every file of `x/`.
fn module_text(name: &str) -> String {
    let file = src().join(format!("{name}.rs"));
    if file.is_file() {
        return std::fs::read_to_string(&file).unwrap();
    }
    let mut text = String::new();
    for entry in std::fs::read_dir(src().join(name)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}

/// Modules named as `crate::x` outside comments.
fn uses(text: &str, me: &str, all: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name != me && all.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// The "In full" list: lines `//! - `a`, `b`: x, y` (or `none`).
fn documented(lib: &str) -> Graph {
    let mut g = Graph::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! - `") else { continue };
        let Some((names, targets)) = item.split_once(": ") else { continue };
        if !names.ends_with('`') {
            continue;
        }
        let targets: BTreeSet<String> = match targets.trim() {
            "none" => BTreeSet::new(),
            t => t.split(',').map(|s| s.trim().to_string()).collect(),
        };
        for name in names.split(", ") {
            g.insert(name.trim_matches('`').to_string(), targets.clone());
        }
    }
    g
}

fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, n: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_code_has_the_documented_module_dag() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let all = modules(&lib);
    assert!(all.len() >= 10, "modules not found in lib.rs: {all:?}");
    let code: Graph = all.iter().map(|m| (m.clone(), uses(&module_text(m), m, &all))).collect();
    let doc = documented(&lib);
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        code.keys().collect::<Vec<_>>(),
        "every module, and only those, has a line in lib.rs's edge list"
    );
    for (m, used) in &code {
        assert_eq!(&doc[m], used, "module `{m}`: lib.rs lists {:?}, the code uses {used:?}", doc[m]);
    }
    assert_eq!(find_cycle(&code), None, "the modules import each other in a circle");
}

#[test]
fn a_cycle_is_found() {
    let g: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
