//! Counters an operator asks about: requests, quorum misses, read repairs, siblings.
//!
//! Plain atomics, cheap to bump on the request path, reported by `dynakv status`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The node's counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter with its name, for status output.
            pub fn snapshot(&self) -> Vec<(String, u64)> {
                vec![$((stringify!($name).to_string(), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Client reads coordinated here.
    gets,
    /// Client writes and deletes coordinated here.
    puts,
    /// Writes forwarded to a replica because this node is not one.
    puts_forwarded,
    /// Reads that did not reach R.
    read_quorum_misses,
    /// Writes that did not reach W.
    write_quorum_misses,
    /// Replicas brought up to date by read repair.
    read_repairs,
    /// Reads that returned more than one sibling.
    reads_with_siblings,
    /// Requests from peers served (replica reads and writes).
    replica_requests,
    /// Requests refused because the node was at its in-flight limit.
    overload_refusals,
    /// Frames that could not be decoded or were too large.
    bad_frames,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
