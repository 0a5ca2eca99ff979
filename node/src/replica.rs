//! The replica: a key's versioned state on this node's disk.
//!
//! Every change is a read-modify-write of one key, serialised per key by the storage
//! layer and acknowledged only once durable: the coordinator's [`Replica::coordinate`]
//! (mint a dot, DVV paper §5 `update`) and a peer's [`Replica::merge`] (`sync`).
//! Stored values are a format byte followed by the postcard-encoded [`Versioned`].

use crdts::Dot;
use dynakv_common::version::{Actor, Clock, Versioned};

use crate::storage::{Change, Durability, Space, Storage, StorageError};

/// Format tag of stored states; bump when [`Versioned`]'s encoding changes.
const FORMAT_V1: u8 = 1;
/// Meta key holding this node's actor (node id + epoch).
const ACTOR_KEY: &[u8] = b"actor";
/// Meta key present only while the node is stopped after a clean shutdown.
const CLEAN_KEY: &[u8] = b"clean-shutdown";

/// Errors applying a change to the local store.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored state of a key is unreadable ({reason}); the key was left untouched")]
    Corrupt { reason: String },
    #[error("the key's state would grow to {size} bytes ({siblings} siblings), over the limit of {limit} bytes; read the key and write back with its context to resolve its siblings")]
    StateTooLarge {
        size: usize,
        siblings: usize,
        limit: usize,
    },
}

/// This node's versioned key-value state.
#[derive(Clone)]
pub struct Replica {
    storage: Storage,
    actor: Actor,
    /// Largest encoded state a client write may produce, so every state fits in a frame.
    state_budget: usize,
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
    /// Opens the replica and picks this node's actor.
    ///
    /// The actor is reused only after a clean shutdown. A new data directory, or a node
    /// that was killed, gets a new epoch: a killed node may have shown a write to a reader
    /// (and read repair may have spread it) before the write's fsync, and must not mint
    /// that dot again for another value. The cost is one more clock entry per crash.
    pub async fn open(
        storage: Storage,
        node: &str,
        state_budget: usize,
    ) -> Result<Replica, ReplicaError> {
        let previous = storage.get(Space::Meta, ACTOR_KEY).await?;
        // Without fsync a crash can bring back an old clean marker while losing writes
        // made after it, so relaxed durability always takes a new epoch.
        let clean = storage.get(Space::Meta, CLEAN_KEY).await?.is_some()
            && storage.durability() == Durability::Fsync;
        let actor = match previous {
            Some(bytes) if clean => Actor(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {
                let epoch: u32 = rand::random();
                let actor = format!("{node}.{epoch:08x}");
                storage
                    .put(Space::Meta, ACTOR_KEY.to_vec(), actor.clone().into_bytes())
                    .await?;
                Actor(actor)
            }
        };
        if clean {
            storage.delete(Space::Meta, CLEAN_KEY.to_vec()).await?;
        }
        Ok(Replica {
            storage,
            actor,
            state_budget,
        })
    }

    /// Records a clean shutdown, so the next start keeps this actor. Call after the
    /// last write, just before closing storage.
    pub async fn mark_clean_shutdown(&self) -> Result<(), ReplicaError> {
        self.storage
            .put(
                Space::Meta,
                CLEAN_KEY.to_vec(),
                self.actor.0.clone().into_bytes(),
            )
            .await?;
        Ok(())
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
    /// result durably and returns it with the new dot. A write that would make the key's
    /// state larger than the budget is refused and nothing is stored.
    pub async fn coordinate(
        &self,
        key: Vec<u8>,
        context: Clock,
        value: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<(Versioned, Dot<Actor>), ReplicaError> {
        let actor = self.actor.clone();
        let limit = self.state_budget;
        self.storage
            .modify(Space::Data, key, move |old| {
                let mut state = match old.map(decode).transpose() {
                    Ok(s) => s.unwrap_or_default(),
                    Err(e) => return (Change::Keep, Err(e)),
                };
                let dot = state.update(&context, &actor, value, now_ms);
                let bytes = encode(&state);
                if bytes.len() > limit {
                    let err = ReplicaError::StateTooLarge {
                        size: bytes.len(),
                        siblings: state.siblings().len(),
                        limit,
                    };
                    return (Change::Keep, Err(err));
                }
                (Change::Put(bytes), Ok((state, dot)))
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
