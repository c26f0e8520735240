//! Reading request params the way ag2's Python reads its `params` dict: `params["k"]` raises
//! `KeyError('k')`, `params.get("k")` gives `None`, subscripting a non-dict raises CPython's
//! `TypeError`, and slice bounds must be ints.

use crate::hub::wire::hashable;
use crate::json::py_type_name;
use crate::proto::{ErrorKind, HubError};
use serde_json::{Map, Value};

/// A request's `params` object.
#[derive(Clone, Copy, Debug)]
pub(super) struct Params<'a>(pub(super) &'a Map<String, Value>);

impl<'a> Params<'a> {
    /// `params[key]`.
    pub(super) fn req(self, key: &str) -> Result<&'a Value, HubError> {
        self.0.get(key).ok_or_else(|| HubError::key(key))
    }

    /// `params.get(key)`, with an explicit `null` read as absent (both are Python's `None`).
    pub(super) fn get(self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|value| !value.is_null())
    }

    /// `params.get(key, default)`: only a missing key takes the default; `null` stays `None`.
    pub(super) fn get_or(self, key: &str, default: &'a Value) -> &'a Value {
        self.0.get(key).unwrap_or(default)
    }
}

/// `value[key]` for a string key.
pub(super) fn subscript<'a>(value: &'a Value, key: &str) -> Result<&'a Value, HubError> {
    match value {
        Value::Object(map) => map.get(key).ok_or_else(|| HubError::key(key)),
        Value::Array(_) => Err(HubError::type_error(
            "list indices must be integers or slices, not str",
        )),
        Value::String(_) => Err(HubError::type_error(
            "string indices must be integers, not 'str'",
        )),
        other => Err(HubError::type_error(format!(
            "'{}' object is not subscriptable",
            py_type_name(other)
        ))),
    }
}

/// `value.get(key)`, with `null` read as absent.
pub(super) fn dict_get<'a>(value: &'a Value, key: &str) -> Result<Option<&'a Value>, HubError> {
    match value {
        Value::Object(map) => Ok(map.get(key).filter(|value| !value.is_null())),
        other => Err(HubError::new(
            ErrorKind::Attribute,
            format!("'{}' object has no attribute 'get'", py_type_name(other)),
        )),
    }
}

/// A slice bound: `None`, an int (a bool counts as one), or CPython's `TypeError`.
pub(super) fn slice_index(value: &Value) -> Result<Option<i64>, HubError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(flag) => Ok(Some(i64::from(*flag))),
        // Python ints are unbounded; a bound past i64 clamps exactly like one at i64::MAX.
        Value::Number(number) if number.is_u64() => Ok(Some(number.as_i64().unwrap_or(i64::MAX))),
        Value::Number(number) if number.is_i64() => Ok(number.as_i64()),
        _ => Err(HubError::type_error(
            "slice indices must be integers or None or have an __index__ method",
        )),
    }
}

/// The value as a string usable as a key, after Python's hashability check.
pub(super) fn key_text(value: &Value) -> Result<Option<&str>, HubError> {
    Ok(hashable(value)?.as_str())
}

/// ag2's `_TASK_ID_RE.fullmatch`: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub(super) fn is_task_id(text: &str) -> bool {
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|ch| ch.is_ascii_alphanumeric());
    first_ok
        && text.chars().count() <= 128
        && chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
}

/// ag2's `_wire_task_ids` check: `params.task_id`, `params.metadata.task_id` and
/// `params.envelope.task_id` (the nested ones only when their parent is an object).
pub(super) fn check_task_ids(params: Params<'_>) -> Result<(), HubError> {
    let nested = ["metadata", "envelope"]
        .into_iter()
        .filter_map(|parent| params.0.get(parent).and_then(Value::as_object))
        .filter_map(|parent| parent.get("task_id"));
    for task_id in params.0.get("task_id").into_iter().chain(nested) {
        let valid = match task_id {
            Value::Null => true,
            Value::String(text) => is_task_id(text),
            _ => false,
        };
        if !valid {
            return Err(HubError::protocol(format!(
                "invalid task_id: {}",
                crate::json::py_repr(task_id)
            )));
        }
    }
    Ok(())
}
