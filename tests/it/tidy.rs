//! Keeps the tree honest: every scenario has a test, a snapshot and (reference-format ones) a
//! reference trace, with no orphans either way, and the pure core never reaches for IO, clocks, randomness or unordered maps.

use crate::support::root;
use std::collections::BTreeSet;
use std::path::Path;

fn stems(dir: &Path, extension: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("folder exists")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .map(|path| {
            path.file_stem()
                .expect("file")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_scenario_has_a_test_a_snapshot_and_a_reference_trace() {
    let sims = stems(&root().join("sims"), "yaml");
    let snapshots = stems(&root().join("snapshots"), "snap");
    let references = stems(&root().join("tests/reference"), "json");
    let listed: BTreeSet<String> = crate::sims::LISTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        sims, listed,
        "sims/*.yaml differ from the sims! list (tests/it/sims.rs)"
    );
    let missing: Vec<_> = sims.difference(&snapshots).collect();
    let orphans: Vec<_> = snapshots.difference(&sims).collect();
    assert!(
        missing.is_empty() && orphans.is_empty(),
        "scenarios without a snapshot: {missing:?}; snapshots without a scenario: {orphans:?} \
         (README, \"Snapshots\")"
    );
    let mut reference_format = BTreeSet::new();
    for name in &sims {
        let scenario =
            hubsim::sim::scenario::Scenario::load(&crate::support::sim_path(name)).expect("loads");
        if !scenario.network_only() {
            reference_format.insert(name.clone());
        }
    }
    assert_eq!(
        reference_format, references,
        "reference-format scenarios and tests/reference/*.json differ (network-only scenarios \
         have none)"
    );
    let regressions = stems(&root().join("sims/regressions"), "yaml");
    let listed: BTreeSet<String> = crate::sims::regressions::LISTED
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        regressions, listed,
        "sims/regressions/*.yaml differ from the regressions! list (tests/it/sims.rs)"
    );
    assert_eq!(
        regressions,
        stems(&root().join("snapshots/regressions"), "snap"),
        "sims/regressions/*.yaml and snapshots/regressions/*.snap differ (README, \"Snapshots\")"
    );
    for name in crate::faults::NET_LISTED {
        assert!(
            sims.contains(*name),
            "NET_LISTED names {name}, which is not in sims/"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("folder exists")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_stays_pure() {
    let forbidden = [
        "tokio",
        "turmoil",
        "std::time",
        "SystemTime",
        "rand::",
        "thread_rng",
        "std::thread",
        "HashMap",
        "HashSet",
        "println!",
        "spawn(",
        "std::fs",
        "std::net",
    ];
    let mut files = Vec::new();
    for dir in ["src/hub", "src/client", "src/proto"] {
        rust_files(&root().join(dir), &mut files);
    }
    for file in ["src/time.rs", "src/ids.rs", "src/server.rs"] {
        files.push(root().join(file));
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for token in forbidden {
            assert!(
                !text.contains(token),
                "{} mentions `{token}`",
                file.display()
            );
        }
    }
}
