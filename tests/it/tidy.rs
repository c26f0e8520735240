//! Keeps the tree honest: every scenario has a snapshot and (reference-format ones) a reference
//! trace, with no orphans either way (every scenario file has a test by construction:
//! `tests/sims.rs`), and the pure core never reaches for IO, clocks, randomness or unordered
//! maps.

use crate::support::root;
use std::collections::BTreeSet;
use std::path::Path;

fn stems(dir: &Path, extension: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
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

/// What is out of place under `root`, one line per file: a scenario without its snapshot, a
/// reference-format scenario without its reference trace, a snapshot or reference trace with
/// no scenario (or a reference trace for a network-only scenario), a `.yml` scenario (only
/// `*.yaml` files get a test). Scenario tests need no list: `tests/sims.rs` reads the folders.
fn problems(root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for folder in ["", "regressions"] {
        let sims_dir = root.join("sims").join(folder);
        let snapshots_dir = root.join("snapshots").join(folder);
        let show = |dir: &str, name: &str, ext: &str| {
            let mut path = std::path::PathBuf::from(dir);
            if !folder.is_empty() {
                path.push(folder);
            }
            path.push(format!("{name}.{ext}"));
            path.display().to_string()
        };
        let sims = stems(&sims_dir, "yaml");
        let snapshots = stems(&snapshots_dir, "snap");
        for name in stems(&sims_dir, "yml") {
            lines.push(format!(
                "{}: rename it to {} (only *.yaml scenarios get a test)",
                show("sims", &name, "yml"),
                show("sims", &name, "yaml")
            ));
        }
        for name in sims.difference(&snapshots) {
            lines.push(format!(
                "{}: missing, the snapshot of {} (INSTA_UPDATE=always cargo test {name}, then \
                 read it; README, \"Snapshots\")",
                show("snapshots", name, "snap"),
                show("sims", name, "yaml")
            ));
        }
        for name in snapshots.difference(&sims) {
            lines.push(format!(
                "{}: orphan, no scenario {}",
                show("snapshots", name, "snap"),
                show("sims", name, "yaml")
            ));
        }
        if !folder.is_empty() {
            continue;
        }
        let references = stems(&root.join("tests/reference"), "json");
        for name in &sims {
            let path = sims_dir.join(format!("{name}.yaml"));
            let reference_format = match hubsim::sim::scenario::Scenario::load(&path) {
                Ok(scenario) => !scenario.network_only(),
                Err(error) => {
                    lines.push(format!(
                        "{}: does not load: {error}",
                        show("sims", name, "yaml")
                    ));
                    continue;
                }
            };
            let path = format!("tests/reference/{name}.json");
            match (reference_format, references.contains(name)) {
                (true, false) => lines.push(format!(
                    "{path}: missing, the reference trace of sims/{name}.yaml (sims/README.md, \
                     \"Adding a scenario\")"
                )),
                (false, true) => lines.push(format!(
                    "{path}: orphan, sims/{name}.yaml is network-only (it has no reference trace)"
                )),
                _ => {}
            }
        }
        for name in references.difference(&sims) {
            lines.push(format!(
                "tests/reference/{name}.json: orphan, no scenario sims/{name}.yaml"
            ));
        }
    }
    lines
}

#[test]
fn every_scenario_has_a_snapshot_and_a_reference_trace() {
    let problems = problems(&root());
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    let sims = crate::support::scenario_names("");
    for name in crate::faults::NET_LISTED {
        assert!(
            sims.iter().any(|s| s == name),
            "NET_LISTED names {name}, which is not in sims/"
        );
    }
}

#[test]
fn the_tidy_check_names_each_missing_and_orphan_file() {
    let dir = std::env::temp_dir().join(format!("hubsim-tidy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in [
        "sims/regressions",
        "snapshots/regressions",
        "tests/reference",
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("temp folder");
    }
    let copy = |from: &str, to: &str| {
        std::fs::copy(root().join(from), dir.join(to)).expect("copied");
    };
    // A reference-format scenario with neither file, a network-only one with its snapshot, a
    // regression with none, and three orphans.
    copy("sims/consulting_happy.yaml", "sims/consulting_happy.yaml");
    copy("sims/net_standard.yaml", "sims/net_standard.yaml");
    copy("snapshots/net_standard.snap", "snapshots/net_standard.snap");
    copy("snapshots/net_standard.snap", "snapshots/gone.snap");
    copy(
        "tests/reference/consulting_happy.json",
        "tests/reference/gone.json",
    );
    copy(
        "tests/reference/consulting_happy.json",
        "tests/reference/net_standard.json",
    );
    copy(
        "sims/regressions/checker_audience_outsider.yaml",
        "sims/regressions/checker_audience_outsider.yaml",
    );
    copy("sims/net_standard.yaml", "sims/regressions/spelled.yml");
    let found = problems(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let starts: Vec<&str> = found
        .iter()
        .map(|line| line.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        starts,
        [
            "snapshots/consulting_happy.snap",
            "snapshots/gone.snap",
            "tests/reference/consulting_happy.json",
            "tests/reference/net_standard.json",
            "tests/reference/gone.json",
            "sims/regressions/spelled.yml",
            "snapshots/regressions/checker_audience_outsider.snap",
        ],
        "{found:#?}"
    );
    assert!(found[0].contains("missing, the snapshot of sims/consulting_happy.yaml"));
    assert!(found[1].contains("orphan, no scenario sims/gone.yaml"));
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
