//! `hubsim check`'s summary table and its JUnit and JSON reports.

use clap::ValueEnum;
use hubsim::sim::scenario::SeedRange;
use hubsim::sim::sweep::Tally;
use serde_json::{json, Value};
use std::error::Error;
use std::path::{Path, PathBuf};

/// A report file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// JUnit XML, one test case per scenario (CI dashboards read it).
    Junit,
    /// JSON with every failure and its repro line.
    Json,
    /// A folder: the HTML report of the first failing seeds of each scenario, and an
    /// `index.html` linking them.
    Html,
}

/// One scenario's merged result.
pub(crate) struct ScenarioResult {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) seeds: SeedRange,
    /// Invariants selected.
    pub(crate) invariants: usize,
    pub(crate) tally: Tally,
    /// Its in-process trace was compared with a reference trace.
    pub(crate) compared: bool,
    /// Time spent on it, summed over threads.
    pub(crate) seconds: f64,
}

impl ScenarioResult {
    fn known(&self) -> u64 {
        self.tally.known.values().sum()
    }
}

/// The table `hubsim check` ends with.
pub(crate) fn print_summary(results: &[ScenarioResult], elapsed: f64, jobs: usize) {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    out!(
        "{:<width$} {:>11} {:>11} {:>10} {:>6} {:>8} {:>9}",
        "scenario",
        "seeds",
        "invariants",
        "violations",
        "known",
        "failures",
        "time"
    );
    let (mut seeds, mut checks, mut violations, mut known, mut failures) = (0, 0, 0, 0, 0);
    let mut compared = 0;
    for result in results {
        let tally = &result.tally;
        out!(
            "{:<width$} {:>11} {:>11} {:>10} {:>6} {:>8} {:>8.2}s",
            result.name,
            result.seeds.to_string(),
            tally.checks,
            tally.violations,
            result.known(),
            tally.failures.len(),
            result.seconds
        );
        seeds += tally.runs;
        checks += tally.checks;
        violations += tally.violations;
        known += result.known();
        failures += tally.failures.len();
        compared += usize::from(result.compared);
    }
    out!(
        "{} scenarios ({} failed; {compared} compared with reference traces), {seeds} seeds, \
         {checks} invariant checks, {violations} violations, {known} known violations, \
         {failures} failures; wall {elapsed:.2}s on {jobs} threads",
        results.len(),
        results
            .iter()
            .filter(|r| !r.tally.failures.is_empty())
            .count(),
    );
}

/// Seeds a row of the table by kind names before `…`.
const FIRST_SEEDS: usize = 3;

/// One row of the table by kind: a scenario's failures of one kind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KindRow<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) count: usize,
    /// Its distinct seeds, in seed order.
    pub(crate) seeds: Vec<u64>,
}

impl KindRow<'_> {
    /// The first [`FIRST_SEEDS`] seeds, `…` if there are more; `-` for failures of no seed.
    fn first_seeds(&self) -> String {
        if self.seeds.is_empty() {
            return "-".to_string();
        }
        let mut text: Vec<String> = self
            .seeds
            .iter()
            .take(FIRST_SEEDS)
            .map(u64::to_string)
            .collect();
        if self.seeds.len() > FIRST_SEEDS {
            text.push("…".to_string());
        }
        text.join(", ")
    }
}

/// Each scenario's failures by kind, kinds in the order they first failed.
pub(crate) fn kind_rows(results: &[ScenarioResult]) -> Vec<KindRow<'_>> {
    let mut rows: Vec<KindRow<'_>> = Vec::new();
    for result in results {
        let first = rows.len();
        for failure in &result.tally.failures {
            let at = rows[first..]
                .iter()
                .position(|row| row.kind == failure.kind)
                .map(|idx| first + idx);
            let row = match at {
                Some(idx) => &mut rows[idx],
                None => {
                    rows.push(KindRow {
                        scenario: &result.name,
                        kind: &failure.kind,
                        count: 0,
                        seeds: Vec::new(),
                    });
                    let last = rows.len() - 1;
                    &mut rows[last]
                }
            };
            row.count += 1;
            if let Some(seed) = failure.seed {
                if let Err(idx) = row.seeds.binary_search(&seed) {
                    row.seeds.insert(idx, seed);
                }
            }
        }
    }
    rows
}

/// The table of failures by kind that follows the failures (on stderr, with them): per scenario
/// and kind, how many and the first seeds that show it. Nothing when nothing failed.
pub(crate) fn print_kinds(results: &[ScenarioResult]) {
    let rows = kind_rows(results);
    if rows.is_empty() {
        return;
    }
    let scenario_width = rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let kind_width = rows.iter().map(|r| r.kind.len()).max().unwrap_or(0).max(4);
    eprintln!(
        "{:<scenario_width$} {:<kind_width$} {:>8}  first seeds",
        "scenario", "kind", "failures"
    );
    for row in &rows {
        eprintln!(
            "{:<scenario_width$} {:<kind_width$} {:>8}  {}",
            row.scenario,
            row.kind,
            row.count,
            row.first_seeds()
        );
    }
}

/// Writes the report.
pub(crate) fn write(
    format: Format,
    path: &Path,
    results: &[ScenarioResult],
    elapsed: f64,
) -> Result<(), Box<dyn Error>> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&json_report(results, elapsed))? + "\n",
        Format::Junit => junit(results, elapsed),
        Format::Html => return Err("an HTML report is a folder of runs (check::write_html)".into()),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn json_report(results: &[ScenarioResult], elapsed: f64) -> Value {
    let scenarios: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "file": r.file.display().to_string(),
                "seeds": r.seeds.to_string(),
                "runs": r.tally.runs,
                "invariants": r.invariants,
                "invariant_checks": r.tally.checks,
                "violations": r.tally.violations,
                "known_violations": r.tally.known,
                "reached": r.tally.reached,
                "compared_with_reference": r.compared,
                "seconds": r.seconds,
                "failures": r.tally.failures.iter().map(|f| json!({
                    "kind": f.kind,
                    "seed": f.seed,
                    "what": f.what,
                    "repro": f.repro,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "hubsim": env!("CARGO_PKG_VERSION"),
        "wall_seconds": elapsed,
        "scenarios": scenarios,
    })
}

fn junit(results: &[ScenarioResult], elapsed: f64) -> String {
    let failed = results
        .iter()
        .filter(|r| !r.tally.failures.is_empty())
        .count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"hubsim check\" tests=\"{}\" failures=\"{failed}\" time=\"{elapsed:.3}\">\n",
        results.len()
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"hubsim\" tests=\"{}\" failures=\"{failed}\" time=\"{elapsed:.3}\">\n",
        results.len()
    ));
    for r in results {
        xml.push_str(&format!(
            "    <testcase classname=\"sims\" name=\"{}\" time=\"{:.3}\"",
            escape(&r.name),
            r.seconds
        ));
        if r.tally.failures.is_empty() {
            xml.push_str(" />\n");
            continue;
        }
        xml.push_str(">\n");
        let first = &r.tally.failures[0];
        let body: Vec<String> = r
            .tally
            .failures
            .iter()
            .map(|f| format!("{}\n    repro: {}", f.what, f.repro))
            .collect();
        xml.push_str(&format!(
            "      <failure message=\"{}\">{}</failure>\n",
            escape(&first.what),
            escape(&body.join("\n"))
        ));
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// XML text and attribute escaping; characters XML 1.0 forbids become `?`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('?'),
            c => out.push(c),
        }
    }
    out
}
