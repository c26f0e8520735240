//! The HTML report of one run: a sequence diagram (a lane for the hub and one per agent, time
//! flowing down, one row per event), frames as arrows coloured by kind, dropped frames marked
//! where they died, fault periods as bands, model turns as bars, violations marked at the event
//! that broke them; a click shows an event's frame JSON; each channel's WAL and the invariant
//! summary below. The page is one file: its style, script and data are inline, and it draws
//! itself in the browser from the [`Timeline`] it embeds as JSON.

use crate::sim::timeline::Timeline;
use serde_json::Value;
use std::fmt::Write as _;

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// The report of one run.
pub fn page(timeline: &Timeline) -> String {
    let (data, frames) = split_frames(timeline);
    let title = format!(
        "{} seed {} ({})",
        timeline.scenario, timeline.seed, timeline.backend
    );
    let mut out =
        String::with_capacity(data.len() + frames.len() + STYLE.len() + SCRIPT.len() + 4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>hubsim: {}</title>", escape(&title));
    let _ = writeln!(out, "<style>\n{STYLE}</style>\n</head>\n<body>");
    out.push_str("<div id=\"app\"><p id=\"loading\">Drawing the run...</p></div>\n");
    // `<` never appears in either block, so neither can end its script element.
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"run-data\">{}</script>",
        script_safe(&data)
    );
    let _ = writeln!(
        out,
        "<script type=\"text/plain\" id=\"frame-data\">{}</script>",
        script_safe(&frames)
    );
    let _ = writeln!(out, "<script>\n{SCRIPT}</script>\n</body>\n</html>");
    out
}

/// The timeline as JSON without its frames' JSON, and the frames' JSON one per line: each
/// entry's `frame.json` becomes `frame.line`, its line (-1: none). The script parses the
/// timeline at once and reads a frame's line only when it is shown, so the page opens in the
/// time it takes to parse the events, however large the frames are.
fn split_frames(timeline: &Timeline) -> (String, String) {
    let mut value = serde_json::to_value(timeline).unwrap_or_default();
    let mut frames = String::new();
    let mut lines = 0i64;
    let entries = value.get_mut("entries").and_then(Value::as_array_mut);
    for entry in entries.into_iter().flatten() {
        let Some(frame) = entry.get_mut("frame").and_then(Value::as_object_mut) else {
            continue;
        };
        let line = match frame.remove("json") {
            Some(Value::String(json)) if !json.is_empty() => {
                // Compact JSON has no raw line break; a cut frame's text keeps to one line too.
                frames.push_str(&json.replace('\n', " "));
                frames.push('\n');
                lines += 1;
                lines - 1
            }
            _ => -1,
        };
        frame.insert("line".to_string(), Value::from(line));
    }
    (
        serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_string()),
        frames,
    )
}

/// One failing run an index page links.
#[derive(Clone, Debug)]
pub struct IndexRow {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The report's file name, relative to the index.
    pub file: String,
    /// What failed (violation kinds, or the failure's first line).
    pub what: String,
    /// The command that reproduces it.
    pub repro: String,
}

/// An index page linking each failing run's report.
pub fn index(title: &str, rows: &[IndexRow], note: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(
        out,
        "<style>\n{STYLE}</style>\n</head>\n<body class=\"index\">"
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(title));
    if !note.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", escape(note));
    }
    if rows.is_empty() {
        out.push_str("<p>No failing seed.</p>\n");
    } else {
        out.push_str(
            "<table class=\"wal\"><thead><tr><th>scenario</th><th>seed</th><th>failure</th><th>repro</th></tr></thead><tbody>\n",
        );
        for row in rows {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><a href=\"{}\">seed {}</a></td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&row.scenario),
                escape(&row.file),
                row.seed,
                escape(&row.what),
                escape(&row.repro)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// `text` with HTML's special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// JSON that can sit inside a `<script>` element: every `<` written as `\u003c` (the same
/// string to a JSON parser).
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_its_script_element() {
        let json =
            serde_json::to_string(&serde_json::json!({"text": "</script><b>"})).expect("encodes");
        let safe = script_safe(&json);
        assert!(!safe.contains('<'));
        let back: serde_json::Value = serde_json::from_str(&safe).expect("decodes");
        assert_eq!(back["text"], "</script><b>");
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
