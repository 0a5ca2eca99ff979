//! Counters an operator asks about (requests, quorum misses, read repairs, hints,
//! anti-entropy, reaping) and request latency histograms per operation.
//!
//! Counters are plain atomics, cheap to bump on the request path, reported by `dynakv
//! status` and, when `metrics_listen` is set, exported to Prometheus: a worker copies
//! them into the `metrics` registry each second (as `dynakv_<name>`), next to a few
//! gauges. Latencies go to an HDR histogram per operation (for `dynakv status`) and,
//! when the exporter is installed, to the Prometheus histogram
//! `dynakv_request_seconds{op}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dynakv_common::wire::LatencySummary;
use hdrhistogram::Histogram;

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
    /// Replicas brought up to date by read repair after the reply (`--read-repair async`).
    read_repairs_async,
    /// Replicas brought up to date by read repair before the reply (`--read-repair sync`).
    read_repairs_sync,
    /// Writes acknowledged by a fallback standing in for a down primary (sloppy quorum).
    sloppy_acks,
    /// Hints stored here for a down primary.
    hints_stored,
    /// Hints delivered to their primary and deleted here.
    hints_delivered,
    /// Hints refused because the hint store was full (anti-entropy repairs those keys).
    hints_dropped,
    /// Hints deleted undelivered because they outlived `hint_ttl_s`.
    hints_expired,
    /// Anti-entropy exchanges (one partition with one peer) this node started.
    ae_exchanges,
    /// Keys whose state changed on either side through anti-entropy.
    ae_keys_repaired,
    /// Bytes this node sent and received in anti-entropy exchanges it started.
    ae_bytes_sent,
    ae_bytes_received,
    /// Deleted keys whose tombstones were removed from this node's storage.
    tombstones_reaped,
    /// Reads that returned more than one sibling.
    reads_with_siblings,
    /// Extra replica reads sent because the ones asked first were slow to answer.
    speculative_reads,
    /// Requests from peers served (replica reads and writes).
    replica_requests,
    /// Client requests that arrived in a batch (a client coalescing what it had queued).
    client_batched_requests,
    /// Peer requests that arrived in a batch (a peer coalescing its replica messages).
    replica_batched_requests,
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

/// Bucket bounds of `dynakv_request_seconds`, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Starts the Prometheus HTTP endpoint on `addr` (GET /metrics).
pub fn install_exporter(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("dynakv_request_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("dynakv_fsync_seconds".into()),
                LATENCY_BUCKETS,
            )
        })
        .map_err(|e| format!("cannot configure the metrics endpoint: {e}"))?
        .install()
        .map_err(|e| format!("cannot start the metrics endpoint on {addr}: {e}"))
}

/// The operations whose latency is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
}

impl Op {
    const ALL: [Op; 3] = [Op::Get, Op::Put, Op::Delete];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

/// Latency histograms of client requests coordinated here, per operation.
pub struct Latency {
    histograms: [Mutex<Histogram<u64>>; 3],
}

impl Default for Latency {
    fn default() -> Self {
        let h = || {
            // 1 µs .. 100 s at 2 significant digits: small and fast to record into.
            Mutex::new(
                Histogram::new_with_bounds(1, 100_000_000, 2)
                    .expect("static histogram bounds are valid"),
            )
        };
        Latency {
            histograms: [h(), h(), h()],
        }
    }
}

impl Latency {
    /// Records one request's latency.
    pub fn record(&self, op: Op, took: Duration) {
        let micros = (took.as_micros() as u64).clamp(1, 100_000_000);
        let idx = Op::ALL.iter().position(|o| *o == op).unwrap_or(0);
        if let Ok(mut h) = self.histograms[idx].lock() {
            let _ = h.record(micros);
        }
        metrics::histogram!("dynakv_request_seconds", "op" => op.name()).record(took.as_secs_f64());
    }

    /// Percentiles per operation that has seen requests.
    pub fn summaries(&self) -> Vec<LatencySummary> {
        Op::ALL
            .iter()
            .zip(&self.histograms)
            .filter_map(|(op, h)| {
                let h = h.lock().ok()?;
                (!h.is_empty()).then(|| LatencySummary {
                    op: op.name().to_string(),
                    count: h.len(),
                    p50_us: h.value_at_quantile(0.5),
                    p90_us: h.value_at_quantile(0.9),
                    p99_us: h.value_at_quantile(0.99),
                    p999_us: h.value_at_quantile(0.999),
                    max_us: h.max(),
                })
            })
            .collect()
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
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
