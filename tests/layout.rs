//! The crate graph ARCHITECTURE.md shows is the one Cargo enforces: for every crate in its table,
//! the raftpay crates its `Cargo.toml` depends on are exactly those the table lists. A new
//! dependency between our crates (say, the tools on the node code) fails here until the table,
//! and so the documented design, says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `crate name -> (directory, the raftpay crates it depends on)` from ARCHITECTURE.md's table.
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let header = "| crate | directory | depends on (raftpay crates) |";
    let table = text.split_once(header).expect("the crate table").1;
    let mut crates = BTreeMap::new();
    for line in table.lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_owned();
        let dir = cells[1].trim_matches('`').to_owned();
        let deps = cells[2]
            .split(',')
            .map(|dep| dep.trim().trim_matches('`'))
            .filter(|dep| dep.starts_with("raftpay"))
            .map(str::to_owned)
            .collect();
        crates.insert(name, (dir, deps));
    }
    crates
}

/// The package name and the raftpay crates among the normal dependencies of `dir/Cargo.toml`.
fn declared(dir: &str) -> (String, BTreeSet<String>) {
    let path = Path::new(ROOT).join(dir).join("Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = manifest["package"]["name"].as_str().unwrap().to_owned();
    let deps = manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|deps| {
            deps.keys()
                .filter(|dep| dep.starts_with("raftpay"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    (name, deps)
}

#[test]
fn the_documented_crate_graph_is_the_one_cargo_enforces() {
    let documented = documented();
    assert!(
        documented.len() >= 7,
        "table not found whole: {documented:?}"
    );
    for (name, (dir, deps)) in &documented {
        let (package, declared) = declared(dir);
        assert_eq!(&package, name, "{dir}/Cargo.toml");
        assert_eq!(
            &declared, deps,
            "{name}: Cargo.toml depends on {declared:?}, ARCHITECTURE.md says {deps:?}"
        );
    }
    // Every workspace member is in the table.
    let workspace: toml::Table = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members: BTreeSet<String> = workspace["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member.as_str().unwrap().trim_end_matches('/').to_owned())
        .collect();
    let dirs: BTreeSet<String> = documented
        .values()
        .map(|(dir, _)| dir.trim_end_matches('/').to_owned())
        .collect();
    assert_eq!(
        members, dirs,
        "workspace members vs ARCHITECTURE.md's table"
    );
}
