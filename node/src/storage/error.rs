//! Storage errors, and the classification of engine errors (disk full, poisoned).

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened.
    #[error("cannot open storage at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: fjall::Error,
    },
    /// Another process (or another `Storage` in this one) has the database open.
    #[error("storage at {} is locked: another process or handle has it open", path.display())]
    Locked { path: PathBuf },
    /// The engine reported an error.
    #[error("storage {op} failed: {source}")]
    Engine {
        op: &'static str,
        #[source]
        source: fjall::Error,
    },
    /// The disk is full (ENOSPC). Nothing of the failed operation was acknowledged.
    #[error("storage {op} failed: the disk is full (ENOSPC); the write was not acknowledged; free space and restart the node")]
    DiskFull { op: &'static str },
    /// An fsync failed: the write was not acknowledged, and the store refuses further
    /// writes because what reached the disk is unknown.
    #[error("storage {op} failed: fsync failed ({reason}); the write was not acknowledged and the store refuses writes until the node restarts")]
    SyncFailed { op: &'static str, reason: String },
    /// The engine refuses writes after an earlier write or fsync failure.
    #[error("storage {op} refused: an earlier write or fsync failed and the engine is poisoned; restart the node")]
    Poisoned { op: &'static str },
    /// The store was closed (or is closing); the operation was not acknowledged.
    #[error("storage is closed; the {op} was not acknowledged")]
    Closed { op: &'static str },
    /// A blocking task failed, e.g. a `modify` closure panicked.
    #[error("storage {op} task failed: {reason}")]
    Task { op: &'static str, reason: String },
    /// A key longer than the engine stores (it would panic on it); nothing was done.
    #[error("storage {op} refused: a key of {len} bytes is longer than the storage engine's limit of {} bytes", super::MAX_KEY_BYTES)]
    KeyTooLong { op: &'static str, len: usize },
}

impl StorageError {
    /// Classifies an engine error: disk full and poisoned get their own variants.
    pub(super) fn engine(op: &'static str, source: fjall::Error) -> StorageError {
        if is_disk_full(&source) {
            StorageError::DiskFull { op }
        } else if matches!(source, fjall::Error::Poisoned) {
            StorageError::Poisoned { op }
        } else {
            StorageError::Engine { op, source }
        }
    }

    pub(super) fn task(op: &'static str, e: tokio::task::JoinError) -> StorageError {
        let reason = if e.is_panic() {
            "it panicked".to_string()
        } else {
            e.to_string()
        };
        StorageError::Task { op, reason }
    }

    /// Whether retrying on this node cannot help until it restarts (disk full, failed
    /// fsync, poisoned engine).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StorageError::DiskFull { .. }
                | StorageError::SyncFailed { .. }
                | StorageError::Poisoned { .. }
        )
    }
}

/// True if `e` (or anything in its source chain) is an ENOSPC I/O error.
pub(super) fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOSPC)
                || io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// A failed fsync, as remembered by the syncer and shown to every waiter.
#[derive(Debug, Clone)]
pub(super) struct SyncFailure {
    pub(super) disk_full: bool,
    pub(super) reason: String,
}

impl SyncFailure {
    pub(super) fn to_error(&self, op: &'static str) -> StorageError {
        if self.disk_full {
            StorageError::DiskFull { op }
        } else {
            StorageError::SyncFailed {
                op,
                reason: self.reason.clone(),
            }
        }
    }
}
