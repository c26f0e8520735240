//! The HTML report opened in a real headless browser (Chromium), checked for what a person
//! sees: one arrow per frame of the log, the fault bands, the violation marker, and a
//! screenshot with something drawn on it.
//!
//! Chromium is found at `$HUBSIM_CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`
//! (`.ci/run` installs Debian's `chromium` where it is missing). Without one the test fails and
//! says so; `HUBSIM_NO_BROWSER=1` skips it on a machine that cannot have one.

use crate::support::sim_path;
use hubsim::sim::scenario::Scenario;
use hubsim::sim::timeline::Timeline;
use hubsim::sim::{Backend, LogLevel, RunOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HUBSIM_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium on `page` (with `fragment` after `#`, if any) with `args` (a fresh
/// profile, no background traffic).
fn headless(
    browser: &Path,
    profile: &Path,
    args: &[&str],
    page: &Path,
    fragment: &str,
) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .expect("chromium starts")
}

/// The DOM without the page's own `<script>` and `<style>` text, which spells the class names
/// the drawing uses: what remains is what was drawn.
fn without_code(dom: &str) -> String {
    let mut kept = String::with_capacity(dom.len());
    let mut rest = dom;
    while let Some(start) = ["<script", "<style"]
        .iter()
        .filter_map(|tag| rest.find(tag).map(|at| (at, *tag)))
        .min()
    {
        let (at, tag) = start;
        kept.push_str(&rest[..at]);
        let close = format!("</{}>", &tag[1..]);
        match rest[at..].find(&close) {
            Some(end) => rest = &rest[at + end + close.len()..],
            None => return kept,
        }
    }
    kept.push_str(rest);
    kept
}

fn timeline(name: &str, seed: u64) -> Timeline {
    let scenario = Scenario::load(&sim_path(name)).expect("loads");
    let options = RunOptions {
        backend: Backend::Events,
        seed,
        log: LogLevel::Frames,
        ..RunOptions::default()
    };
    hubsim::sim::run(&scenario, &options)
        .expect("runs")
        .timeline
        .expect("a log was kept")
}

/// The value of `name="..."` on the page's `<body>`.
fn body_attribute<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let start = body.find(&format!("{name}=\""))? + name.len() + 2;
    Some(&body[start..start + body[start..].find('"')?])
}

#[test]
fn the_report_draws_every_frame_the_faults_and_the_violation_in_a_browser() {
    if std::env::var_os("HUBSIM_NO_BROWSER").is_some() {
        eprintln!("HUBSIM_NO_BROWSER is set: the browser test is skipped");
        return;
    }
    let Some(browser) = chromium() else {
        panic!(
            "no Chromium: install it (Debian: apt-get install chromium), point HUBSIM_CHROMIUM at \
             it, or set HUBSIM_NO_BROWSER=1 to skip this test"
        );
    };
    let dir = std::env::temp_dir().join(format!("hubsim-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, seed, bands) in [
        ("net_hole_cursor_skip", 0, &[][..]),
        ("net_partition_discussion", 0, &["partition", "turn"][..]),
        ("net_crash_workflow", 0, &["crash", "turn"][..]),
    ] {
        let seen = timeline(name, seed);
        let html = hubsim::report::html::page(&seen);
        assert!(
            !html.contains(" src=") && !html.contains("href=\"http"),
            "{name}: the page loads something from elsewhere"
        );
        let page = dir.join(format!("{name}.html"));
        std::fs::write(&page, &html).expect("writes");
        let profile = dir.join(format!("profile-{name}"));
        // `#all` draws every row and arrow, not only those in view.
        let output = headless(&browser, &profile, &["--dump-dom"], &page, "#all");
        let dom = without_code(&String::from_utf8_lossy(&output.stdout));
        assert!(
            output.status.success() && dom.contains("id=\"diagram\""),
            "{name}: chromium did not render the page: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let frames = seen.frame_count();
        assert!(frames > 20, "{name}: {frames} frames");
        let arrows = dom.matches("<g class=\"arrow").count();
        assert_eq!(arrows, frames, "{name}: one arrow per frame of the log");
        assert_eq!(
            body_attribute(&dom, "data-arrows"),
            Some(frames.to_string().as_str())
        );
        let dropped = seen
            .entries
            .iter()
            .filter(|e| e.kind == hubsim::sim::timeline::Kind::Dropped)
            .count();
        assert_eq!(
            dom.matches("class=\"drop-x\"").count(),
            dropped,
            "{name}: each dropped frame is marked where it died"
        );
        for band in bands {
            assert!(
                dom.contains(&format!("class=\"band {band}\"")),
                "{name}: no {band} band"
            );
        }
        let violations = seen.violations.len();
        assert_eq!(
            dom.matches("class=\"violation-marker\"").count(),
            violations,
            "{name}: one marker per violation"
        );
        if name == "net_hole_cursor_skip" {
            assert_eq!(violations, 1);
            // The page opens on the violation: its message and what it concerns.
            assert!(dom.contains("VIOLATION delivery/cursor_skipped"));
            assert!(dom.contains("sent receipt &lt;env:c1#4&gt; ack"));
        }
        assert!(
            dom.contains("<h2>Channels at the end</h2>") && dom.contains("<h2>Invariants</h2>")
        );

        // Without `#all`, a short window draws the arrows in view only.
        let output = headless(
            &browser,
            &profile,
            &["--window-size=1000,300", "--dump-dom"],
            &page,
            "",
        );
        let dom = without_code(&String::from_utf8_lossy(&output.stdout));
        let drawn = dom.matches("<g class=\"arrow").count();
        assert!(
            drawn > 0 && drawn < frames,
            "{name}: {drawn} of {frames} arrows drawn in a short window"
        );
        assert_eq!(
            body_attribute(&dom, "data-arrows-drawn"),
            Some(drawn.to_string().as_str())
        );

        let shot = dir.join(format!("{name}.png"));
        let output = headless(
            &browser,
            &profile,
            &[
                "--window-size=1400,1000",
                &format!("--screenshot={}", shot.display()),
            ],
            &page,
            "",
        );
        assert!(output.status.success(), "{name}: no screenshot");
        let (colours, inked) = look_at(&shot);
        assert!(
            colours >= 8 && inked > 0.02,
            "{name}: the screenshot looks blank ({colours} colours, {:.1}% not white)",
            inked * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PNG's distinct colours and the share of its pixels that are not white.
fn look_at(png: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(png).expect("screenshot written"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut colours = std::collections::BTreeSet::new();
    let mut inked = 0usize;
    let mut total = 0usize;
    for pixel in pixels.chunks(channels) {
        let rgb = (pixel[0], pixel[1 % channels], pixel[2 % channels]);
        colours.insert(rgb);
        total += 1;
        if rgb != (255, 255, 255) {
            inked += 1;
        }
    }
    (colours.len(), inked as f64 / total.max(1) as f64)
}

#[test]
fn check_writes_a_report_per_failing_seed_and_an_index_beside_a_json_report() {
    let dir = std::env::temp_dir().join(format!("hubsim-check-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let json = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(crate::support::root())
        .args([
            "check",
            "tests/data/bugs/drop_dispatch.yaml",
            "--inject-bug",
            "drop_dispatch",
            "--seeds",
            "5",
            "--report",
            "html",
        ])
        .arg(dir.join("html"))
        .args(["--report", "json"])
        .arg(&json)
        .output()
        .expect("hubsim runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(3 failing seeds drawn)"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("a JSON report"))
            .expect("JSON");
    assert_eq!(
        report["scenarios"][0]["failures"]
            .as_array()
            .expect("failures")
            .len(),
        5
    );
    let index = std::fs::read_to_string(dir.join("html/index.html")).expect("an index");
    for seed in 0..3 {
        let file = format!("drop_dispatch-seed-{seed}.html");
        assert!(index.contains(&format!("href=\"{file}\"")), "{index}");
        let page = std::fs::read_to_string(dir.join("html").join(&file)).expect("a page");
        assert!(page.contains("delivery/missing"), "{file} has no violation");
    }
    assert!(!dir.join("html/drop_dispatch-seed-3.html").exists());
    assert!(
        index.contains("2 further failing seeds are not drawn"),
        "{index}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The text between `<script ... id="ID">` and `</script>` in `html`.
fn script_text<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\">");
    let start = html.find(&open).expect("the script is there") + open.len();
    let end = start + html[start..].find("</script>").expect("closed");
    &html[start..end]
}

#[test]
fn the_page_keeps_each_frame_json_once_on_its_own_line() {
    let seen = timeline("net_hole_cursor_skip", 0);
    let html = hubsim::report::html::page(&seen);
    let data: serde_json::Value =
        serde_json::from_str(script_text(&html, "run-data")).expect("the data is JSON");
    let lines: Vec<&str> = script_text(&html, "frame-data").lines().collect();
    let with_json: Vec<_> = seen
        .entries
        .iter()
        .filter(|e| e.frame.as_ref().is_some_and(|f| !f.json.is_empty()))
        .collect();
    assert_eq!(lines.len(), with_json.len());
    assert_eq!(lines.len(), seen.frame_count(), "each frame's JSON, once");
    let entries = data["entries"].as_array().expect("entries");
    for entry in &with_json {
        let line = entries[entry.n - 1]["frame"]["line"]
            .as_u64()
            .expect("a line number") as usize;
        let frame = entry.frame.as_ref().expect("a frame");
        let parsed: serde_json::Value = serde_json::from_str(lines[line]).expect("JSON");
        assert_eq!(
            parsed,
            serde_json::from_str::<serde_json::Value>(&frame.json).expect("JSON"),
            "#{}: line {line} is another frame",
            entry.n
        );
    }
    assert!(!script_text(&html, "frame-data").contains('<'));
}
