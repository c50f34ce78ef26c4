//! House rules checked as code (after rust-analyzer's `xtask/src/tidy.rs`): every tracked `.rs`
//! file opens with `//!`; no ignored, should-panic or unfinished code; the lint opt-ins of the
//! crates; and the dependency direction of STYLE §1, read from `cargo metadata`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::util::{self, Metadata, Node, Package};

/// Arguments of `cargo xtask tidy` (none).
#[derive(clap::Args)]
pub struct Args {}

/// `cargo xtask tidy`: only the house-rule checks.
pub fn run(_args: Args) -> Result<()> {
    check()
}

/// Runs every house-rule check and fails listing all violations at once.
pub fn check() -> Result<()> {
    let root = util::project_root();
    let files = rust_files(&root)?;
    let mut problems = Vec::new();
    for file in &files {
        let text = fs::read_to_string(root.join(file))
            .with_context(|| format!("could not read {}", file.display()))?;
        problems.extend(check_source(file, &text));
    }
    let metadata = Metadata::load(true)?;
    problems.extend(check_dependencies(&metadata));
    problems.extend(check_lint_opt_ins(&metadata)?);

    if problems.is_empty() {
        println!(
            "  tidy: {} .rs files and {} workspace packages follow the house rules",
            files.len(),
            metadata.members().count()
        );
        return Ok(());
    }
    for problem in &problems {
        println!("  tidy: {problem}");
    }
    bail!("{} house-rule violation(s), listed above", problems.len())
}

/// The crates that decide without doing IO; they must build for wasm32 and stay runtime-free.
pub const SANS_IO: &[&str] = &["protocol", "health", "resilience"];

/// Packages that must not appear in the normal dependency tree of a [`SANS_IO`] crate.
const RUNTIMES: &[&str] = &["tokio", "axum"];

/// The one package allowed to use the browser stack.
const WEB: &str = "web";

/// This file spells out the banned patterns, so it is exempt from that one check.
const SELF_PATH: &str = "xtask/src/tidy.rs";

/// Text that may not appear in any `.rs` file, with the reason given to the offender.
const BANNED: &[(&str, &str)] = &[
    (
        "#[ignore",
        "every test runs; fix or delete it instead of ignoring it",
    ),
    (
        "#[should_panic",
        "assert on the `Err` instead of expecting a panic",
    ),
    (concat!("todo", "!("), "unfinished code does not land"),
    (
        concat!("unimplemented", "!("),
        "unfinished code does not land",
    ),
];

/// The `.rs` files to check, relative to `root`: the ones git tracks, or, outside a git
/// checkout (an unpacked archive), every `.rs` file below `root` except build output.
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut git = std::process::Command::new("git");
    git.args(["ls-files", "-z", "--", "*.rs"]).current_dir(root);
    if let Ok(listing) = util::output(&mut git) {
        return Ok(listing
            .split('\0')
            .filter(|name| !name.is_empty())
            // A file deleted in the working tree but not yet in the index is gone for us too.
            .filter(|name| root.join(name).is_file())
            .map(PathBuf::from)
            .collect());
    }
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(root.join(&dir))
            .with_context(|| format!("could not list {}", root.join(&dir).display()))?
        {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let relative = dir.join(&*name);
            if entry.file_type()?.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                    pending.push(relative);
                }
            } else if name.ends_with(".rs") {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Checks one source file's text: the `//!` header and the banned patterns.
fn check_source(path: &Path, text: &str) -> Vec<String> {
    let shown = path.display();
    let mut problems = Vec::new();
    if !text.trim_start().starts_with("//!") {
        problems.push(format!(
            "{shown}: must start with a `//!` comment saying what the file is for"
        ));
    }
    if path.to_string_lossy().replace('\\', "/") != SELF_PATH {
        for (number, line) in text.lines().enumerate() {
            for (pattern, reason) in BANNED {
                if line.contains(pattern) {
                    problems.push(format!(
                        "{shown}:{}: `{pattern}` is not allowed: {reason}",
                        number + 1
                    ));
                }
            }
        }
    }
    problems
}

/// Where a workspace package lives, which decides what it may depend on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Area {
    /// `crates/*`: libraries.
    Crate,
    /// `apps/*`: programs.
    App,
    /// Anything else, such as `xtask`.
    Tool,
}

fn area(metadata: &Metadata, package: &Package) -> Area {
    let relative = package
        .manifest_path
        .strip_prefix(&metadata.workspace_root)
        .unwrap_or(&package.manifest_path);
    match relative.components().next().map(|c| c.as_os_str()) {
        Some(first) if first == "crates" => Area::Crate,
        Some(first) if first == "apps" => Area::App,
        _ => Area::Tool,
    }
}

/// The dependency-direction rules of STYLE §1, over the resolved graph.
///
/// Edges between workspace packages count when they are normal or build dependencies (a test
/// may reach further); the runtime and browser rules look at the normal dependency tree.
fn check_dependencies(metadata: &Metadata) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(resolve) = &metadata.resolve else {
        return vec!["cargo metadata returned no dependency graph".to_owned()];
    };
    let packages: HashMap<&str, &Package> = metadata
        .packages
        .iter()
        .map(|p| (p.id.as_str(), p))
        .collect();
    let nodes: HashMap<&str, &Node> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let name_of = |id: &str| packages.get(id).map_or(id.to_owned(), |p| p.name.clone());
    let is_member = |id: &str| metadata.workspace_members.iter().any(|m| m == id);

    for member in metadata.members() {
        let from = member.name.as_str();
        let from_area = area(metadata, member);
        let Some(node) = nodes.get(member.id.as_str()) else {
            continue;
        };
        for dep in &node.deps {
            let Some(target) = packages.get(dep.pkg.as_str()) else {
                continue;
            };
            let to = target.name.as_str();
            let counts = dep
                .dep_kinds
                .iter()
                .any(|k| k.kind.as_deref() != Some("dev"));
            if is_member(&dep.pkg) && counts {
                let to_area = area(metadata, target);
                if from == "protocol" {
                    problems.push(format!(
                        "protocol depends on {to}: protocol is the leaf and depends on no workspace crate"
                    ));
                } else if (from == "health" || from == "resilience") && to != "protocol" {
                    problems.push(format!(
                        "{from} depends on {to}: {from} may use protocol and nothing else of ours"
                    ));
                }
                if from_area == Area::Crate && to_area == Area::App {
                    problems.push(format!(
                        "{from} depends on {to}: crates never depend on apps"
                    ));
                }
                if from_area == Area::App && to_area == Area::App {
                    problems.push(format!(
                        "{from} depends on {to}: apps never depend on each other"
                    ));
                }
                if to == "xtask" {
                    problems.push(format!(
                        "{from} depends on xtask: the task runner is a leaf of the graph"
                    ));
                }
            }
            let normal = dep.dep_kinds.iter().any(|k| k.kind.is_none());
            if normal && to == "web-sys" && from != WEB {
                problems.push(format!(
                    "{from} depends on web-sys: the browser stack is only for apps/web"
                ));
            }
        }
    }

    for member in metadata.members() {
        let from = member.name.as_str();
        let sans_io = SANS_IO.contains(&from);
        if !sans_io && from == WEB {
            continue;
        }
        for (id, path) in normal_closure(&nodes, &member.id) {
            let Some(package) = packages.get(id) else {
                continue;
            };
            let chain = path
                .iter()
                .map(|id| name_of(id))
                .collect::<Vec<_>>()
                .join(" -> ");
            if sans_io && RUNTIMES.contains(&package.name.as_str()) {
                problems.push(format!(
                    "{from} pulls in {} ({chain}): the sans-IO crates stay free of async runtimes and servers",
                    package.name
                ));
            }
            if from != WEB && package.name.starts_with("leptos") {
                problems.push(format!(
                    "{from} pulls in {} ({chain}): Leptos is only for apps/web",
                    package.name
                ));
            }
        }
    }
    problems
}

/// Every package reachable from `start` over normal edges, each with the chain that reaches it
/// (shortest first, breadth-first).
fn normal_closure<'a>(
    nodes: &HashMap<&'a str, &'a Node>,
    start: &'a str,
) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut seen = HashSet::from([start]);
    let mut queue = VecDeque::from([(start, vec![start])]);
    let mut reached = Vec::new();
    while let Some((id, path)) = queue.pop_front() {
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            if !dep.dep_kinds.iter().any(|k| k.kind.is_none()) {
                continue;
            }
            let next = dep.pkg.as_str();
            if seen.insert(next) {
                let mut next_path = path.clone();
                next_path.push(next);
                reached.push((next, next_path.clone()));
                queue.push_back((next, next_path));
            }
        }
    }
    reached
}

/// Every member opts into the workspace lints; libraries under `crates/` warn on missing docs;
/// the sans-IO crates opt into the clock/spawn/RNG ban of `clippy.toml`.
fn check_lint_opt_ins(metadata: &Metadata) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for member in metadata.members() {
        let name = &member.name;
        let manifest = fs::read_to_string(&member.manifest_path)
            .with_context(|| format!("could not read {}", member.manifest_path.display()))?;
        if !inherits_workspace_lints(&manifest) {
            problems.push(format!(
                "{name}: Cargo.toml needs `[lints] workspace = true`"
            ));
        }
        if area(metadata, member) != Area::Crate {
            continue;
        }
        let Some(dir) = member.manifest_path.parent() else {
            continue;
        };
        let lib = dir.join("src/lib.rs");
        let Ok(lib_text) = fs::read_to_string(&lib) else {
            continue;
        };
        if !lib_text.contains("#![warn(missing_docs)]") {
            problems.push(format!("{name}: src/lib.rs needs `#![warn(missing_docs)]`"));
        }
        if SANS_IO.contains(&name.as_str())
            && !lib_text.contains("#![warn(clippy::disallowed_methods)]")
        {
            problems.push(format!(
                "{name}: src/lib.rs needs `#![warn(clippy::disallowed_methods)]` (sans-IO crate)"
            ));
        }
    }
    Ok(problems)
}

/// Whether a manifest has a `[lints]` table with `workspace = true`.
fn inherits_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    manifest
        .lines()
        .any(|line| line.replace(' ', "") == "lints.workspace=true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{DepKind, NodeDep, Resolve, Target};

    fn lib(name: &str, dir: &str) -> Package {
        Package {
            name: name.to_owned(),
            id: format!("{name}-id"),
            manifest_path: PathBuf::from(format!("/ws/{dir}/Cargo.toml")),
            targets: vec![Target {
                kind: vec!["lib".to_owned()],
            }],
        }
    }

    /// A graph of workspace members (`dir` starting with crates/, apps/, xtask) and registry
    /// packages (`dir` starting with `/`), with edges `(from, to, kind)`.
    fn graph(packages: &[(&str, &str)], edges: &[(&str, &str, Option<&str>)]) -> Metadata {
        let packages: Vec<Package> = packages
            .iter()
            .map(|(name, dir)| {
                if let Some(registry) = dir.strip_prefix('/') {
                    let mut p = lib(name, "");
                    p.manifest_path = PathBuf::from(format!("/registry/{registry}/Cargo.toml"));
                    p
                } else {
                    lib(name, dir)
                }
            })
            .collect();
        let workspace_members = packages
            .iter()
            .filter(|p| p.manifest_path.starts_with("/ws"))
            .map(|p| p.id.clone())
            .collect();
        let nodes = packages
            .iter()
            .map(|p| Node {
                id: p.id.clone(),
                deps: edges
                    .iter()
                    .filter(|(from, _, _)| *from == p.name)
                    .map(|(_, to, kind)| NodeDep {
                        pkg: format!("{to}-id"),
                        dep_kinds: vec![DepKind {
                            kind: kind.map(str::to_owned),
                        }],
                    })
                    .collect(),
            })
            .collect();
        Metadata {
            packages,
            workspace_members,
            workspace_default_members: Vec::new(),
            resolve: Some(Resolve { nodes }),
            workspace_root: PathBuf::from("/ws"),
        }
    }

    const HOUSE: &[(&str, &str)] = &[
        ("protocol", "crates/protocol"),
        ("health", "crates/health"),
        ("resilience", "crates/resilience"),
        ("client", "crates/client"),
        ("server", "apps/server"),
        ("web", "apps/web"),
        ("xtask", "xtask"),
        ("serde", "/serde"),
        ("tokio", "/tokio"),
        ("tokio-util", "/tokio-util"),
        ("axum", "/axum"),
        ("leptos", "/leptos"),
        ("web-sys", "/web-sys"),
    ];

    #[test]
    fn the_intended_graph_passes() {
        let metadata = graph(
            HOUSE,
            &[
                ("health", "protocol", None),
                ("health", "serde", None),
                ("resilience", "protocol", None),
                ("resilience", "tokio", Some("dev")),
                ("client", "resilience", None),
                ("client", "tokio", None),
                ("server", "health", None),
                ("server", "axum", None),
                ("axum", "tokio", None),
                ("web", "resilience", None),
                ("web", "leptos", None),
                ("leptos", "web-sys", None),
                ("web", "web-sys", None),
                ("xtask", "tokio", None),
            ],
        );
        assert_eq!(check_dependencies(&metadata), Vec::<String>::new());
    }

    #[test]
    fn protocol_is_a_leaf() {
        let metadata = graph(HOUSE, &[("protocol", "health", None)]);
        assert_eq!(
            check_dependencies(&metadata),
            ["protocol depends on health: protocol is the leaf and depends on no workspace crate"]
        );
    }

    #[test]
    fn health_and_resilience_use_only_protocol() {
        let metadata = graph(
            HOUSE,
            &[
                ("resilience", "health", None),
                ("health", "resilience", Some("build")),
            ],
        );
        let problems = check_dependencies(&metadata);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("health depends on resilience"));
        assert!(problems[1].starts_with("resilience depends on health"));
    }

    #[test]
    fn crates_never_use_apps_and_apps_never_use_apps() {
        let metadata = graph(
            HOUSE,
            &[
                ("client", "server", None),
                ("server", "web", None),
                ("server", "xtask", None),
            ],
        );
        assert_eq!(
            check_dependencies(&metadata),
            [
                "client depends on server: crates never depend on apps",
                "server depends on web: apps never depend on each other",
                "server depends on xtask: the task runner is a leaf of the graph",
            ]
        );
    }

    #[test]
    fn dev_edges_between_members_are_allowed() {
        let metadata = graph(HOUSE, &[("client", "server", Some("dev"))]);
        assert_eq!(check_dependencies(&metadata), Vec::<String>::new());
    }

    #[test]
    fn runtimes_are_found_through_the_whole_normal_tree() {
        let metadata = graph(
            HOUSE,
            &[
                ("resilience", "serde", None),
                ("serde", "tokio-util", None),
                ("tokio-util", "tokio", None),
            ],
        );
        assert_eq!(
            check_dependencies(&metadata),
            [
                "resilience pulls in tokio (resilience -> serde -> tokio-util -> tokio): \
                 the sans-IO crates stay free of async runtimes and servers"
            ]
        );
    }

    #[test]
    fn axum_in_health_is_refused() {
        let metadata = graph(HOUSE, &[("health", "axum", None), ("axum", "tokio", None)]);
        let problems = check_dependencies(&metadata);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("health pulls in axum"));
        assert!(problems[1].starts_with("health pulls in tokio (health -> axum -> tokio)"));
    }

    #[test]
    fn the_browser_stack_stays_in_web() {
        let metadata = graph(
            HOUSE,
            &[("client", "web-sys", None), ("server", "leptos", None)],
        );
        let problems = check_dependencies(&metadata);
        assert_eq!(
            problems,
            [
                "client depends on web-sys: the browser stack is only for apps/web",
                "server pulls in leptos (server -> leptos): Leptos is only for apps/web",
            ]
        );
    }

    #[test]
    fn sources_need_a_header() {
        let path = Path::new("crates/x/src/lib.rs");
        assert_eq!(
            check_source(path, "//! What this is.\nfn f() {}\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            check_source(path, "\n//! Leading blank lines are fine.\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            check_source(path, "/// An item doc is not a file header.\nfn f() {}\n"),
            ["crates/x/src/lib.rs: must start with a `//!` comment saying what the file is for"]
        );
        assert_eq!(check_source(path, "").len(), 1);
    }

    #[test]
    fn banned_patterns_are_reported_with_their_line() {
        let path = Path::new("apps/server/src/hub.rs");
        let text = "//! Hub.\n#[test]\n#[ignore\x5d\nfn t() { todo\x21() }\n#[should_panic(expected = \"x\")]\nfn u() { unimplemented\x21(\"later\") }\n";
        let problems = check_source(path, text);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("apps/server/src/hub.rs:3: `#[ignore`"));
        assert!(problems[1].starts_with("apps/server/src/hub.rs:4: `todo\x21(`"));
        assert!(problems[2].starts_with("apps/server/src/hub.rs:5: `#[should_panic`"));
        assert!(problems[3].starts_with("apps/server/src/hub.rs:6: `unimplemented\x21(`"));
    }

    #[test]
    fn this_file_may_name_the_patterns() {
        let text = "//! Tidy.\nconst X: &str = \"#[ignore\";\n";
        assert_eq!(
            check_source(Path::new(SELF_PATH), text),
            Vec::<String>::new()
        );
    }

    #[test]
    fn workspace_lints_are_recognised() {
        assert!(inherits_workspace_lints(
            "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
        ));
        assert!(inherits_workspace_lints("[lints]\nworkspace=true"));
        assert!(inherits_workspace_lints("lints.workspace = true\n"));
        assert!(!inherits_workspace_lints("[package]\nworkspace = true\n"));
        assert!(!inherits_workspace_lints(
            "[lints.rust]\nworkspace = true\n"
        ));
    }
}
