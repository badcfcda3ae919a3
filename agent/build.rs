//! Embeds the agent's crates for `bake-agent sbom`: the closure of bake-agent's dependencies in
//! the workspace's Cargo.lock, without development dependencies (the lockfile lists a
//! workspace member's dev-dependencies beside its others; the members' Cargo.toml files say
//! which are which). The lockfile does not say which platform a dependency is for, so crates
//! that only another platform builds (windows-sys, …) are listed too: a superset, as a
//! lockfile-based SBOM is.
//!
//! Writes `$OUT_DIR/crates.tsv`: one line per crate, `name TAB version TAB source TAB
//! checksum` (source `registry+…`, `git+…` or `workspace`; checksum empty when the lockfile
//! has none), sorted.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

struct Package {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    dependencies: Vec<String>,
}

fn read(path: &Path) -> toml::Table {
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()))
}

/// The package names of a dependency table (a renamed one by its `package`).
fn names(table: Option<&toml::Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(t) = table.and_then(toml::Value::as_table) {
        for (key, spec) in t {
            let name = spec
                .get("package")
                .and_then(toml::Value::as_str)
                .unwrap_or(key);
            out.insert(name.to_owned());
        }
    }
    out
}

/// A member's dependency names that are development dependencies only.
fn dev_only(manifest: &toml::Table) -> BTreeSet<String> {
    let mut dev = names(manifest.get("dev-dependencies"));
    let mut other = names(manifest.get("dependencies"));
    other.extend(names(manifest.get("build-dependencies")));
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for t in targets.values() {
            dev.extend(names(t.get("dev-dependencies")));
            other.extend(names(t.get("dependencies")));
            other.extend(names(t.get("build-dependencies")));
        }
    }
    dev.difference(&other).cloned().collect()
}

fn main() {
    let here =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = here.parent().expect("the agent is a workspace member");
    let workspace = read(&root.join("Cargo.toml"));
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in workspace["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
    {
        let manifest = read(
            &root
                .join(m.as_str().expect("a member path"))
                .join("Cargo.toml"),
        );
        let name = manifest["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        members.insert(name, dev_only(&manifest));
    }
    let lock = read(&root.join("Cargo.lock"));
    let packages: Vec<Package> = lock["package"]
        .as_array()
        .expect("Cargo.lock has packages")
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().expect("name").to_owned(),
            version: p["version"].as_str().expect("version").to_owned(),
            source: p
                .get("source")
                .and_then(toml::Value::as_str)
                .map(str::to_owned),
            checksum: p
                .get("checksum")
                .and_then(toml::Value::as_str)
                .map(str::to_owned),
            dependencies: p
                .get("dependencies")
                .and_then(toml::Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(toml::Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    // A dependency entry is "name", "name version" or "name version (source)".
    let find = |entry: &str| -> usize {
        let mut parts = entry.splitn(3, ' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        packages
            .iter()
            .position(|p| p.name == name && version.is_none_or(|v| p.version == v))
            .unwrap_or_else(|| panic!("Cargo.lock: no package for dependency {entry:?}"))
    };
    let start = packages
        .iter()
        .position(|p| p.name == env!("CARGO_PKG_NAME") && p.source.is_none())
        .expect("Cargo.lock lists bake-agent");
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(i) = queue.pop_front() {
        let p = &packages[i];
        let skip = if p.source.is_none() {
            members.get(&p.name).cloned().unwrap_or_default()
        } else {
            BTreeSet::new()
        };
        for d in &p.dependencies {
            let j = find(d);
            if skip.contains(&packages[j].name) {
                continue;
            }
            if seen.insert(j) {
                queue.push_back(j);
            }
        }
    }
    let mut lines: Vec<String> = seen
        .iter()
        .filter(|&&i| i != start)
        .map(|&i| {
            let p = &packages[i];
            format!(
                "{}\t{}\t{}\t{}",
                p.name,
                p.version,
                p.source.as_deref().unwrap_or("workspace"),
                p.checksum.as_deref().unwrap_or_default()
            )
        })
        .collect();
    lines.sort();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("crates.tsv"), lines.join("\n") + "\n").expect("write crates.tsv");
}
