//! What the hub keeps on disk, and rebuilding a hub from it (ag2's `hydrate()`).
//!
//! A [`Store`] is the hub's durable state as of a sync point: identities, channel metadata and
//! WALs, tasks, delivery cursors, the audit log, checkpoints. Drivers take one with
//! [`Hub::snapshot`] whenever their disk model syncs; a crash loses everything after the last
//! sync, and [`Hub::hydrate`] restarts from it. As in ag2, inbox counters, fired-violation keys,
//! the observed-task dedup set, open waiters and bindings are not persisted, and every WAL is
//! re-folded from its adapter's initial state.

use super::adapter::AdapterKind;
use super::channel::ChannelMetadata;
use super::tasks::{TaskBook, TaskMetadata};
use super::{AgentEntry, ChannelEntry, Hub, HubConfig};
use crate::ids::{AgentId, ChannelId, IdGen};
use crate::proto::{Envelope, HubError};
use crate::time::Instant;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A channel as stored: its metadata file and its WAL.
#[derive(Clone, Debug)]
pub struct StoredChannel {
    /// `metadata.json`.
    pub metadata: ChannelMetadata,
    /// `wal.jsonl`, in append order.
    pub wal: Vec<Arc<Envelope>>,
}

/// The hub's durable state at one sync point.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub(crate) agents: BTreeMap<AgentId, AgentEntry>,
    pub(crate) channels: BTreeMap<ChannelId, StoredChannel>,
    pub(crate) tasks: BTreeMap<String, TaskMetadata>,
    pub(crate) checkpoints: BTreeMap<String, Value>,
    /// Task ids in first-observation order.
    pub(crate) task_order: Vec<String>,
    /// Checkpoint writers recorded by wire `checkpoint_task` calls.
    pub(crate) checkpoint_writers: BTreeMap<String, Vec<AgentId>>,
    pub(crate) cursors: BTreeMap<AgentId, BTreeMap<String, String>>,
    pub(crate) audit: super::audit::AuditLog,
    /// The highest id minted before the snapshot.
    pub(crate) last_id: u128,
}

impl Store {
    /// Stored channels in id order.
    pub fn channels(&self) -> &BTreeMap<ChannelId, StoredChannel> {
        &self.channels
    }

    /// Registered agent ids in id order.
    pub fn agent_ids(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.agents.keys().copied()
    }

    /// The highest id minted before the snapshot.
    pub fn last_id(&self) -> u128 {
        self.last_id
    }

    /// The audit log as stored.
    pub fn audit(&self) -> &[Value] {
        self.audit.records()
    }
}

/// The hub's durable state borrowed, file by file: what [`Hub::snapshot`] copies, for a store
/// that compares it with what it wrote last and writes only the difference.
#[derive(Clone, Debug)]
pub struct StoreView<'a> {
    pub(crate) agents: &'a BTreeMap<AgentId, AgentEntry>,
    /// Stored channels in id order: metadata and WAL.
    pub(crate) channels: Vec<(ChannelId, &'a ChannelMetadata, &'a [Arc<Envelope>])>,
    pub(crate) tasks: &'a BTreeMap<String, TaskMetadata>,
    pub(crate) checkpoints: &'a BTreeMap<String, Value>,
    pub(crate) checkpoint_writers: &'a BTreeMap<String, Vec<AgentId>>,
    pub(crate) cursors: &'a BTreeMap<AgentId, BTreeMap<String, String>>,
    pub(crate) audit: &'a [Value],
    pub(crate) last_id: u128,
}

impl Store {
    /// The store borrowed as a [`StoreView`].
    pub fn view(&self) -> StoreView<'_> {
        StoreView {
            agents: &self.agents,
            channels: self
                .channels
                .iter()
                .map(|(id, stored)| (*id, &stored.metadata, stored.wal.as_slice()))
                .collect(),
            tasks: &self.tasks,
            checkpoints: &self.checkpoints,
            checkpoint_writers: &self.checkpoint_writers,
            cursors: &self.cursors,
            audit: self.audit.records(),
            last_id: self.last_id,
        }
    }

    /// Task ids in first-observation order (what `list_tasks` follows).
    pub fn task_order(&self) -> &[String] {
        &self.task_order
    }
}

impl StoreView<'_> {
    /// The highest id minted so far.
    pub fn last_id(&self) -> u128 {
        self.last_id
    }
}

/// A ghost channel (whose `initial_state` failed) has no metadata file until it ends, as in
/// ag2, so it is left out of the store while it is live.
fn is_stored(entry: &ChannelEntry) -> bool {
    entry.state.is_some() || entry.metadata.is_terminal()
}

impl Hub {
    /// The hub's durable state now, borrowed (see [`StoreView`]); the same content as
    /// [`Hub::snapshot`].
    pub fn store_view(&self) -> StoreView<'_> {
        StoreView {
            agents: &self.agents,
            channels: self
                .channels
                .iter()
                .filter(|(_, entry)| is_stored(entry))
                .map(|(id, entry)| (*id, &entry.metadata, entry.wal.as_slice()))
                .collect(),
            tasks: &self.tasks.tasks,
            checkpoints: &self.tasks.checkpoints,
            checkpoint_writers: &self.tasks.checkpoint_writers,
            cursors: &self.cursors,
            audit: self.audit.records(),
            last_id: self.ids.last(),
        }
    }

    /// The hub's durable state now (ghost channels left out while they are live).
    pub fn snapshot(&self) -> Store {
        let channels = self
            .channels
            .iter()
            .filter(|(_, entry)| is_stored(entry))
            .map(|(id, entry)| {
                (
                    *id,
                    StoredChannel {
                        metadata: entry.metadata.clone(),
                        wal: entry.wal.clone(),
                    },
                )
            })
            .collect();
        Store {
            agents: self.agents.clone(),
            channels,
            tasks: self.tasks.tasks.clone(),
            checkpoints: self.tasks.checkpoints.clone(),
            task_order: self.tasks.order.clone(),
            checkpoint_writers: self.tasks.checkpoint_writers.clone(),
            cursors: self.cursors.clone(),
            audit: self.audit.clone(),
            last_id: self.ids.last(),
        }
    }

    /// ag2's `Hub.open` over an existing store: identities, channels (every WAL re-folded from
    /// its adapter's initial state), tasks and cursors come back; bindings, inbox counters,
    /// fired violations and open waiters start empty. New ids continue after `id_floor` and
    /// every id in the store (ag2's ids are time-ordered, so they never repeat after a restart).
    ///
    /// # Errors
    /// A WAL that no longer folds (ag2's `Hub.open` fails the same way).
    pub fn hydrate(
        config: HubConfig,
        store: &Store,
        id_floor: u128,
        now: Instant,
    ) -> Result<Hub, HubError> {
        let mut hub = Hub::new(config, now);
        hub.ids = IdGen::starting_after(store.last_id.max(id_floor));
        hub.agents = store.agents.clone();
        hub.names = store
            .agents
            .iter()
            .map(|(id, entry)| (entry.passport.name.clone(), *id))
            .collect();
        for (id, stored) in &store.channels {
            let kind = AdapterKind::of(&stored.metadata);
            let mut state = kind.initial_state(&stored.metadata)?;
            let live = !stored.metadata.is_terminal();
            let mut causation = BTreeMap::new();
            for envelope in &stored.wal {
                state.fold(envelope)?;
                let key = envelope
                    .causation_id
                    .as_ref()
                    .filter(|c| live && !c.is_empty());
                if let (Some(key), Some(envelope_id)) = (key, envelope.envelope_id) {
                    causation.insert((envelope.sender_id, key.clone()), envelope_id);
                }
            }
            if live {
                hub.active.insert(*id);
            }
            hub.channels.insert(
                *id,
                ChannelEntry {
                    metadata: stored.metadata.clone(),
                    state: Some(state),
                    wal: stored.wal.clone(),
                    fired: BTreeSet::new(),
                    causation,
                    wire: Default::default(),
                },
            );
        }
        let mut tasks = TaskBook {
            tasks: store.tasks.clone(),
            checkpoints: store.checkpoints.clone(),
            order: store.task_order.clone(),
            checkpoint_writers: store.checkpoint_writers.clone(),
            ..TaskBook::default()
        };
        for task in store.tasks.values() {
            if let Some(channel) = task.channel_id {
                tasks
                    .by_channel
                    .entry(channel)
                    .or_default()
                    .insert(task.task_id.clone());
            }
        }
        hub.tasks = tasks;
        hub.cursors = store.cursors.clone();
        hub.audit = store.audit.clone();
        Ok(hub)
    }
}
