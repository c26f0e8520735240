//! The disk store: a store written and read back is the same store, for every scenario's final
//! hub; syncs write only what changed and append to the `.jsonl` files; bad files are refused
//! with their place; the lock keeps a second hub out.

use super::layout;
use super::sync::{DiskStore, Opened};
use super::StoreError;
use crate::hub::store::Store;
use crate::ids::AgentId;
use crate::sim::runner;
use crate::sim::scenario::Scenario;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temporary one (removed first if a run left it).
fn scratch(tag: &str) -> PathBuf {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("hubsim-disk-{tag}-{}-{serial}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path) -> Opened {
    match DiskStore::open(dir) {
        Ok(opened) => opened,
        Err(error) => panic!("{}: {error}", dir.display()),
    }
}

/// Writes `store` into a new store in `dir` and reads it back.
fn round_trip(store: &Store, dir: &Path) -> Store {
    let mut opened = open(dir);
    assert!(opened.fresh);
    opened.disk.sync(&store.view()).expect("writes");
    drop(opened);
    let again = open(dir);
    assert!(again.torn.is_empty());
    assert!(
        again.id_floor >= store.last_id(),
        "ids continue after every id handed out"
    );
    again.store
}

/// `a` and `b` hold the same durable state; task order aside (ag2 lists tasks in id order
/// after a restart).
#[track_caller]
fn assert_same(a: &Store, b: &Store, name: &str) {
    let (a, b) = (a.view(), b.view());
    assert_eq!(
        a.agents.keys().collect::<Vec<_>>(),
        b.agents.keys().collect::<Vec<_>>(),
        "{name}: agents"
    );
    for (id, entry) in a.agents {
        let other = &b.agents[id];
        assert_eq!(entry.passport, other.passport, "{name}: passport of {id}");
        assert_eq!(entry.resume, other.resume, "{name}: resume of {id}");
        assert_eq!(entry.rule, other.rule, "{name}: rule of {id}");
        assert_eq!(entry.skill, other.skill, "{name}: skill of {id}");
    }
    assert_eq!(a.channels.len(), b.channels.len(), "{name}: channels");
    for ((id, metadata, wal), (other_id, other_metadata, other_wal)) in
        a.channels.iter().zip(&b.channels)
    {
        assert_eq!(id, other_id, "{name}: channel ids");
        assert_eq!(metadata, other_metadata, "{name}: metadata of {id}");
        assert_eq!(wal, other_wal, "{name}: WAL of {id}");
    }
    assert_eq!(a.tasks, b.tasks, "{name}: tasks");
    assert_eq!(a.checkpoints, b.checkpoints, "{name}: checkpoints");
    assert_eq!(
        a.checkpoint_writers, b.checkpoint_writers,
        "{name}: checkpoint writers"
    );
    let non_empty = |view: &crate::hub::store::StoreView<'_>| {
        view.cursors
            .iter()
            .filter(|(_, cursors)| !cursors.is_empty())
            .map(|(id, cursors)| (*id, cursors.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(non_empty(&a), non_empty(&b), "{name}: cursors");
    assert_eq!(a.audit, b.audit, "{name}: audit");
}

/// What kinds of content a set of stores covered.
#[derive(Default)]
struct Seen {
    kinds: BTreeSet<String>,
}

impl Seen {
    fn add(&mut self, store: &Store) {
        let view = store.view();
        let mut see = |kind: &str| {
            self.kinds.insert(kind.to_string());
        };
        for entry in view.agents.values() {
            if entry.skill.is_some() {
                see("skill");
            }
            if entry.rule != crate::hub::rule::Rule::default() {
                see("rule");
            }
            if !entry.resume.claimed_capabilities.is_empty() {
                see("resume");
            }
        }
        for (_, metadata, wal) in &view.channels {
            if !wal.is_empty() {
                see(metadata.manifest.manifest_type);
            }
            if metadata.is_terminal() {
                see("terminal channel");
            }
        }
        if !view.tasks.is_empty() {
            see("task");
        }
        if !view.checkpoints.is_empty() {
            see("checkpoint");
        }
        if !view.checkpoint_writers.is_empty() {
            see("checkpoint writers");
        }
        if view.cursors.values().any(|cursors| !cursors.is_empty()) {
            see("cursor");
        }
        if !view.audit.is_empty() {
            see("audit");
        }
    }
}

/// Adds what the in-process runner never makes (cursors come from receipts over a link; wire
/// checkpoints from a connection) to a store.
fn with_link_state(mut store: Store) -> Store {
    let agents: Vec<AgentId> = store.agent_ids().collect();
    let channel = store.channels.keys().next().copied();
    if let (Some(agent), Some(channel)) = (agents.first(), channel) {
        let last = store.channels[&channel]
            .wal
            .last()
            .and_then(|e| e.envelope_id);
        if let Some(envelope) = last {
            let cursors = store.cursors.entry(*agent).or_default();
            cursors.insert(channel.to_string(), envelope.to_string());
        }
        let created = crate::time::Timestamp::parse_iso("2026-01-02T03:04:05.678901+00:00");
        let task = crate::hub::TaskMetadata {
            task_id: "t-1".into(),
            owner_id: *agent,
            spec: crate::hub::TaskSpec {
                title: "sum".into(),
                description: "adds".into(),
                payload: json!({"b": [1, 2.5], "a": null})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
            capability: Some("sum".into()),
            created_at: "2026-01-02T03:04:05Z".into(),
            last_progress_at: created,
            state: crate::hub::TaskState::Running,
            channel_id: Some(channel),
            started_at: created,
            completed_at: None,
            expires_at: created,
            progress: json!({"done": 0.5})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            result: Some(json!({"sum": 3})),
            error: String::new(),
        };
        store.tasks.insert(task.task_id.clone(), task.clone());
        store
            .checkpoints
            .insert(task.task_id.clone(), json!([1, "two"]));
        store
            .checkpoints
            .insert("t-unobserved".into(), json!({"step": 3, "note": "é"}));
        store
            .checkpoint_writers
            .insert("t-unobserved".into(), agents.clone());
        if let Some(entry) = store.agents.get_mut(agent) {
            entry.skill = Some("# Skill\n\nSays hello.\n".into());
            let resume = &mut entry.resume;
            resume.claimed_capabilities = vec!["translate".into(), "sum".into()];
            resume.summary = "adds \u{2603} numbers".into();
            resume.examples = vec![json!({"title": "t", "outcome": "ok", "task_id": null,
                "channel_id": null, "when": null, "note": ""})];
            let stat = crate::hub::ObservedStat {
                n: 2,
                completed: 1,
                failed: 1,
                expired: 0,
                p50_latency_ms: Some(12),
            };
            resume.observed.insert("sum".into(), stat);
            resume.version = 3;
        }
    }
    store
}

#[test]
fn every_scenario_store_reads_back_as_written() {
    let sims = Path::new(env!("CARGO_MANIFEST_DIR")).join("sims");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&sims)
        .expect("sims/")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    names.sort();
    let mut seen = Seen::default();
    for path in names {
        let scenario = Scenario::load(&path).expect("loads");
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        // Network scenarios on the event backend (seed 1): tasks, checkpoints, cursors.
        let hub = if scenario.network_only() {
            let run = crate::sim::run_network(&scenario, &crate::sim::RunOptions::default());
            run.expect("runs on the event backend").run.hub
        } else {
            runner::run(&scenario).hub
        };
        let store = with_link_state(hub.snapshot());
        seen.add(&store);
        let dir = scratch(&name);
        let read = round_trip(&store, &dir);
        assert_same(&store, &read, &name);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let expected = [
        "audit",
        "checkpoint",
        "checkpoint writers",
        "consulting",
        "conversation",
        "cursor",
        "discussion",
        "resume",
        "rule",
        "skill",
        "task",
        "terminal channel",
        "workflow",
    ];
    for kind in expected {
        assert!(seen.kinds.contains(kind), "no scenario store had a {kind}");
    }
}

/// A scenario's final store, for the tests below.
fn sample() -> Store {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sims/consulting_happy.yaml");
    let scenario = Scenario::load(&path).expect("loads");
    with_link_state(runner::run(&scenario).hub.snapshot())
}

#[test]
fn a_sync_writes_only_what_changed_and_appends_to_the_wal() {
    let store = sample();
    let dir = scratch("incremental");
    let mut opened = open(&dir);
    let first = opened.disk.sync(&store.view()).expect("writes");
    assert!(first.files > 0 && first.lines > 0, "{first:?}");
    assert!(
        opened.disk.sync(&store.view()).expect("writes").is_empty(),
        "nothing changed, nothing written"
    );

    // One more envelope in a WAL and one more audit record: two lines appended, the files'
    // earlier bytes untouched.
    let (channel, stored) = store.channels.iter().next().expect("a channel");
    let wal_path = layout::channel_dir(&dir, *channel).join(layout::WAL);
    let before = std::fs::read(&wal_path).expect("the WAL");
    let mut grown = store.clone();
    let mut envelope = (*stored.wal[0]).clone();
    envelope.envelope_id = Some(crate::ids::EnvelopeId(store.last_id() + 1));
    let grown_channel = grown.channels.get_mut(channel).expect("the channel");
    grown_channel
        .wal
        .push(std::sync::Arc::new(envelope.clone()));
    let mut records = grown.audit().to_vec();
    records.push(json!({"at": "2026-01-01T00:00:00Z", "kind": "test"}));
    grown.audit = crate::hub::audit::AuditLog::from_records(records);
    let written = opened.disk.sync(&grown.view()).expect("writes");
    assert_eq!((written.files, written.lines), (0, 2), "{written:?}");
    let after = std::fs::read(&wal_path).expect("the WAL");
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(
        String::from_utf8_lossy(&after[before.len()..]),
        layout::wal_line(&envelope)
    );

    // A cursor moves: that agent's cursor file alone is rewritten.
    let agent = *grown.cursors.keys().next().expect("a cursor");
    let cursors = grown.cursors.get_mut(&agent).expect("cursors");
    cursors.insert("another".into(), "f".repeat(32));
    let written = opened.disk.sync(&grown.view()).expect("writes");
    assert_eq!((written.files, written.lines), (1, 0), "{written:?}");
    drop(opened);
    assert_same(&grown, &open(&dir).store, "grown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_are_ag2s_json() {
    let store = sample();
    let dir = scratch("format");
    let mut opened = open(&dir);
    opened.disk.sync(&store.view()).expect("writes");
    let (channel, stored) = store.channels.iter().next().expect("a channel");
    let metadata =
        std::fs::read_to_string(layout::channel_dir(&dir, *channel).join(layout::METADATA))
            .expect("metadata");
    // `json.dumps(metadata.to_dict())`: dataclass key order, Python's separators.
    assert!(
        metadata.starts_with(&format!(
            "{{\"channel_id\": \"{channel}\", \"manifest\": {{\"type\": "
        )),
        "{metadata}"
    );
    let wal = std::fs::read_to_string(layout::channel_dir(&dir, *channel).join(layout::WAL))
        .expect("WAL");
    assert_eq!(wal.lines().count(), stored.wal.len());
    // `envelope.to_json()` sorts keys.
    assert!(wal.starts_with("{\"audience\": "), "{wal}");
    let hubsim = std::fs::read_to_string(dir.join(layout::HUBSIM_FILE)).expect("hubsim.json");
    assert!(
        hubsim.starts_with("{\"format\": 1, \"ids_reserved_through\": \""),
        "{hubsim}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[track_caller]
fn refused(dir: &Path) -> String {
    match DiskStore::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_file_that_does_not_read_is_refused_with_its_place() {
    let store = sample();
    let dir = scratch("corrupt");
    let mut opened = open(&dir);
    opened.disk.sync(&store.view()).expect("writes");
    drop(opened);
    let (channel, _) = store.channels.iter().next().expect("a channel");
    let wal_path = layout::channel_dir(&dir, *channel).join(layout::WAL);
    let wal = std::fs::read_to_string(&wal_path).expect("WAL");
    let mut lines: Vec<&str> = wal.lines().collect();
    assert!(lines.len() >= 2, "a WAL of two lines at least");
    lines[1] = "{\"channel_id\": oops}";
    std::fs::write(&wal_path, lines.join("\n") + "\n").expect("written");
    let message = refused(&dir);
    assert!(
        message.starts_with(&format!("{}:2: not JSON", wal_path.display())),
        "{message}"
    );
    lines[1] = "{\"channel_id\": \"x\"}";
    std::fs::write(&wal_path, lines.join("\n") + "\n").expect("written");
    assert_eq!(
        refused(&dir),
        format!(
            "{}:2: not an envelope as ag2 writes one",
            wal_path.display()
        )
    );
    std::fs::write(&wal_path, wal.as_bytes()).expect("restored");

    let agent = store.agent_ids().next().expect("an agent");
    let passport = layout::agent_dir(&dir, agent).join(layout::PASSPORT);
    std::fs::write(&passport, "{\"name\": \"alice\", \"colour\": 1}").expect("written");
    let message = refused(&dir);
    assert!(
        message.starts_with(&format!("{}: ", passport.display())),
        "{message}"
    );
    assert!(message.contains("colour"), "{message}");
    std::fs::write(&passport, "").expect("written");
    assert!(refused(&dir).contains("not JSON"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_last_line_is_left_out_and_cut_off_at_the_next_append() {
    let store = sample();
    let dir = scratch("torn");
    let mut opened = open(&dir);
    opened.disk.sync(&store.view()).expect("writes");
    drop(opened);
    let audit = dir.join(layout::AUDIT[0]).join(layout::AUDIT[1]);
    let whole = std::fs::read_to_string(&audit).expect("audit");
    std::fs::write(&audit, format!("{whole}{{\"at\": \"2026")).expect("torn");
    let mut opened = open(&dir);
    assert_eq!(opened.torn, vec![audit.clone()]);
    assert_eq!(opened.store.audit(), store.audit());
    let mut records = store.audit().to_vec();
    records.push(json!({"kind": "after"}));
    let mut grown = store.clone();
    grown.audit = crate::hub::audit::AuditLog::from_records(records);
    opened.disk.sync(&grown.view()).expect("writes");
    assert_eq!(
        std::fs::read_to_string(&audit).expect("audit"),
        format!("{whole}{{\"kind\": \"after\"}}\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_hub_on_the_same_store_is_refused() {
    let dir = scratch("lock");
    let first = open(&dir);
    let error = DiskStore::open(&dir).expect_err("locked");
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: another hubsim serve is using this store (pid {})",
            dir.join(layout::LOCK_FILE).display(),
            std::process::id()
        )
    );
    drop(first);
    drop(open(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_continue_after_the_reservation() {
    let dir = scratch("ids");
    let first = open(&dir);
    assert_eq!(first.id_floor, 0);
    drop(first);
    let second = open(&dir);
    assert_eq!(second.id_floor, super::IDS_RESERVED_BLOCK);
    let block = super::IDS_RESERVED_BLOCK;
    // Reserved through 2 blocks now; a new reservation comes half a block before the end.
    assert!(!second.disk.needs_reservation(block + block / 2));
    assert!(second.disk.needs_reservation(block + block / 2 + 1));
    let _ = std::fs::remove_dir_all(&dir);
}
