//! Shared helpers: paths, the scenarios in `sims/`, a small generator (also compiled into
//! `tests/sims.rs`).

use std::path::PathBuf;

/// The crate root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `sims/NAME.yaml`.
pub(crate) fn sim_path(name: &str) -> PathBuf {
    root().join("sims").join(format!("{name}.yaml"))
}

/// The scenarios of `sims/FOLDER` (`""` for `sims/` itself): each `*.yaml` file's name without
/// the extension, sorted. Scenario tests and checks over every scenario read the folder, so a
/// new file needs no list.
pub(crate) fn scenario_names(folder: &str) -> Vec<String> {
    let dir = root().join("sims").join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml"))
        .filter_map(|path| Some(path.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// A small seeded generator (xorshift64*): tests stay deterministic without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `items`.
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
