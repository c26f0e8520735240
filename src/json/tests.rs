use super::*;
use serde_json::json;

#[test]
fn float_repr_matches_cpython() {
    let cases = [
        (30.0, "30.0"),
        (0.5, "0.5"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123456789.125, "123456789.125"),
        (1.5e300, "1.5e+300"),
        (-0.0, "-0.0"),
    ];
    for (value, expected) in cases {
        assert_eq!(py_float_repr(value), expected, "repr({value:e})");
    }
}

#[test]
fn str_repr_picks_quotes_like_cpython() {
    assert_eq!(py_str_repr("bob"), "'bob'");
    assert_eq!(py_str_repr("o'brien"), "\"o'brien\"");
    assert_eq!(py_str_repr("a'b\"c"), "'a\\'b\"c'");
    assert_eq!(py_str_repr("tab\there\n"), "'tab\\there\\n'");
    assert_eq!(py_str_repr("é"), "'é'");
}

#[test]
fn repr_of_containers_keeps_insertion_order() {
    let value = json!({"z": [1, "a", null, true], "a": {"k": 1.0}});
    assert_eq!(
        py_repr(&value),
        "{'z': [1, 'a', None, True], 'a': {'k': 1.0}}"
    );
}

#[test]
fn pretty_output_sorts_keys_and_indents_by_two() {
    let value = json!({"b": [], "a": {"y": 1, "x": [1, 2]}, "c": {}, "d": "é\u{1}"});
    let expected = "{\n  \"a\": {\n    \"x\": [\n      1,\n      2\n    ],\n    \"y\": 1\n  },\n  \"b\": [],\n  \"c\": {},\n  \"d\": \"é\\u0001\"\n}\n";
    assert_eq!(to_pretty_python(&value), expected);
}

#[test]
fn compact_output_escapes_non_ascii() {
    let value = json!({"text": "é 😀", "n": 2});
    assert_eq!(
        to_compact_python(&value),
        "{\"n\": 2, \"text\": \"\\u00e9 \\ud83d\\ude00\"}"
    );
}

#[test]
fn truthiness_and_equality_follow_python() {
    assert!(!py_truthy(&json!("")));
    assert!(!py_truthy(&json!(0.0)));
    assert!(py_truthy(&json!([0])));
    assert!(py_eq(&json!(1), &json!(1.0)));
    assert!(py_eq(&json!(true), &json!(1)));
    assert!(!py_eq(&json!("1"), &json!(1)));
}
