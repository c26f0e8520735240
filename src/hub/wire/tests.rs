//! Record shapes and `from_dict` refusals, pinned to what ag2 1.2.1 printed for the same input.

use super::*;
use crate::hub::adapter::AdapterKind;
use crate::ids::{AgentId, ChannelId};
use crate::json::to_compact_python_unsorted;
use serde_json::json;

fn dumps(value: &Value) -> String {
    to_compact_python_unsorted(value)
}

#[test]
fn manifests_print_as_ag2s_adapters_declare_them() {
    // `json.dumps(Adapter().manifest.to_dict())` for each built-in adapter.
    let expected = [
        (
            AdapterKind::Consulting,
            r#"{"type": "consulting", "version": 1, "participants": {"min": 2, "max": 2, "roles": ["initiator", "respondent"]}, "knobs_schema": {}, "default_view_policy": "full_transcript", "expectations": [{"name": "acks_within", "on_violation": "auto_close", "params": {"seconds": 30}, "applies_to": null}, {"name": "reply_within", "on_violation": "auto_close", "params": {"seconds": 600}, "applies_to": null}]}"#,
        ),
        (
            AdapterKind::Conversation,
            r#"{"type": "conversation", "version": 1, "participants": {"min": 2, "max": 2, "roles": ["initiator", "respondent"]}, "knobs_schema": {}, "default_view_policy": "windowed_summary", "expectations": [{"name": "max_silence", "on_violation": "audit", "params": {"seconds": 3600}, "applies_to": null}]}"#,
        ),
        (
            AdapterKind::Discussion,
            r#"{"type": "discussion", "version": 1, "participants": {"min": 2, "max": null, "roles": []}, "knobs_schema": {"ordering": "str"}, "default_view_policy": "named_windowed_summary", "expectations": [{"name": "turn_within", "on_violation": "warn", "params": {"seconds": 120}, "applies_to": null}, {"name": "turn_within", "on_violation": "hide", "params": {"seconds": 600}, "applies_to": null}]}"#,
        ),
        (
            AdapterKind::Workflow,
            r#"{"type": "workflow", "version": 1, "participants": {"min": 2, "max": null, "roles": []}, "knobs_schema": {"graph": "TransitionGraph"}, "default_view_policy": "named_windowed_summary", "expectations": [{"name": "turn_within", "on_violation": "warn", "params": {"seconds": 120}, "applies_to": null}, {"name": "turn_within", "on_violation": "auto_close", "params": {"seconds": 600}, "applies_to": null}]}"#,
        ),
    ];
    for (kind, json) in expected {
        assert_eq!(dumps(&manifest_json(kind.manifest())), json, "{kind:?}");
    }
}

#[test]
fn rules_keep_their_ttl_types_and_defaults() {
    let rule =
        rule_from_dict(&json!({"limits": {"task_ttl_default": 1.5, "inbox": {"high_water": 0}}}))
            .expect("parses");
    assert_eq!(
        dumps(&rule_json(&rule)),
        r#"{"version": 1, "access": {"inbound_from": ["*"], "outbound_to": ["*"], "channel_types": {"initiate": ["*"], "accept": ["*"]}}, "limits": {"max_concurrent_channels": 0, "max_concurrent_tasks": 0, "channel_ttl_default": "2h", "task_ttl_default": 1.5, "rate": {"per_minute": 0, "burst": 0}, "delegation_depth": 5, "inbox": {"max_pending": 1000, "overflow": "reject", "high_water": 0}}}"#
    );
    let seconds = rule_from_dict(&json!({"limits": {"channel_ttl_default": 60}})).expect("int ttl");
    assert_eq!(
        seconds.limits.channel_ttl_default,
        DurationSpec::Seconds(60)
    );
}

#[test]
fn passports_keep_what_they_do_not_read_and_never_show_a_claim() {
    let wire = passport_from_dict(&json!({
        "name": "x", "owner": 7, "auth": {"scheme": "api_key", "claim": {"token": "t"}, "issuer": "i"}
    }))
    .expect("parses");
    assert_eq!(
        wire.scheme_and_claim().expect("auth is an object"),
        (&json!("api_key"), &json!({"token": "t"}))
    );
    let passport = wire.into_passport("x".into(), "api_key".into());
    // ag2's `Passport.to_dict()` of the same input, with the claim stripped as the hub sends it.
    assert_eq!(
        dumps(&passport_json(&passport)),
        r#"{"name": "x", "owner": 7, "provider": null, "model": null, "cost": null, "region": null, "auth": {"scheme": "api_key", "issuer": "i", "audience": null, "key_fingerprint": null, "claim": {}}, "kind": null, "hub_id": null, "version": 1, "agent_id": null, "created_at": ""}"#
    );
}

#[track_caller]
fn refused(result: Result<impl std::fmt::Debug, HubError>, type_name: &str, message: &str) {
    let error = result.expect_err("refused");
    assert_eq!(
        (error.type_name.as_str(), error.message.as_str()),
        (type_name, message)
    );
}

#[test]
fn from_dict_refuses_what_python_refuses() {
    refused(
        passport_from_dict(
            &json!({"name": "x", "auth": {"scheme": "api_key"}, "cost": {"bad": 1}}),
        ),
        "TypeError",
        "CostProfile.__init__() got an unexpected keyword argument 'bad'",
    );
    refused(
        rule_from_dict(&json!({"access": {"channel_types": {"x": 1}, "y": 2}})),
        "TypeError",
        "ChannelTypeAccess.__init__() got an unexpected keyword argument 'x'",
    );
    refused(
        rule_from_dict(&json!({"access": {"y": 2}, "limits": {"rate": {"z": 1}}})),
        "TypeError",
        "AccessBlock.__init__() got an unexpected keyword argument 'y'",
    );
    refused(
        rule_from_dict(&json!({"limits": {"rate": {"z": 1}, "inbox": {"q": 1}}})),
        "TypeError",
        "RateBlock.__init__() got an unexpected keyword argument 'z'",
    );
    refused(
        resume_from_dict(&json!({"examples": [{"title": "t", "zz": 1}]})),
        "TypeError",
        "ResumeExample.__init__() got an unexpected keyword argument 'zz'",
    );
    refused(
        resume_from_dict(&json!({"observed": {"c": {"m": 1}}})),
        "TypeError",
        "ObservedStat.__init__() got an unexpected keyword argument 'm'",
    );
    refused(
        resume_from_dict(&json!([["summary"]])),
        "ValueError",
        "dictionary update sequence element #0 has length 1; 2 is required",
    );
    refused(
        resume_from_dict(&json!([5])),
        "TypeError",
        "cannot convert dictionary update sequence element #0 to a sequence",
    );
    // `dict()` also takes a list of pairs.
    let resume = resume_from_dict(&json!([["summary", "ab"]])).expect("pairs");
    assert_eq!(resume.summary, "ab");
}

#[test]
fn wrong_types_in_fields_the_hub_reads_are_refused_by_hubsim() {
    let error = rule_from_dict(&json!({"limits": {"delegation_depth": "5"}})).expect_err("str");
    assert_eq!(
        error.message,
        "hubsim: LimitsBlock.delegation_depth must be an int, got '5'"
    );
    let error = resume_from_dict(&json!({"last_updated": "yesterday"})).expect_err("not ISO");
    assert_eq!(error.type_name, "ValueError");
}

#[test]
fn tasks_parse_leniently_like_task_metadata_from_dict() {
    let owner = "00000000000000000000000000000005";
    let data = json!({
        "task_id": "t1", "owner_id": owner, "spec": {"title": 5, "payload": null, "capability": 3},
        "progress": [["p", 1]], "error": null, "unknown": true
    });
    let task = task_from_dict(data.as_object().expect("object")).expect("parses");
    assert_eq!(
        dumps(&task_json(&task)),
        format!(
            r#"{{"task_id": "t1", "owner_id": "{owner}", "spec": {{"title": "5", "description": "", "payload": {{}}, "capability": null}}, "state": "created", "created_at": "", "started_at": null, "completed_at": null, "expires_at": null, "last_progress_at": null, "progress": {{"p": 1}}, "result": null, "error": "None", "channel_id": null}}"#
        )
    );
    let bad_state = json!({"task_id": "t1", "owner_id": owner, "state": "done"});
    refused(
        task_from_dict(bad_state.as_object().expect("object")),
        "ValueError",
        "'done' is not a valid TaskState",
    );
}

#[test]
fn stored_envelopes_sort_their_payload_keys() {
    let data = json!({"text": "hi", "b": [{"z": 1, "a": 2}], "a": {"z": 1, "y": 2}});
    let envelope = Envelope::new(
        ChannelId(1),
        AgentId(2),
        None,
        "ag2.msg.text",
        data.as_object().expect("object").clone(),
    );
    let stored = stored_envelope_json(&envelope);
    assert_eq!(
        dumps(&stored["event_data"]),
        r#"{"a": {"y": 2, "z": 1}, "b": [{"a": 2, "z": 1}], "text": "hi"}"#
    );
    assert_eq!(
        stored
            .as_object()
            .expect("object")
            .keys()
            .next()
            .map(String::as_str),
        Some("channel_id")
    );
}

#[test]
fn python_dict_and_iter_follow_cpython() {
    assert_eq!(
        py_iter(&json!("ab")).expect("str"),
        vec![json!("a"), json!("b")]
    );
    assert_eq!(py_iter(&json!({"k": 1})).expect("dict"), vec![json!("k")]);
    refused(
        py_iter(&json!(1.5)),
        "TypeError",
        "'float' object is not iterable",
    );
    refused(
        hashable(&json!([1])),
        "TypeError",
        "unhashable type: 'list'",
    );
    assert_eq!(py_dict(&json!([])).expect("empty"), Map::new());
}
