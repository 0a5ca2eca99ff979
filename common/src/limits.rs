//! Size limits for keys, values and frames.
//!
//! Limits are checked at the edges (the client before sending, the node before
//! storing, the codec before buffering a frame), so oversized input gets a clear
//! error instead of an allocation.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Default largest key: 1 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
/// Default largest value: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most a node's `max_key_bytes` may be set to: what a client may send to a node it
/// does not know the configuration of. Just under Cassandra's 64 KiB: the storage engine
/// takes keys of at most 65,535 bytes, and a node stores a user key behind up to 73
/// bytes of its own (placement hash, length, node id; `node/src/replica/layout.rs`
/// checks that the longest fits).
pub const LARGEST_MAX_KEY_BYTES: usize = 65_000;
/// The most a node's `max_value_bytes` may be set to.
pub const LARGEST_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// Room for everything in a frame besides values: keys, clocks, dots, framing.
const FRAME_OVERHEAD_BYTES: usize = 1024 * 1024;
/// A replica state may carry several siblings; a frame fits this many full-size values.
const MAX_FULL_SIBLINGS_PER_FRAME: usize = 16;

/// The size limits a node enforces and a client checks before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest accepted key in bytes.
    pub max_key_bytes: usize,
    /// Largest accepted value in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl Limits {
    /// Largest frame a reader buffers; anything larger is refused unread.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_value_bytes
            .saturating_mul(MAX_FULL_SIBLINGS_PER_FRAME)
            .saturating_add(FRAME_OVERHEAD_BYTES)
    }

    /// Checks a key: not empty, not longer than the limit.
    pub fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::TooLarge {
                what: "key",
                size: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a value against the limit.
    pub fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.max_value_bytes {
            return Err(Error::TooLarge {
                what: "value",
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked_against_limits() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        };
        assert!(limits.check_key(b"abcd").is_ok());
        assert_eq!(limits.check_key(b""), Err(Error::EmptyKey));
        assert!(matches!(
            limits.check_key(b"abcde"),
            Err(Error::TooLarge {
                what: "key",
                size: 5,
                limit: 4
            })
        ));
        assert!(limits.check_value(&[0; 8]).is_ok());
        assert!(limits.check_value(&[0; 9]).is_err());
        assert!(limits.max_frame_bytes() > 8 * 16);
    }
}
