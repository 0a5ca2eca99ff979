//! The replica: a key's versioned state on this node's disk.
//!
//! Every change is a read-modify-write of one key, serialised per key by the storage
//! layer and acknowledged only once durable: the coordinator's [`Replica::coordinate`]
//! (mint a dot, DVV paper §5 `update`) and a peer's [`Replica::merge`] (`sync`).
//! Stored values are a format byte followed by the postcard-encoded [`Versioned`].

use dynakv_common::version::{Actor, Clock, Versioned};

use crate::storage::{Change, Space, Storage, StorageError};

/// Format tag of stored states; bump when [`Versioned`]'s encoding changes.
const FORMAT_V1: u8 = 1;
/// Meta key holding this node's actor (node id + epoch).
const ACTOR_KEY: &[u8] = b"actor";

/// Errors applying a change to the local store.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored state of a key is unreadable ({reason}); the key was left untouched")]
    Corrupt { reason: String },
}

/// This node's versioned key-value state.
#[derive(Clone)]
pub struct Replica {
    storage: Storage,
    actor: Actor,
}

fn encode(state: &Versioned) -> Vec<u8> {
    postcard::to_extend(state, vec![FORMAT_V1])
        .expect("encoding a Versioned into a Vec cannot fail")
}

fn decode(bytes: &[u8]) -> Result<Versioned, ReplicaError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| ReplicaError::Corrupt {
            reason: e.to_string(),
        }),
        Some((tag, _)) => Err(ReplicaError::Corrupt {
            reason: format!("unknown format {tag}"),
        }),
        None => Err(ReplicaError::Corrupt {
            reason: "empty record".into(),
        }),
    }
}

impl Replica {
    /// Opens the replica, creating this node's actor on first start. A node whose data
    /// directory is new gets a new epoch, so it never re-mints dots it minted before a
    /// disk loss.
    pub async fn open(storage: Storage, node: &str) -> Result<Replica, ReplicaError> {
        let actor = match storage.get(Space::Meta, ACTOR_KEY).await? {
            Some(bytes) => Actor(String::from_utf8_lossy(&bytes).into_owned()),
            None => {
                let epoch: u32 = rand::random();
                let actor = format!("{node}.{epoch:08x}");
                storage
                    .put(Space::Meta, ACTOR_KEY.to_vec(), actor.clone().into_bytes())
                    .await?;
                Actor(actor)
            }
        };
        Ok(Replica { storage, actor })
    }

    /// This node's actor in version vectors.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The stored state of a key, if any.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Versioned>, ReplicaError> {
        match self.storage.get(Space::Data, key).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The coordinator's write: mints a dot, drops what `context` covers, stores the
    /// result durably and returns it.
    pub async fn coordinate(
        &self,
        key: Vec<u8>,
        context: Clock,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Versioned, ReplicaError> {
        let actor = self.actor.clone();
        self.storage
            .modify(Space::Data, key, move |old| {
                let mut state = match old.map(decode).transpose() {
                    Ok(s) => s.unwrap_or_default(),
                    Err(e) => return (Change::Keep, Err(e)),
                };
                state.update(&context, &actor, value, now_ms);
                (Change::Put(encode(&state)), Ok(state))
            })
            .await?
    }

    /// Merges a state from another replica into the stored one, durably; returns the result.
    pub async fn merge(
        &self,
        key: Vec<u8>,
        incoming: Versioned,
    ) -> Result<Versioned, ReplicaError> {
        self.storage
            .modify(Space::Data, key, move |old| {
                let mut state = match old.map(decode).transpose() {
                    Ok(s) => s.unwrap_or_default(),
                    Err(e) => return (Change::Keep, Err(e)),
                };
                state.merge(&incoming);
                (Change::Put(encode(&state)), Ok(state))
            })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_round_trip_and_garbage_is_reported() {
        let mut s = Versioned::new();
        s.update(&Clock::new(), &Actor("n1.1".into()), Some(b"v".to_vec()), 1);
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[FORMAT_V1, 0xff, 0xff, 0xff]).is_err());
    }
}
