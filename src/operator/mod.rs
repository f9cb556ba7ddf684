//! The operator: controllers at the edges that observe state, call the pure planner and burst
//! controller, apply the result with server-side apply, and report status.
//!
//! Layout (dependencies point down only; `tests::no_import_circle` checks it):
//! - `runtime`, `http`: the process (controllers, leader election, probes);
//! - `deployment/`: the ModelDeployment reconcile as a pipeline, observe → decide → build →
//!   apply → report, one module per step;
//! - `pool/`, `policy/`: the ComputePool and BurstPolicy controllers;
//! - `artifacts/`: artifact planning (pure) and the background syncer;
//! - `traffic/`: cross-cluster traffic (exports, routes, drains; issue #15);
//! - `context`: what every reconcile shares, with the per-deployment memory;
//! - `kubernetes/`: shared Kubernetes plumbing (clusters, the generic applier and sweep, the
//!   status writer, watches, views, names, Events, metrics).

pub mod artifacts;
pub mod context;
pub mod deployment;
pub mod error;
pub mod http;
pub mod kubernetes;
pub mod policy;
pub mod pool;
pub mod rollout;
pub mod runtime;
pub mod traffic;

#[cfg(test)]
mod tests {
    //! The layout's rule: module dependencies inside `src/operator` point one way only, both
    //! between files and between the top-level parts (`deployment`, `kubernetes`, ...).
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Every module of `src/operator` (as `a::b`, the root as ``) with the modules its non-test
    /// code names.
    fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/operator");
        let mut files = Vec::new();
        let mut folders = vec![root.clone()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let module_of = |path: &Path| -> String {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            parts.join("::")
        };
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
        // The longest known module that a path names.
        let resolve = |segments: &[&str]| -> Option<String> {
            (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains(m))
        };
        let mut graph = BTreeMap::new();
        for file in &files {
            let module = module_of(file);
            let text = std::fs::read_to_string(file).unwrap();
            // Test modules come last and may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            // `super` of `a/b.rs` (`a::b`) is `a`; of `a/mod.rs` (`a`), the root.
            let mut parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
            parent.pop();
            let mut names = BTreeSet::new();
            for (prefix, base) in [
                ("crate::operator::", Vec::new()),
                ("super::", parent.clone()),
            ] {
                for (i, _) in code.match_indices(prefix) {
                    if prefix == "super::" && code[..i].ends_with("::") {
                        continue;
                    }
                    let rest = &code[i + prefix.len()..];
                    let end = rest
                        .find(|c: char| {
                            !(c.is_alphanumeric()
                                || c == '_'
                                || c == ':'
                                || c == '{'
                                || c == ','
                                || c == ' '
                                || c == '\n')
                        })
                        .unwrap_or(rest.len());
                    let path = &rest[..end];
                    // `a::{b, c}` names `a::b` and `a::c`.
                    let (head, group) = match path.find('{') {
                        Some(open) => (
                            &path[..open],
                            path[open + 1..].split(',').collect::<Vec<_>>(),
                        ),
                        None => (path, vec![""]),
                    };
                    for tail in group {
                        let full = format!("{head}{}", tail.trim());
                        let mut segments = base.clone();
                        segments.extend(full.split("::").map(str::trim).filter(|s| !s.is_empty()));
                        if let Some(target) = resolve(&segments)
                            && target != module
                        {
                            names.insert(target);
                        }
                    }
                }
            }
            graph.insert(module, names);
        }
        graph
    }

    /// A cycle in `graph`, if any.
    fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(start) = path.iter().position(|n| n == node) {
                let mut found = path[start..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if let Some(found) = visit(next, graph, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_import_circle_between_files() {
        let graph = dependencies();
        assert!(
            graph.contains_key("deployment::decide") && graph.contains_key("kubernetes::applier")
        );
        assert!(
            graph["deployment::apply"].contains("kubernetes::applier"),
            "the scan sees imports: {:?}",
            graph["deployment::apply"]
        );
        assert_eq!(cycle(&graph), None);
    }

    #[test]
    fn no_import_circle_between_the_parts() {
        let mut parts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
        for (module, names) in dependencies() {
            let from = top(&module);
            let entry = parts.entry(from.clone()).or_default();
            entry.extend(
                names
                    .iter()
                    .map(|n| top(n))
                    .filter(|n| *n != from && !n.is_empty()),
            );
        }
        assert_eq!(cycle(&parts), None, "{parts:#?}");
        // The plumbing knows no controller.
        assert!(
            parts["kubernetes"].iter().all(|p| p == "error"),
            "{:?}",
            parts["kubernetes"]
        );
    }

    #[test]
    fn the_cycle_finder_finds_cycles() {
        let graph: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(
            cycle(&graph),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
