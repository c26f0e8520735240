//! [`DiskStore`]: a store directory held by one hub, written incrementally; [`DiskSync`]: when
//! it is written ([`SyncPolicy`]), as the owner loop's [`Durability`] hook.
//!
//! The store remembers what it last wrote as the hub's own values and compares the hub with
//! them at each sync, so a sync writes only the difference: new WAL lines and audit records are
//! appended (a `.jsonl` file is never rewritten), and any other file is rewritten only when its
//! content changed, each atomically (a temporary file, fsynced, renamed over it). Every file
//! written is fsynced before the sync returns, then every directory in which a file was
//! created, renamed or removed. Each file is atomic; a sync as a whole is not (ag2 writes file
//! by file too), and a crash in the middle leaves some files of the last sync written.

use super::layout::{self, agent_dir, channel_dir, task_dir};
use super::load::{load, Appended};
use super::StoreError;
use crate::hub::channel::ChannelMetadata;
use crate::hub::rule::Rule;
use crate::hub::store::{Store, StoreView};
use crate::hub::{Passport, Resume, TaskMetadata};
use crate::ids::{AgentId, ChannelId};
use crate::net::Durability;
use crate::server::HubServer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Ids reserved at a time in `hubsim.json`: a restarted hub mints after the reservation, so no
/// id it handed out is minted again, and the file is rewritten once per this many ids.
pub const IDS_RESERVED_BLOCK: u128 = 1 << 20;

/// Ids beyond this are refused at open (the counter must never run out).
const IDS_FLOOR_MAX: u128 = u128::MAX - (1 << 64);

/// How long a failed sync waits before it is tried again (when no input comes first).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An agent's files as last written; `None` where the file must still be written.
#[derive(Debug, Default)]
struct AgentOnDisk {
    passport: Option<std::sync::Arc<Passport>>,
    resume: Option<Resume>,
    rule: Option<Rule>,
    /// `SKILL.md`, absent when `None`.
    skill: Option<String>,
    /// `inbox.cursors.json`, absent when empty.
    cursors: BTreeMap<String, String>,
}

#[derive(Debug)]
struct ChannelOnDisk {
    metadata: Option<ChannelMetadata>,
    wal: Appended,
}

/// A task's files as last written; `None`: absent.
#[derive(Debug, Default)]
struct TaskOnDisk {
    metadata: Option<TaskMetadata>,
    checkpoint: Option<Value>,
    writers: Option<Vec<AgentId>>,
}

/// What the store holds on disk, as the hub's values.
#[derive(Debug, Default)]
struct OnDisk {
    agents: BTreeMap<AgentId, AgentOnDisk>,
    capability_index: Option<String>,
    channels: BTreeMap<ChannelId, ChannelOnDisk>,
    tasks: BTreeMap<String, TaskOnDisk>,
    audit: Appended,
}

/// What one sync wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Files rewritten (atomically) or removed.
    pub files: usize,
    /// Lines appended to WALs and the audit log.
    pub lines: usize,
    /// Bytes written.
    pub bytes: u64,
}

impl Written {
    /// Nothing was written.
    pub fn is_empty(&self) -> bool {
        *self == Written::default()
    }
}

/// The file side of a store: its root and the directories whose entries changed since they
/// were last fsynced (kept across a failed sync, so the next one fsyncs them).
#[derive(Debug)]
struct Files {
    root: PathBuf,
    dirs: BTreeSet<PathBuf>,
    written: Written,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Files {
    /// Creates `dir` and its missing parents, noting each parent whose entries changed.
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&parent)?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_at(dir)(error)),
        }
        self.dirs.insert(parent);
        Ok(())
    }

    /// Replaces `path` with `text` atomically: a temporary file beside it, written and fsynced,
    /// renamed over it.
    fn replace(&mut self, path: &Path, text: &str) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = dir.join(format!(".{name}.tmp"));
        let mut file = File::create(&temporary).map_err(io_at(&temporary))?;
        file.write_all(text.as_bytes()).map_err(io_at(&temporary))?;
        file.sync_data().map_err(io_at(&temporary))?;
        drop(file);
        fs::rename(&temporary, path).map_err(io_at(path))?;
        self.dirs.insert(dir);
        self.written.files += 1;
        self.written.bytes += text.len() as u64;
        Ok(())
    }

    /// Removes a file or a directory, if it is there.
    fn remove(&mut self, path: &Path, directory: bool) -> Result<(), StoreError> {
        let removed = if directory {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match removed {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_at(path)(error)),
        }
        self.dirs
            .insert(path.parent().unwrap_or(&self.root).to_path_buf());
        self.written.files += 1;
        Ok(())
    }

    /// Appends `lines` to the `.jsonl` file at `path`, which holds `at` so far: anything past
    /// `at.bytes` (a torn line, or the rest of a failed attempt) is cut off first, so a retry
    /// writes the lines again rather than trusting a failed fsync.
    fn append(
        &mut self,
        path: &Path,
        at: &mut Appended,
        lines: impl Iterator<Item = String>,
    ) -> Result<(), StoreError> {
        let mut text = String::new();
        let mut count = 0;
        for line in lines {
            text.push_str(&line);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir)?;
        let created = at.bytes == 0 && !path.exists();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_at(path))?;
        let length = file.metadata().map_err(io_at(path))?.len();
        if length != at.bytes {
            file.set_len(at.bytes).map_err(io_at(path))?;
        }
        file.seek(SeekFrom::Start(at.bytes)).map_err(io_at(path))?;
        file.write_all(text.as_bytes()).map_err(io_at(path))?;
        file.sync_data().map_err(io_at(path))?;
        if created {
            self.dirs.insert(dir);
        }
        at.lines += count;
        at.bytes += text.len() as u64;
        self.written.lines += count;
        self.written.bytes += text.len() as u64;
        Ok(())
    }

    /// Fsyncs every directory whose entries changed.
    fn sync_dirs(&mut self) -> Result<(), StoreError> {
        while let Some(dir) = self.dirs.first().cloned() {
            File::open(&dir)
                .and_then(|handle| handle.sync_all())
                .map_err(io_at(&dir))?;
            self.dirs.remove(&dir);
        }
        Ok(())
    }
}

/// A store directory held by this process (its lock file is locked while this lives), and what
/// is on disk in it.
#[derive(Debug)]
pub struct DiskStore {
    files: Files,
    /// Held for the store's lifetime: `flock`, released by the system when the process ends.
    _lock: File,
    on_disk: OnDisk,
    /// The highest id `hubsim.json` reserves.
    ids_reserved: u128,
    /// Task ids already warned about (they cannot be directory names).
    unstorable: BTreeSet<String>,
    /// Audit records already looked at for the agents they name (see [`DiskStore::sync`]).
    audit_seen: usize,
}

/// A store opened: the store, what it holds, and the id floor to hydrate the hub with.
#[derive(Debug)]
pub struct Opened {
    /// The store, locked, with the new id reservation written.
    pub disk: DiskStore,
    /// Its content, for [`Hub::hydrate`](crate::hub::Hub::hydrate).
    pub store: Store,
    /// Ids a hub on this store may have handed out: new ids must start after it.
    pub id_floor: u128,
    /// `.jsonl` files whose torn last line (a write cut short) was left out.
    pub torn: Vec<PathBuf>,
    /// The directory held nothing of a store (a new store).
    pub fresh: bool,
}

impl DiskStore {
    /// Opens (creating it if needed) the store in `dir`: takes its lock, reads what it holds,
    /// and reserves the next block of ids in `hubsim.json` before anything is served.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds the store; the first file that does
    /// not read ([`StoreError::Corrupt`] names it, and its line); IO failures.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let lock = lock(&dir.join(layout::LOCK_FILE))?;
        let loaded = load(dir)?;
        let id_floor = loaded.store.last_id().max(loaded.ids_reserved);
        if id_floor > IDS_FLOOR_MAX {
            return Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                line: None,
                message: format!("ids up to {id_floor:032x}: the id counter would run out"),
            });
        }
        let fresh = loaded.store.agent_ids().next().is_none()
            && loaded.store.channels().is_empty()
            && loaded.store.audit().is_empty()
            && loaded.ids_reserved == 0;
        let mut on_disk = OnDisk {
            audit: loaded.audit,
            ..OnDisk::default()
        };
        remember(&mut on_disk, &loaded.store, &loaded.wals);
        let mut disk = DiskStore {
            files: Files {
                root: dir.to_path_buf(),
                dirs: BTreeSet::new(),
                written: Written::default(),
            },
            _lock: lock,
            on_disk,
            ids_reserved: loaded.ids_reserved,
            unstorable: BTreeSet::new(),
            audit_seen: loaded.store.audit().len(),
        };
        if created {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                disk.files.dirs.insert(parent.to_path_buf());
            }
        }
        disk.reserve(id_floor)?;
        disk.files.sync_dirs()?;
        Ok(Opened {
            disk,
            store: loaded.store,
            id_floor,
            torn: loaded.torn,
            fresh,
        })
    }

    /// Reads the store back as it is on disk (what a crashed hub restarts from), with the id
    /// floor a hub on it needs; the next sync compares against the disk again.
    ///
    /// # Errors
    /// The first file that does not read; IO failures.
    pub fn reload(&mut self) -> Result<(Store, u128), StoreError> {
        let loaded = load(&self.files.root)?;
        let id_floor = loaded.store.last_id().max(loaded.ids_reserved);
        let mut on_disk = OnDisk {
            audit: loaded.audit,
            ..OnDisk::default()
        };
        remember(&mut on_disk, &loaded.store, &loaded.wals);
        self.on_disk = on_disk;
        self.audit_seen = loaded.store.audit().len();
        Ok((loaded.store, id_floor))
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.files.root
    }

    /// Whether ids past `last_id` need a new reservation first (O(1); see
    /// [`IDS_RESERVED_BLOCK`]).
    pub fn needs_reservation(&self, last_id: u128) -> bool {
        last_id.saturating_add(IDS_RESERVED_BLOCK / 2) > self.ids_reserved
    }

    /// Reserves ids through `last_id` plus a block in `hubsim.json` (fsynced).
    fn reserve(&mut self, last_id: u128) -> Result<(), StoreError> {
        let reserved = last_id.saturating_add(IDS_RESERVED_BLOCK);
        let path = self.files.root.join(layout::HUBSIM_FILE);
        self.files.replace(&path, &layout::hubsim_text(reserved))?;
        self.ids_reserved = reserved;
        Ok(())
    }

    /// Writes what changed in `view` since the last sync, fsyncs it, and says what it wrote.
    /// After a failure, what was written is remembered and the rest is written next time.
    ///
    /// Agents' files are compared only for the agents named (`agent_id`) by the audit records
    /// written since the last sync: the hub audits every change to an agent (registered,
    /// unregistered, resume, rule, skill, observation), so the others cannot have changed, and a
    /// sync of a hub with 10,000 agents does not compare them all. Cursors are compared whole.
    /// [`DiskStore::sync_all`] compares every agent.
    ///
    /// # Errors
    /// The first file that could not be written.
    pub fn sync(&mut self, view: &StoreView<'_>) -> Result<Written, StoreError> {
        self.sync_with(view, false)
    }

    /// [`DiskStore::sync`], comparing every agent's files (at shutdown).
    ///
    /// # Errors
    /// The first file that could not be written.
    pub fn sync_all(&mut self, view: &StoreView<'_>) -> Result<Written, StoreError> {
        self.sync_with(view, true)
    }

    fn sync_with(&mut self, view: &StoreView<'_>, all: bool) -> Result<Written, StoreError> {
        self.files.written = Written::default();
        let named =
            (!all).then(|| named_agents(&view.audit[self.audit_seen.min(view.audit.len())..]));
        self.sync_agents(view, named.as_ref())?;
        self.audit_seen = view.audit.len();
        self.sync_cursors(view)?;
        self.sync_channels(view)?;
        self.sync_tasks(view)?;
        let path = self
            .files
            .root
            .join(layout::AUDIT[0])
            .join(layout::AUDIT[1]);
        let audit = &mut self.on_disk.audit;
        if view.audit.len() < audit.lines {
            // Never happens to a hub (its audit log only grows); rewrite it whole.
            let text: String = view.audit.iter().map(layout::audit_line).collect();
            self.files.replace(&path, &text)?;
            *audit = Appended {
                lines: view.audit.len(),
                bytes: text.len() as u64,
            };
        }
        let new = view.audit[audit.lines..].iter().map(layout::audit_line);
        self.files.append(&path, audit, new)?;
        if self.needs_reservation(view.last_id()) {
            self.reserve(view.last_id())?;
        }
        self.files.sync_dirs()?;
        Ok(self.files.written)
    }

    /// Reserves a new block of ids now if `last_id` comes near the reservation, and fsyncs it.
    ///
    /// # Errors
    /// `hubsim.json` could not be written.
    pub fn reserve_if_needed(&mut self, last_id: u128) -> Result<(), StoreError> {
        if self.needs_reservation(last_id) {
            self.reserve(last_id)?;
            self.files.sync_dirs()?;
        }
        Ok(())
    }

    fn sync_agents(
        &mut self,
        view: &StoreView<'_>,
        named: Option<&BTreeSet<AgentId>>,
    ) -> Result<(), StoreError> {
        let root = self.files.root.clone();
        let mut index_stale = self.on_disk.capability_index.is_none();
        let changed: Box<dyn Iterator<Item = (&AgentId, &crate::hub::AgentEntry)>> = match named {
            None => Box::new(view.agents.iter()),
            Some(named) => Box::new(named.iter().filter_map(|id| view.agents.get_key_value(id))),
        };
        for (agent, entry) in changed {
            // Only a changed file costs a path (most syncs change few agents, if any).
            let dir = || agent_dir(&root, *agent);
            let disk = self.on_disk.agents.entry(*agent).or_default();
            // The passport first: ag2 skips an agent directory without one.
            if disk.passport.as_ref() != Some(&entry.passport) {
                let text = layout::passport_text(&entry.passport);
                self.files.replace(&dir().join(layout::PASSPORT), &text)?;
                disk.passport = Some(entry.passport.clone());
            }
            if disk.resume.as_ref() != Some(&entry.resume) {
                let text = layout::resume_text(&entry.resume);
                self.files.replace(&dir().join(layout::RESUME), &text)?;
                disk.resume = Some(entry.resume.clone());
                index_stale = true;
            }
            if disk.rule.as_ref() != Some(&entry.rule) {
                self.files
                    .replace(&dir().join(layout::RULE), &layout::rule_text(&entry.rule))?;
                disk.rule = Some(entry.rule.clone());
            }
            if disk.skill != entry.skill {
                let path = dir().join(layout::SKILL);
                match &entry.skill {
                    Some(skill) => self.files.replace(&path, skill)?,
                    None => self.files.remove(&path, false)?,
                }
                disk.skill.clone_from(&entry.skill);
            }
        }
        // Every agent of the view is on disk now; more on disk means some were unregistered.
        if self.on_disk.agents.len() > view.agents.len() {
            let gone: Vec<AgentId> = self
                .on_disk
                .agents
                .keys()
                .filter(|agent| !view.agents.contains_key(agent))
                .copied()
                .collect();
            for agent in gone {
                self.files.remove(&agent_dir(&root, agent), true)?;
                self.on_disk.agents.remove(&agent);
            }
            index_stale = true;
        }
        if index_stale {
            let resumes = view.agents.iter().map(|(id, entry)| (*id, &entry.resume));
            let text = layout::capability_index_text(resumes);
            if self.on_disk.capability_index.as_ref() != Some(&text) {
                let path = root
                    .join(layout::BY_CAPABILITY[0])
                    .join(layout::BY_CAPABILITY[1]);
                self.files.replace(&path, &text)?;
                self.on_disk.capability_index = Some(text);
            }
        }
        Ok(())
    }

    /// Each agent's `inbox.cursors.json` that changed (receipts move cursors without an audit
    /// record).
    fn sync_cursors(&mut self, view: &StoreView<'_>) -> Result<(), StoreError> {
        let root = self.files.root.clone();
        for (agent, disk) in &mut self.on_disk.agents {
            let cursors = view.cursors.get(agent);
            if cursors.map_or(disk.cursors.is_empty(), |c| *c == disk.cursors) {
                continue;
            }
            let path = agent_dir(&root, *agent).join(layout::CURSORS);
            match cursors.filter(|c| !c.is_empty()) {
                Some(cursors) => self.files.replace(&path, &layout::cursors_text(cursors))?,
                None => self.files.remove(&path, false)?,
            }
            disk.cursors = cursors.cloned().unwrap_or_default();
        }
        Ok(())
    }

    fn sync_channels(&mut self, view: &StoreView<'_>) -> Result<(), StoreError> {
        let root = self.files.root.clone();
        for (channel, metadata, wal) in &view.channels {
            let dir = || channel_dir(&root, *channel);
            let disk = self
                .on_disk
                .channels
                .entry(*channel)
                .or_insert(ChannelOnDisk {
                    metadata: None,
                    wal: Appended::default(),
                });
            if disk.metadata.as_ref() != Some(*metadata) {
                let text = layout::channel_text(metadata);
                self.files.replace(&dir().join(layout::METADATA), &text)?;
                disk.metadata = Some((*metadata).clone());
            }
            if wal.len() == disk.wal.lines {
                continue;
            }
            let path = dir().join(layout::WAL);
            if wal.len() < disk.wal.lines {
                // Never happens to a hub (a WAL only grows); rewrite it whole.
                let text: String = wal.iter().map(|e| layout::wal_line(e)).collect();
                self.files.replace(&path, &text)?;
                disk.wal = Appended {
                    lines: wal.len(),
                    bytes: text.len() as u64,
                };
            }
            let new = wal[disk.wal.lines..].iter().map(|e| layout::wal_line(e));
            self.files.append(&path, &mut disk.wal, new)?;
        }
        if self.on_disk.channels.len() > view.channels.len() {
            let live: BTreeSet<ChannelId> = view.channels.iter().map(|(id, ..)| *id).collect();
            let gone: Vec<ChannelId> = self
                .on_disk
                .channels
                .keys()
                .filter(|id| !live.contains(id))
                .copied()
                .collect();
            for channel in gone {
                self.files.remove(&channel_dir(&root, channel), true)?;
                self.on_disk.channels.remove(&channel);
            }
        }
        Ok(())
    }

    fn sync_tasks(&mut self, view: &StoreView<'_>) -> Result<(), StoreError> {
        let root = self.files.root.clone();
        for (task_id, task) in view.tasks {
            let Some(path) = self.task_file(&root, task_id, layout::METADATA) else {
                continue;
            };
            let disk = task_on_disk(&mut self.on_disk.tasks, task_id);
            if disk.metadata.as_ref() != Some(task) {
                self.files.replace(&path, &layout::task_text(task))?;
                disk.metadata = Some(task.clone());
            }
        }
        for (task_id, state) in view.checkpoints {
            let Some(path) = self.task_file(&root, task_id, layout::CHECKPOINT) else {
                continue;
            };
            let disk = task_on_disk(&mut self.on_disk.tasks, task_id);
            if disk.checkpoint.as_ref() != Some(state) {
                self.files.replace(&path, &layout::checkpoint_text(state))?;
                disk.checkpoint = Some(state.clone());
            }
        }
        for (task_id, writers) in view.checkpoint_writers {
            let Some(path) = self.task_file(&root, task_id, layout::CHECKPOINT_WRITERS) else {
                continue;
            };
            let disk = task_on_disk(&mut self.on_disk.tasks, task_id);
            if disk.writers.as_ref() != Some(writers) {
                self.files.replace(&path, &layout::writers_text(writers))?;
                disk.writers = Some(writers.clone());
            }
        }
        // Files of tasks the hub no longer holds (it never drops one today).
        let stale: Vec<(String, &str)> = self
            .on_disk
            .tasks
            .iter()
            .flat_map(|(id, disk)| {
                [
                    (disk.metadata.is_some() && !view.tasks.contains_key(id))
                        .then_some(layout::METADATA),
                    (disk.checkpoint.is_some() && !view.checkpoints.contains_key(id))
                        .then_some(layout::CHECKPOINT),
                    (disk.writers.is_some() && !view.checkpoint_writers.contains_key(id))
                        .then_some(layout::CHECKPOINT_WRITERS),
                ]
                .into_iter()
                .flatten()
                .map(move |file| (id.clone(), file))
            })
            .collect();
        for (task_id, file) in stale {
            if let Some(dir) = task_dir(&root, &task_id) {
                self.files.remove(&dir.join(file), false)?;
            }
            let disk = task_on_disk(&mut self.on_disk.tasks, &task_id);
            match file {
                layout::METADATA => disk.metadata = None,
                layout::CHECKPOINT => disk.checkpoint = None,
                _ => disk.writers = None,
            }
        }
        Ok(())
    }

    /// A task's file, or `None` (warned once) for a task id that cannot be a directory name.
    fn task_file(&mut self, root: &Path, task_id: &str, file: &str) -> Option<PathBuf> {
        let dir = task_dir(root, task_id);
        if dir.is_none() && self.unstorable.insert(task_id.to_string()) {
            tracing::warn!(
                task_id,
                "this task id cannot be a directory name: the task is not stored"
            );
        }
        dir.map(|dir| dir.join(file))
    }
}

/// The agents that `records` name (`agent_id`).
fn named_agents(records: &[Value]) -> BTreeSet<AgentId> {
    records
        .iter()
        .filter_map(|record| record.get("agent_id")?.as_str().and_then(AgentId::parse))
        .collect()
}

fn task_on_disk<'a>(
    tasks: &'a mut BTreeMap<String, TaskOnDisk>,
    task_id: &str,
) -> &'a mut TaskOnDisk {
    if !tasks.contains_key(task_id) {
        tasks.insert(task_id.to_string(), TaskOnDisk::default());
    }
    tasks.get_mut(task_id).expect("inserted above")
}

/// Records a loaded store as what is on disk.
fn remember(on_disk: &mut OnDisk, store: &Store, wals: &BTreeMap<ChannelId, Appended>) {
    let view = store.view();
    for (agent, entry) in view.agents {
        let disk = AgentOnDisk {
            passport: Some(entry.passport.clone()),
            resume: Some(entry.resume.clone()),
            rule: Some(entry.rule.clone()),
            skill: entry.skill.clone(),
            cursors: view.cursors.get(agent).cloned().unwrap_or_default(),
        };
        on_disk.agents.insert(*agent, disk);
    }
    for (channel, metadata, _) in &view.channels {
        let disk = ChannelOnDisk {
            metadata: Some((*metadata).clone()),
            wal: wals.get(channel).copied().unwrap_or_default(),
        };
        on_disk.channels.insert(*channel, disk);
    }
    for (task_id, task) in view.tasks {
        task_on_disk(&mut on_disk.tasks, task_id).metadata = Some(task.clone());
    }
    for (task_id, state) in view.checkpoints {
        task_on_disk(&mut on_disk.tasks, task_id).checkpoint = Some(state.clone());
    }
    for (task_id, writers) in view.checkpoint_writers {
        task_on_disk(&mut on_disk.tasks, task_id).writers = Some(writers.clone());
    }
}

/// Locks the store's lock file (`flock`, exclusive, not waiting) and writes this process's pid
/// in it, for whoever finds the store taken.
fn lock(path: &Path) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at(path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(error)) => return Err(io_at(path)(error)),
    }
    file.set_len(0).map_err(io_at(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_at(path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_at(path))?;
    Ok(file)
}

/// When `hubsim serve --store` writes the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every event the hub handled, before its answers leave: an answered write is on
    /// disk (`--sync always`, or `--sync 0`).
    Always,
    /// At most this long after a change (`--sync TIME`): a crash loses at most this much.
    Every(Duration),
}

/// The store as the owner loop's [`Durability`] hook, with its [`SyncPolicy`]. A failed write
/// is logged (a warning once, then at debug while it keeps failing), the hub serves on, and the
/// write is tried again at the next sync point, or a second later when nothing comes;
/// while it fails, answers may leave before what they acknowledge is on disk. At shutdown a
/// failure is returned.
#[derive(Debug)]
pub struct DiskSync {
    disk: DiskStore,
    policy: SyncPolicy,
    due: Option<tokio::time::Instant>,
    failing: bool,
}

impl DiskSync {
    /// `disk` written with `policy`.
    pub fn new(disk: DiskStore, policy: SyncPolicy) -> DiskSync {
        DiskSync {
            disk,
            policy,
            due: None,
            failing: false,
        }
    }

    fn write(&mut self, server: &HubServer) {
        let started = std::time::Instant::now();
        match self.disk.sync(&server.hub().store_view()) {
            Ok(written) => {
                if self.failing {
                    tracing::info!(store = %self.disk.root().display(), "the store is written again");
                    self.failing = false;
                }
                if !written.is_empty() {
                    tracing::debug!(
                        files = written.files,
                        lines = written.lines,
                        bytes = written.bytes,
                        micros = started.elapsed().as_micros() as u64,
                        "store synced"
                    );
                }
            }
            Err(error) => self.failed(&error),
        }
    }

    fn failed(&mut self, error: &StoreError) {
        if self.failing {
            tracing::debug!(%error, "the store still cannot be written");
        } else {
            tracing::warn!(%error, "the store cannot be written; serving on and retrying");
            self.failing = true;
        }
        let retry = tokio::time::Instant::now() + RETRY_AFTER;
        self.due = Some(self.due.map_or(retry, |due| due.min(retry)));
    }
}

impl Durability for DiskSync {
    fn handled(&mut self, server: &HubServer) {
        match self.policy {
            SyncPolicy::Always => self.write(server),
            SyncPolicy::Every(period) => {
                // Ids handed out before the next sync must still never be minted again.
                if let Err(error) = self.disk.reserve_if_needed(server.hub().last_id()) {
                    self.failed(&error);
                }
                if self.due.is_none() {
                    self.due = Some(tokio::time::Instant::now() + period);
                }
            }
        }
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.due
    }

    fn flush(&mut self, server: &HubServer) {
        self.due = None;
        self.write(server);
    }

    fn shutdown(&mut self, server: &HubServer) -> io::Result<()> {
        self.due = None;
        self.disk
            .sync_all(&server.hub().store_view())
            .map(|_| ())
            .map_err(|error| io::Error::other(format!("the store could not be written: {error}")))
    }

    fn crashed(&mut self) -> Option<io::Result<(Store, u128)>> {
        // What was not synced is lost with the crashed hub.
        self.due = None;
        Some(
            self.disk
                .reload()
                .map_err(|error| io::Error::other(format!("the store could not be read: {error}"))),
        )
    }
}
