//! Per-agent rules (access and limits), ag2's `parse_duration`, and `fnmatchcase` globs.
//!
//! Field for field ag2's `Rule`. Several fields are stored and never enforced, as in ag2
//! (`channel_types`, `rate`, `task_ttl_default`, `inbox.overflow`); the conformance notes in the
//! README list them.

use crate::json::py_str_repr;
use crate::proto::HubError;

/// A duration as a rule or a channel open gives it: ag2 accepts an int (seconds) or a string.
#[derive(Clone, Debug, PartialEq)]
pub enum DurationSpec {
    /// Seconds (Python `int`; `True` is 1).
    Seconds(i64),
    /// `"30s"`, `"15m"`, `"2h"`, `"1d"`, `"90"`, `""`, parsed by [`parse_duration`].
    Text(String),
    /// A float, which ag2 refuses with `TypeError` (unless it is `0.0`, which is falsy).
    Float(f64),
}

/// Glob patterns, matched against agent names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessBlock {
    /// Senders whose name matches may reach this agent (checked at dispatch and at open).
    pub inbound_from: Vec<String>,
    /// Recipients this agent may address explicitly (broadcasts skip the check).
    pub outbound_to: Vec<String>,
    /// `channel_types.initiate`: stored, never enforced.
    pub initiate: Vec<String>,
    /// `channel_types.accept`: stored, never enforced.
    pub accept: Vec<String>,
}

/// The inbox cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxBlock {
    /// Cap on substantive envelopes pending for this agent; 0 means unlimited.
    pub max_pending: i64,
    /// `"reject" | "drop_oldest" | "drop_newest"`: stored; ag2 always rejects.
    pub overflow: String,
    /// The pressure signal's threshold: `None` means 80% of the cap, `<= 0` disables it.
    pub high_water: Option<i64>,
}

/// Concurrency caps and default TTLs.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsBlock {
    /// Cap on the creator's PENDING and ACTIVE channels at `create_channel`; 0 disables.
    pub max_concurrent_channels: i64,
    /// Cap on the owner's non-terminal tasks at the first `observe_task`; 0 disables.
    pub max_concurrent_tasks: i64,
    /// The TTL of channels this agent creates without an explicit `ttl`.
    pub channel_ttl_default: DurationSpec,
    /// Stored, never read (as in ag2).
    pub task_ttl_default: DurationSpec,
    /// `rate.per_minute`: stored, never enforced.
    pub rate_per_minute: i64,
    /// `rate.burst`: stored, never enforced.
    pub rate_burst: i64,
    /// A post with `depth` above this is refused; 0 disables.
    pub delegation_depth: i64,
    /// The inbox cap.
    pub inbox: InboxBlock,
}

/// An agent's rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Bumped by `set_rule` to the previous version plus one.
    pub version: i64,
    /// Who may talk to whom.
    pub access: AccessBlock,
    /// Caps and defaults.
    pub limits: LimitsBlock,
}

impl Default for Rule {
    fn default() -> Rule {
        let all = || vec!["*".to_string()];
        Rule {
            version: 1,
            access: AccessBlock {
                inbound_from: all(),
                outbound_to: all(),
                initiate: all(),
                accept: all(),
            },
            limits: LimitsBlock {
                max_concurrent_channels: 0,
                max_concurrent_tasks: 0,
                channel_ttl_default: DurationSpec::Text("2h".to_string()),
                task_ttl_default: DurationSpec::Text("15m".to_string()),
                rate_per_minute: 0,
                rate_burst: 0,
                delegation_depth: 5,
                inbox: InboxBlock {
                    max_pending: 1000,
                    overflow: "reject".to_string(),
                    high_water: None,
                },
            },
        }
    }
}

/// ag2's `parse_duration`: seconds from an int, `""` (0), `"<int><s|m|h|d>"` or `"<int>"`.
///
/// # Errors
/// `ValueError` for text Python's `int()` refuses (`"1.5h"`, `"4H"`, `"2w"`), `TypeError` for a
/// non-zero float, with CPython's messages.
pub fn parse_duration(spec: &DurationSpec) -> Result<i64, HubError> {
    match spec {
        DurationSpec::Seconds(seconds) => Ok(*seconds),
        DurationSpec::Float(value) if *value == 0.0 => Ok(0),
        DurationSpec::Float(_) => Err(HubError::type_error("'float' object is not subscriptable")),
        DurationSpec::Text(text) if text.is_empty() => Ok(0),
        DurationSpec::Text(text) => {
            let last = text.chars().last().expect("text is not empty");
            let unit = match last {
                's' => Some(1),
                'm' => Some(60),
                'h' => Some(3600),
                'd' => Some(86_400),
                _ => None,
            };
            match unit {
                Some(unit) => {
                    let value = python_int(&text[..text.len() - 1])?;
                    value.checked_mul(unit).ok_or_else(overflow)
                }
                None => python_int(text),
            }
        }
    }
}

fn overflow() -> HubError {
    HubError::new(crate::proto::ErrorKind::Other, "date value out of range")
}

/// Python's `int(text)` for base 10: surrounding whitespace, a sign, and single underscores
/// between digits are allowed.
fn python_int(text: &str) -> Result<i64, HubError> {
    let invalid = || {
        HubError::value_error(format!(
            "invalid literal for int() with base 10: {}",
            py_str_repr(text)
        ))
    };
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(invalid());
    }
    let mut value: i64 = 0;
    for ch in digits.chars().filter(|ch| *ch != '_') {
        let digit = ch.to_digit(10).ok_or_else(invalid)?;
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(digit)))
            .ok_or_else(overflow)?;
    }
    Ok(if negative { -value } else { value })
}

/// Python's `fnmatch.fnmatchcase`: `*`, `?`, `[seq]`, `[!seq]`, case-sensitive.
pub fn fnmatchcase(name: &str, pattern: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    glob_match(&name, &pattern)
}

/// True when `name` matches any of `patterns`.
pub fn matches_any(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|pattern| fnmatchcase(name, pattern))
}

fn glob_match(name: &[char], pattern: &[char]) -> bool {
    // Iterative matcher with single-star backtracking; classes are parsed in place.
    let (mut n, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                '*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                '?' => {
                    n += 1;
                    p += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(pattern, p, name[n]) {
                        if matched {
                            n += 1;
                            p = next;
                            continue;
                        }
                    } else if name[n] == '[' {
                        n += 1;
                        p += 1;
                        continue;
                    }
                }
                literal if literal == name[n] => {
                    n += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((star_p, star_n)) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|ch| *ch == '*')
}

/// Matches `ch` against the class starting at `pattern[start] == '['`. Returns whether it
/// matched and the index after the class, or `None` when the `[` has no closing `]` (then it is a
/// literal, as in `fnmatch.translate`).
fn match_class(pattern: &[char], start: usize, ch: char) -> Option<(bool, usize)> {
    let mut idx = start + 1;
    let negate = pattern.get(idx) == Some(&'!');
    if negate {
        idx += 1;
    }
    // A `]` right after `[` or `[!` is a member, not the end.
    if pattern.get(idx) == Some(&']') {
        idx += 1;
    }
    while idx < pattern.len() && pattern[idx] != ']' {
        idx += 1;
    }
    if idx >= pattern.len() {
        return None;
    }
    let body_start = start + 1 + usize::from(negate);
    let body = &pattern[body_start..idx];
    let mut matched = false;
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            if body[k] <= ch && ch <= body[k + 2] {
                matched = true;
            }
            k += 3;
        } else {
            if body[k] == ch {
                matched = true;
            }
            k += 1;
        }
    }
    Some((matched != negate, idx + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_ag2() {
        let text = |s: &str| parse_duration(&DurationSpec::Text(s.to_string()));
        assert_eq!(text("60s"), Ok(60));
        assert_eq!(text("2h"), Ok(7200));
        assert_eq!(text(" 4h"), Ok(14_400));
        assert_eq!(text("1_0s"), Ok(10));
        assert_eq!(text("90"), Ok(90));
        assert_eq!(text(""), Ok(0));
        assert_eq!(text("-5m"), Ok(-300));
        let err = text("1.5h").expect_err("1.5h is refused");
        assert_eq!(
            err.to_string(),
            "ValueError: invalid literal for int() with base 10: '1.5'"
        );
        assert_eq!(
            text("4H").expect_err("4H").message,
            "invalid literal for int() with base 10: '4H'"
        );
        assert!(text("1__0s").is_err());
        assert_eq!(parse_duration(&DurationSpec::Float(0.0)), Ok(0));
        assert_eq!(
            parse_duration(&DurationSpec::Float(1.5))
                .expect_err("float")
                .type_name,
            "TypeError"
        );
    }

    #[test]
    fn globs_match_like_fnmatchcase() {
        assert!(fnmatchcase("bob", "*"));
        assert!(fnmatchcase("bob", "b*"));
        assert!(fnmatchcase("bob", "b?b"));
        assert!(!fnmatchcase("Bob", "b*"));
        assert!(fnmatchcase("carol", "[a-c]arol"));
        assert!(!fnmatchcase("carol", "[!a-c]arol"));
        assert!(fnmatchcase("a[b", "a[b"));
        assert!(fnmatchcase("agent-7", "agent-*7"));
        assert!(!fnmatchcase("alice", "bob"));
        assert!(fnmatchcase("", "*"));
        assert!(!fnmatchcase("", "?"));
    }
}
