//! Merkle-tree anti-entropy (Dynamo §4.7): replicas converge without being read.
//!
//! Each node keeps a hash tree per partition over its primary copies ([`trees`]),
//! updated on every committed write and rebuilt from storage at start-up. The
//! [`AntiEntropyWorker`] walks, every `anti_entropy_interval_ms`, each partition this
//! node is a primary of and each other primary of it that is up, and runs an
//! [`exchange`] with it: compare roots, descend only into differing branches, then sync
//! the differing keys both ways with the DVV merge. It is rate-limited — at most
//! `anti_entropy_exchanges_per_s` exchanges and `anti_entropy_keys_per_s` keys repaired
//! per second — so it never starves client traffic. An admin request runs a full round
//! at once ([`AntiEntropy::run_round`]) and reads the state ([`AntiEntropy::status`]).
//!
//! Exchanges are serialised per node (one at a time), so the limits hold whether the
//! worker or an admin started them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynakv_common::ring::PartitionId;
use dynakv_common::wire::{AntiEntropyStatus, ExchangeRecord};
use dynakv_common::NodeId;

use crate::metrics::add;
use crate::state::NodeState;
use crate::worker::{Step, Worker};

pub mod exchange;
pub mod limit;
pub mod trees;

use limit::TokenBucket;
use trees::Trees;

/// Anti-entropy state shared by the worker, the admin request and the peer handlers.
pub struct AntiEntropy {
    /// This node's hash trees.
    pub trees: Arc<Trees>,
    limiter: Mutex<TokenBucket>,
    /// One exchange at a time.
    running: tokio::sync::Mutex<()>,
    /// One admin round at a time ([`AntiEntropy::run_round`]), and how many have begun.
    admin_round: tokio::sync::Mutex<()>,
    admin_rounds_begun: AtomicU64,
    exchanges: AtomicU64,
    exchanges_with_differences: AtomicU64,
    keys_repaired: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    last: Mutex<BTreeMap<(PartitionId, NodeId), ExchangeRecord>>,
}

impl AntiEntropy {
    /// Anti-entropy over `partitions` partitions, repairing at most `keys_per_s` keys a second.
    pub fn new(partitions: u32, keys_per_s: u64) -> Result<AntiEntropy, String> {
        Ok(AntiEntropy {
            trees: Arc::new(Trees::new(partitions)?),
            limiter: Mutex::new(TokenBucket::new(keys_per_s, Instant::now())),
            running: tokio::sync::Mutex::new(()),
            admin_round: tokio::sync::Mutex::new(()),
            admin_rounds_begun: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            exchanges_with_differences: AtomicU64::new(0),
            keys_repaired: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            last: Mutex::new(BTreeMap::new()),
        })
    }

    /// Takes `n` keys from the rate limit; returns how long to wait first.
    pub fn take_keys(&self, n: u64) -> Duration {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, Instant::now())
    }

    /// Every (partition, peer) pair this node exchanges: each partition it is a primary
    /// of, with each other primary of it.
    pub fn schedule(node: &NodeState) -> Vec<(PartitionId, NodeId)> {
        let me = node.membership.me().clone();
        node.with_placement(|placement| {
            placement
                .partitions_of(&me)
                .into_iter()
                .flat_map(|p| {
                    placement
                        .primaries(p)
                        .into_iter()
                        .filter(|peer| *peer != me)
                        .map(move |peer| (p, peer))
                })
                .collect()
        })
    }

    /// Runs one exchange (waiting for any other to finish) and records it.
    pub async fn exchange_one(
        node: &Arc<NodeState>,
        peer: &NodeId,
        p: PartitionId,
    ) -> ExchangeRecord {
        let ae = &node.anti_entropy;
        let _one_at_a_time = ae.running.lock().await;
        let outcome = exchange::exchange(node, peer, p).await;
        let r = &outcome.record;
        ae.exchanges.fetch_add(1, Ordering::Relaxed);
        if r.keys_differing > 0 {
            ae.exchanges_with_differences
                .fetch_add(1, Ordering::Relaxed);
        }
        ae.keys_repaired
            .fetch_add(outcome.repaired, Ordering::Relaxed);
        ae.bytes_sent.fetch_add(r.bytes_sent, Ordering::Relaxed);
        ae.bytes_received
            .fetch_add(r.bytes_received, Ordering::Relaxed);
        add(&node.counters.ae_exchanges, 1);
        add(&node.counters.ae_keys_repaired, outcome.repaired);
        add(&node.counters.ae_bytes_sent, r.bytes_sent);
        add(&node.counters.ae_bytes_received, r.bytes_received);
        if let Some(e) = &r.error {
            tracing::debug!(peer = %peer, partition = p, cause = %e, "anti-entropy exchange failed");
        } else if r.keys_differing > 0 {
            tracing::info!(peer = %peer, partition = p, keys = r.keys_differing, repaired = outcome.repaired, "anti-entropy repaired keys");
        }
        ae.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((p, peer.clone()), outcome.record.clone());
        outcome.record
    }

    /// Exchanges every partition with every other primary that is up, now (the
    /// exchange rate limit does not apply; the keys limit does).
    ///
    /// Admin rounds run one at a time, and requests that arrive while one is waiting or
    /// running share the next: a round begun after a request arrived answers it, so any
    /// number of concurrent requests cost at most two rounds, not one each.
    pub async fn run_round(node: &Arc<NodeState>) {
        if !node.anti_entropy.trees.is_ready() {
            return;
        }
        let ae = &node.anti_entropy;
        let arrived = ae.admin_rounds_begun.load(Ordering::SeqCst);
        let _one_round = ae.admin_round.lock().await;
        if ae.admin_rounds_begun.load(Ordering::SeqCst) > arrived {
            // A round begun after this request arrived has just finished.
            return;
        }
        ae.admin_rounds_begun.fetch_add(1, Ordering::SeqCst);
        for (p, peer) in AntiEntropy::schedule(node) {
            if node.membership.is_up(&peer) {
                AntiEntropy::exchange_one(node, &peer, p).await;
            }
        }
    }

    /// The state `dynakv admin anti-entropy` shows.
    pub fn status(&self, me: &NodeId) -> AntiEntropyStatus {
        AntiEntropyStatus {
            node: me.clone(),
            trees_ready: self.trees.is_ready(),
            exchanges: self.exchanges.load(Ordering::Relaxed),
            exchanges_with_differences: self.exchanges_with_differences.load(Ordering::Relaxed),
            keys_repaired: self.keys_repaired.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            last: self
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
        }
    }
}

/// The background exchanges: one full round per interval, one exchange per step.
pub struct AntiEntropyWorker {
    node: Arc<NodeState>,
    /// The (partition, peer) pairs left in the current round.
    pending: Vec<(PartitionId, NodeId)>,
    rounds: u64,
    round_started: Option<Instant>,
    last_round: Option<Duration>,
}

impl AntiEntropyWorker {
    pub fn new(node: Arc<NodeState>) -> AntiEntropyWorker {
        AntiEntropyWorker {
            node,
            pending: Vec::new(),
            rounds: 0,
            round_started: None,
            last_round: None,
        }
    }
}

impl Worker for AntiEntropyWorker {
    fn name(&self) -> &'static str {
        "anti-entropy"
    }

    async fn step(&mut self, _stop: &tokio::sync::watch::Receiver<bool>) -> Result<Step, String> {
        if !self.node.anti_entropy.trees.is_ready() {
            return Ok(Step::Idle);
        }
        if self.round_started.is_none() {
            self.pending = AntiEntropy::schedule(&self.node);
            self.pending.reverse(); // pop() takes them in order
            self.round_started = Some(Instant::now());
        }
        let Some((p, peer)) = self.pending.pop() else {
            self.rounds += 1;
            self.last_round = self.round_started.take().map(|t| t.elapsed());
            return Ok(Step::Idle);
        };
        if self.node.membership.is_up(&peer) {
            AntiEntropy::exchange_one(&self.node, &peer, p).await;
            let spacing = exchange::spacing(self.node.config.anti_entropy_exchanges_per_s);
            tokio::time::sleep(spacing).await;
        }
        Ok(Step::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(Duration::from_millis(
            self.node.config.anti_entropy_interval_ms,
        ))
        .await;
    }

    fn status(&self) -> String {
        let ae = &self.node.anti_entropy;
        let mut s = format!(
            "{} rounds; {} exchanges, {} keys repaired",
            self.rounds,
            ae.exchanges.load(Ordering::Relaxed),
            ae.keys_repaired.load(Ordering::Relaxed)
        );
        if let Some(d) = self.last_round {
            s.push_str(&format!("; last round took {:.1} s", d.as_secs_f64()));
        }
        if !self.pending.is_empty() {
            s.push_str(&format!(
                "; {} exchanges left in this round",
                self.pending.len()
            ));
        }
        if !ae.trees.is_ready() {
            s.push_str("; trees building");
        }
        s
    }
}
