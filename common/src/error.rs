//! The error type of `dynakv-common`: invalid arguments and undecodable bytes.
//! Every message says what was wrong and what was expected.

/// Errors from the pure logic: bad parameters, bad tokens, bad frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// R or W was not one of `one`, `quorum`, `all` or a number in 1..=N.
    #[error("invalid {what}: {value:?} (expected one, quorum, all or a number from 1 to {n})")]
    InvalidQuorum {
        what: &'static str,
        value: String,
        n: usize,
    },
    /// R or W was not `one`, `quorum`, `all` or a positive number (N not yet known).
    #[error("invalid quorum {value:?} (expected one, quorum, all or a number from 1 to N, the replicas per key)")]
    UnparsableQuorum { value: String },
    /// The ring parameters make no sense.
    #[error("invalid ring: {reason}")]
    InvalidRing { reason: String },
    /// A node id that cannot be used as a TLS server name.
    #[error("invalid node id {id:?}: use 1-63 characters a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidNodeId { id: String },
    /// A context token that is not base64 of a postcard-encoded clock.
    #[error("invalid context token: {reason} (pass back the token exactly as a read printed it)")]
    InvalidContext { reason: String },
    /// A key or value or frame larger than the configured limit.
    #[error("{what} is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// An empty key.
    #[error("the key is empty; keys must be 1 byte or longer")]
    EmptyKey,
    /// Bytes that do not decode as the expected message.
    #[error("malformed message: {reason}")]
    Malformed { reason: String },
}
