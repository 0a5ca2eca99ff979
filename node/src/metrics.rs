//! Counters an operator asks about: requests, quorum misses, read repairs, siblings.
//!
//! Plain atomics, cheap to bump on the request path, reported by `dynakv status` and,
//! when `metrics_listen` is set, exported to Prometheus: a task copies them into the
//! `metrics` registry each second (as `dynakv_<name>`), next to a few gauges.

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

/// How often counters are copied into the Prometheus registry.
pub const EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the Prometheus HTTP endpoint on `addr` (GET /metrics).
pub fn install_exporter(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot start the metrics endpoint on {addr}: {e}"))
}

/// Publishes named values: counters as Prometheus counters, the rest as gauges.
pub fn publish(counters: &[(String, u64)], gauges: &[(&'static str, f64)]) {
    for (name, value) in counters {
        metrics::counter!(format!("dynakv_{name}")).absolute(*value);
    }
    for (name, value) in gauges {
        metrics::gauge!(format!("dynakv_{name}")).set(*value);
    }
}
