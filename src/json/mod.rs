//! JSON values printed the way CPython prints them.
//!
//! The oracle's traces are `json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)`, and
//! ag2's error messages embed Python `repr()`s of strings, lists and dicts. This module owns both
//! spellings so every byte hubsim prints can match the reference. It knows nothing of the hub.

use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

/// Prints `value` as `json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)` does,
/// followed by a newline.
pub fn to_pretty_python(value: &Value) -> String {
    let mut out = String::with_capacity(4096);
    write_pretty(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_pretty(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                newline_indent(out, indent + 2);
                write_pretty(out, item, indent + 2);
            }
            newline_indent(out, indent);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (idx, (key, item)) in sorted_entries(map).into_iter().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                newline_indent(out, indent + 2);
                write_json_string(out, key);
                out.push_str(": ");
                write_pretty(out, item, indent + 2);
            }
            newline_indent(out, indent);
            out.push('}');
        }
        _ => write_compact(out, value, false, true),
    }
}

/// Prints `value` as `json.dumps(value, sort_keys=True)` does: `", "` and `": "` separators,
/// ASCII escapes (`ensure_ascii=True`), keys sorted at every level. This is the form of ag2's WAL
/// lines and audit records.
pub fn to_compact_python(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_compact(&mut out, value, true, true);
    out
}

/// Prints `value` as `json.dumps(value)` does: like [`to_compact_python`] but keys stay in
/// insertion order. This is the form of ag2's wire frames.
pub fn to_compact_python_unsorted(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_compact(&mut out, value, true, false);
    out
}

/// Appends `value` as `to_compact_python_unsorted` writes it.
pub fn write_compact_python_unsorted(out: &mut String, value: &Value) {
    write_compact(out, value, true, false);
}

fn write_compact(out: &mut String, value: &Value, ascii: bool, sort: bool) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string_escaped(out, text, ascii),
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                write_compact(out, item, ascii, sort);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let entries = if sort {
                sorted_entries(map)
            } else {
                map.iter().collect()
            };
            for (idx, (key, item)) in entries.into_iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                write_string_escaped(out, key, ascii);
                out.push_str(": ");
                write_compact(out, item, ascii, sort);
            }
            out.push('}');
        }
    }
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // Rust orders `str` by UTF-8 bytes, which is Python's order of code points.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn newline_indent(out: &mut String, indent: usize) {
    out.push('\n');
    for _ in 0..indent {
        out.push(' ');
    }
}

fn write_number(out: &mut String, number: &Number) {
    if let Some(int) = number.as_i64() {
        let _ = write!(out, "{int}");
    } else if let Some(int) = number.as_u64() {
        let _ = write!(out, "{int}");
    } else if let Some(float) = number.as_f64() {
        out.push_str(&py_float_repr(float));
    }
}

/// Appends `text` as `json.dumps(text)` prints it (ASCII escaping), as
/// [`write_compact_python_unsorted`] writes a string.
pub fn write_py_json_string(out: &mut String, text: &str) {
    write_string_escaped(out, text, true);
}

/// Appends `text` as a JSON string literal (`ensure_ascii=False` escaping).
pub fn write_json_string(out: &mut String, text: &str) {
    write_string_escaped(out, text, false);
}

fn write_string_escaped(out: &mut String, text: &str, ascii: bool) {
    let plain =
        |byte: &u8| *byte >= 0x20 && *byte != b'"' && *byte != b'\\' && (!ascii || *byte <= 0x7e);
    if text.as_bytes().iter().all(plain) {
        out.reserve(text.len() + 2);
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
    out.reserve(text.len() + 8);
    out.push('"');
    let mut run = 0;
    for (idx, ch) in text.char_indices() {
        let escape = match ch {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => true,
            ch if (ch as u32) < 0x20 => true,
            ch => ascii && (ch as u32) > 0x7e,
        };
        if !escape {
            continue;
        }
        out.push_str(&text[run..idx]);
        run = idx + ch.len_utf8();
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push_str(&text[run..]);
    out.push('"');
}

/// CPython's `repr(float)`: the shortest round-tripping digits, in positional notation for
/// exponents from -4 to 15 and scientific notation (`1e+16`, `1e-05`) outside that range.
pub fn py_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_string();
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde<exp>`.
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..(-point) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if point as usize >= digits.len() {
            out.push_str(&digits);
            for _ in 0..(point as usize - digits.len()) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    }
    out
}

/// CPython's `repr(str)`: single quotes unless the text holds a single quote and no double quote.
pub fn py_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if ch == quote => {
                out.push('\\');
                out.push(ch);
            }
            ch if (ch as u32) < 0x20 || ch as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push(quote);
    out
}

/// CPython's `repr()` of the object `json.loads` would build from `value`: `None`, `True`,
/// `'text'`, `[1, 2]`, `{'k': 'v'}` (dicts keep their insertion order).
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_py_repr(&mut out, value);
    out
}

fn write_py_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => out.push_str(&py_str_repr(text)),
        Value::Array(items) => {
            out.push('[');
            for (idx, item) in items.iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                write_py_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (idx, (key, item)) in map.iter().enumerate() {
                if idx > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_str_repr(key));
                out.push_str(": ");
                write_py_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// `str()` of the object `json.loads` would build from `value`: a string is itself, anything
/// else prints as its `repr()`.
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => py_repr(other),
    }
}

/// `type(obj).__name__` of the object `json.loads` would build from `value`.
pub fn py_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// CPython's "missing N required positional argument(s): 'a', 'b' and 'c'".
pub fn py_missing_args(function: &str, missing: &[&str]) -> String {
    let names: Vec<String> = missing.iter().map(|name| py_str_repr(name)).collect();
    let listed = match names.len() {
        1 => names[0].clone(),
        2 => format!("{} and {}", names[0], names[1]),
        _ => format!(
            "{}, and {}",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        ),
    };
    let plural = if missing.len() == 1 {
        "argument"
    } else {
        "arguments"
    };
    format!(
        "{function} missing {} required positional {plural}: {listed}",
        missing.len()
    )
}

/// Python truthiness of a JSON-built object: `None`, `False`, `0`, `0.0`, `""`, `[]` and `{}` are
/// false.
pub fn py_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|float| float != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Python `==` between two JSON-built objects: `1 == 1.0` and `True == 1` hold.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    fn as_number(value: &Value) -> Option<f64> {
        match value {
            Value::Bool(flag) => Some(f64::from(u8::from(*flag))),
            Value::Number(number) => number.as_f64(),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests;
