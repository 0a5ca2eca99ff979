//! How the replica lays out its records in storage.
//!
//! - **Data** (`Space::Data`): key = the 8-byte big-endian placement hash of the user key
//!   (xxh3-64, the ring's hash), then the user key. Keys sort by hash, so a partition and
//!   a hash-tree segment are each one contiguous range (anti-entropy scans exactly the
//!   keys it compares). Value = a format byte, then the postcard-encoded `Versioned`.
//! - **Hints** (`Space::Hints`): key = hash, 2-byte key length, user key, then the id of
//!   the primary the hint is meant for; so all hints of one key share a prefix. Value =
//!   a format byte, the hint's creation time (8 bytes, ms since the epoch), then the
//!   postcard-encoded `Versioned`.
//! - **Tombstone index** (`Space::Tombstones`): the data key of every key whose state is
//!   tombstones only; value = when it was deleted (8 bytes, ms since the epoch).

use dynakv_common::ring::key_hash;
use dynakv_common::version::Versioned;
use dynakv_common::NodeId;

/// Format tag of stored states; bump when [`Versioned`]'s encoding changes.
const FORMAT_V1: u8 = 1;
/// Format tag of hint records.
const HINT_V1: u8 = 1;
/// Bytes of the hash prefix.
pub const HASH_BYTES: usize = 8;

// The longest record key (a hint's: hash, key length, the longest key a node may accept,
// the longest node id) fits the storage engine's limit, so no key a node accepts can be
// refused by the engine.
const _: () = assert!(
    HASH_BYTES + 2 + dynakv_common::limits::LARGEST_MAX_KEY_BYTES + NodeId::MAX_LEN
        <= crate::storage::MAX_KEY_BYTES
);

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored record is unreadable: {reason}")]
pub struct Corrupt {
    pub reason: String,
}

fn corrupt(reason: impl Into<String>) -> Corrupt {
    Corrupt {
        reason: reason.into(),
    }
}

/// The data key of a user key.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    data_key_with_hash(key_hash(key), key)
}

/// The data key of a user key whose hash is known.
pub fn data_key_with_hash(hash: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HASH_BYTES + key.len());
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The placement hash stored in a data (or hint) key.
pub fn hash_of(storage_key: &[u8]) -> Option<u64> {
    let bytes: [u8; HASH_BYTES] = storage_key.get(..HASH_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The user key inside a data key.
pub fn user_key(data_key: &[u8]) -> &[u8] {
    data_key.get(HASH_BYTES..).unwrap_or_default()
}

/// The storage range of data keys whose hash is in `[lo_hash, hi_hash]`: from `lo`
/// (inclusive) to `hi` (exclusive; None = to the end).
pub fn data_range(lo_hash: u64, hi_hash: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    let lo = lo_hash.to_be_bytes().to_vec();
    let hi = hi_hash.checked_add(1).map(|h| h.to_be_bytes().to_vec());
    (lo, hi)
}

/// The prefix shared by every hint of a user key.
pub fn hint_prefix(key: &[u8]) -> Vec<u8> {
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(HASH_BYTES + 2 + key.len() + 16);
    out.extend_from_slice(&key_hash(key).to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The hint key of a user key meant for `target`.
pub fn hint_key(key: &[u8], target: &NodeId) -> Vec<u8> {
    let mut out = hint_prefix(key);
    out.extend_from_slice(target.as_str().as_bytes());
    out
}

/// Splits a hint key into (user key, target).
pub fn split_hint_key(hint_key: &[u8]) -> Result<(Vec<u8>, NodeId), Corrupt> {
    let len_bytes: [u8; 2] = hint_key
        .get(HASH_BYTES..HASH_BYTES + 2)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("hint key too short"))?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let start = HASH_BYTES + 2;
    let key = hint_key
        .get(start..start + len)
        .ok_or_else(|| corrupt("hint key shorter than its key length"))?;
    let target = std::str::from_utf8(&hint_key[start + len..])
        .map_err(|_| corrupt("hint target is not UTF-8"))?;
    let target = NodeId::new(target).map_err(|e| corrupt(e.to_string()))?;
    Ok((key.to_vec(), target))
}

/// Encodes a state for the data space.
pub fn encode_state(state: &Versioned) -> Vec<u8> {
    postcard::to_extend(state, vec![FORMAT_V1])
        .expect("encoding a Versioned into a Vec cannot fail")
}

/// Decodes a state of the data space.
pub fn decode_state(bytes: &[u8]) -> Result<Versioned, Corrupt> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| corrupt(e.to_string())),
        Some((tag, _)) => Err(corrupt(format!("unknown format {tag}"))),
        None => Err(corrupt("empty record")),
    }
}

/// Encodes a hint record.
pub fn encode_hint(created_ms: u64, state: &Versioned) -> Vec<u8> {
    let mut out = vec![HINT_V1];
    out.extend_from_slice(&created_ms.to_be_bytes());
    postcard::to_extend(state, out).expect("encoding a Versioned into a Vec cannot fail")
}

/// Decodes a hint record into (creation time, state).
pub fn decode_hint(bytes: &[u8]) -> Result<(u64, Versioned), Corrupt> {
    match bytes.split_first() {
        Some((&HINT_V1, rest)) if rest.len() >= 8 => {
            let (time, body) = rest.split_at(8);
            let created = u64::from_be_bytes(time.try_into().expect("8 bytes"));
            let state = postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
            Ok((created, state))
        }
        Some((&HINT_V1, _)) => Err(corrupt("hint record too short")),
        Some((tag, _)) => Err(corrupt(format!("unknown hint format {tag}"))),
        None => Err(corrupt("empty hint record")),
    }
}

/// Encodes a time (ms since the epoch).
pub fn encode_time(ms: u64) -> Vec<u8> {
    ms.to_be_bytes().to_vec()
}

/// Decodes a time written by [`encode_time`].
pub fn decode_time(bytes: &[u8]) -> Result<u64, Corrupt> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt("time is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_common::version::{Actor, Clock};

    #[test]
    fn records_round_trip_and_garbage_is_reported() {
        let mut s = Versioned::new();
        s.update(&Clock::new(), &Actor("n1.1".into()), Some(b"v".to_vec()), 1);
        assert_eq!(decode_state(&encode_state(&s)).unwrap(), s);
        assert_eq!(decode_hint(&encode_hint(77, &s)).unwrap(), (77, s.clone()));
        assert!(decode_state(&[]).is_err());
        assert!(decode_state(&[9, 1, 2]).is_err());
        assert!(decode_state(&[FORMAT_V1, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_hint(&[HINT_V1, 1, 2]).is_err());
    }

    #[test]
    fn keys_sort_by_hash_and_split_back() {
        let k = data_key(b"cart:1");
        assert_eq!(hash_of(&k), Some(key_hash(b"cart:1")));
        assert_eq!(user_key(&k), b"cart:1");
        let (lo, hi) = data_range(key_hash(b"cart:1"), key_hash(b"cart:1"));
        assert!(lo <= k && hi.is_none_or(|hi| k < hi));
        let target = NodeId::new("n3").unwrap();
        let h = hint_key(b"cart:1", &target);
        assert!(h.starts_with(&hint_prefix(b"cart:1")));
        assert_eq!(split_hint_key(&h).unwrap(), (b"cart:1".to_vec(), target));
        assert!(split_hint_key(&[1, 2, 3]).is_err());
    }
}
