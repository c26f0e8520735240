//! The hub's store on disk (`hubsim serve --store DIR`), in ag2 1.2.1's own layout, so ag2's
//! `DiskKnowledgeStore` reads what hubsim writes and hubsim reads what ag2 wrote.
//!
//! Not part of the core: this module does file IO. The hub only hands out its durable state
//! ([`Hub::store_view`](crate::hub::Hub::store_view)) and rebuilds itself from a
//! [`Store`](crate::hub::store::Store) ([`Hub::hydrate`](crate::hub::Hub::hydrate)); this module
//! turns one into files and the files back into the other. It does not know the network: the
//! owner loop of `net::ws` calls it through the [`Durability`](crate::net::Durability) hook,
//! which [`DiskSync`] implements with a [`SyncPolicy`].
//!
//! ```text
//! DIR/agents/{id}/passport.json, resume.json, rule.json, SKILL.md, inbox.cursors.json
//! DIR/registry/by_capability.json
//! DIR/channels/{id}/metadata.json, wal.jsonl          (one envelope per line, appended)
//! DIR/tasks/{id}/metadata.json, checkpoint.json, checkpoint_writers.json
//! DIR/audit/audit.jsonl                               (one record per line, appended)
//! DIR/hubsim.json                                     (hubsim's: ids reserved so far)
//! DIR/hubsim.lock                                     (held by the hub using DIR)
//! ```
//!
//! - `layout.rs`: the paths and each file's text, as ag2 writes it;
//! - `load.rs`: a directory read back into a `Store`, every failure located (file, line);
//! - `sync.rs`: [`DiskStore`] (the lock, what is on disk, incremental writes: appends to the
//!   `.jsonl` files, atomic rewrites of changed files, fsync) and [`DiskSync`] (when to write).

mod layout;
mod load;
mod sync;

#[cfg(test)]
mod tests;

pub use sync::{DiskStore, DiskSync, Opened, SyncPolicy, Written, IDS_RESERVED_BLOCK};

use std::io;
use std::path::{Path, PathBuf};

/// Why a store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A file does not hold what ag2 (or hubsim) writes there.
    #[error("{}: {message}", located(path, *line))]
    Corrupt {
        /// The file (or directory).
        path: PathBuf,
        /// The line of a `.jsonl` file, from 1.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Another process holds the store's lock file.
    #[error(
        "{}: another hubsim serve is using this store{}",
        path.display(),
        holder.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid written in it, if it reads.
        holder: Option<u32>,
    },
}

fn located(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}
