//! The lab's clients: sessions that read and write the cluster while faults come and go,
//! recording every operation ([`Op`]) with its invoke and complete times.
//!
//! Values are unique per key (`s3-17`: session 3's 17th write), so the checkers can tell
//! which write a read saw. A writer of the register workload writes each of its keys with
//! the context of its previous write of that key, so its own values replace each other
//! and only concurrent writers leave siblings. The set workload's writers read a key,
//! union the siblings' elements, add one element and write back with the read's context;
//! the probe workload writes fresh keys and reads each at fixed times after its
//! acknowledgement (PBS t-visibility as the model defines it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynakv_common::quorum::Quorum;
use dynakv_common::replication::QuorumMode;
use dynakv_common::version::{encode_context, Clock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{Op, OpKind, Outcome};
use super::scenario::{Route, Workload, WorkloadKind};
use crate::{Client, ClientError, ReadOptions, WriteOptions};

/// Collects operations as sessions complete them.
pub struct Recorder {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    /// Operations completed so far (for progress).
    pub done: AtomicU64,
}

impl Recorder {
    /// A recorder whose time zero is `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            next_id: AtomicU64::new(1),
            ops: Mutex::new(Vec::new()),
            done: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// The instant `ms` after the start.
    pub fn at(&self, ms: f64) -> Instant {
        self.start + Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    fn record(&self, mut op: Op) {
        op.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Every operation recorded.
    pub fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What a session needs: its number, one client per node, and the node addresses.
pub struct Session {
    pub id: u32,
    /// Clients in node order; `clients[i]` sends to node i first.
    pub clients: Vec<Arc<Client>>,
    pub addrs: Vec<String>,
}

fn outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::OutcomeUnknown { reason } => Outcome::Unknown {
            message: reason.clone(),
        },
        other => Outcome::Failed {
            message: other.to_string(),
        },
    }
}

/// Reads as text: every sibling's value.
fn values(raw: &[Vec<u8>]) -> Vec<String> {
    raw.iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// A set value's elements: the union of the siblings' comma-separated elements.
fn elements(raw: &[Vec<u8>]) -> BTreeSet<String> {
    raw.iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

struct Ctx<'a> {
    w: &'a Workload,
    rec: &'a Recorder,
    session: &'a Session,
    rng: ChaCha8Rng,
}

impl Ctx<'_> {
    fn pick_node(&mut self) -> usize {
        match self.w.route {
            Route::Random => self.rng.gen_range(0..self.session.clients.len()),
            Route::Sticky => self.session.id as usize % self.session.clients.len(),
        }
    }

    fn read_opts(&self) -> ReadOptions {
        ReadOptions {
            r: self.w.r,
            mode: mode(self.w.strict_reads),
            read_repair: self.w.read_repair,
            timeout_ms: self.w.timeout_ms,
        }
    }

    fn write_opts(&self, context: Option<Clock>) -> WriteOptions {
        WriteOptions {
            w: self.w.w,
            mode: mode(self.w.strict_writes),
            context,
            timeout_ms: self.w.timeout_ms,
        }
    }

    fn op(&self, node: usize, key: &str, kind: OpKind, quorum: Quorum, strict: bool) -> Op {
        Op {
            id: 0,
            session: self.session.id,
            node: self.session.addrs[node].clone(),
            key: key.to_string(),
            kind,
            quorum,
            strict,
            invoke_ms: self.rec.now_ms(),
            complete_ms: 0.0,
            outcome: Outcome::Ok,
            value: None,
            read: Vec::new(),
            context: None,
            siblings: 0,
        }
    }

    /// A read of `key` through node `node`, recorded.
    async fn read(&mut self, node: usize, key: &str, as_set: bool) {
        let mut op = self.op(node, key, OpKind::Read, self.w.r, self.w.strict_reads);
        let result = self.session.clients[node]
            .get(key.as_bytes(), self.read_opts())
            .await;
        op.complete_ms = self.rec.now_ms();
        match result {
            Ok(g) => {
                op.siblings = g.values.len() as u32;
                op.read = if as_set {
                    elements(&g.values).into_iter().collect()
                } else {
                    values(&g.values)
                };
                op.context = Some(g.context_token());
            }
            Err(e) => op.outcome = outcome(&e),
        }
        self.rec.record(op);
    }
}

fn mode(strict: bool) -> QuorumMode {
    if strict {
        QuorumMode::Strict
    } else {
        QuorumMode::Sloppy
    }
}

/// Paces a session at `rate` operations a second (0: back to back).
struct Pace {
    start: Instant,
    n: u64,
    rate: f64,
}

impl Pace {
    async fn next(&mut self) {
        self.n += 1;
        if self.rate > 0.0 {
            let at = self.start + Duration::from_secs_f64(self.n as f64 / self.rate);
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// Runs one session until `stop`: writer sessions are numbered first.
pub async fn run_session(
    w: Workload,
    rec: Arc<Recorder>,
    session: Session,
    writer: bool,
    seed: u64,
    stop: Instant,
) {
    let rate = if writer {
        w.write_rate.unwrap_or(w.rate)
    } else {
        w.rate
    };
    let mut pace = Pace {
        start: Instant::now(),
        n: 0,
        rate,
    };
    let mut ctx = Ctx {
        w: &w,
        rec: &rec,
        session: &session,
        rng: ChaCha8Rng::seed_from_u64(seed ^ (u64::from(session.id) << 32)),
    };
    let mut seq = 0u64;
    let mut contexts: HashMap<String, Clock> = HashMap::new();
    let mut probes = tokio::task::JoinSet::new();
    let padding = ".".repeat(w.value_size);
    while Instant::now() < stop {
        seq += 1;
        match (w.kind, writer) {
            (WorkloadKind::Register, true) => {
                let key = register_key(&w, session.id, &mut ctx.rng);
                let value = format!("s{}-{seq}{padding}", session.id);
                let node = ctx.pick_node();
                let mut op = ctx.op(node, &key, OpKind::Write, w.w, w.strict_writes);
                op.value = Some(value.clone());
                let context = contexts.get(&key).cloned();
                op.context = context.as_ref().map(encode_context);
                let result = session.clients[node]
                    .put(key.as_bytes(), value.into_bytes(), ctx.write_opts(context))
                    .await;
                op.complete_ms = rec.now_ms();
                match result {
                    Ok(p) => {
                        contexts.insert(key.clone(), p.context);
                    }
                    Err(e) => op.outcome = outcome(&e),
                }
                let acked = op.is_ok();
                rec.record(op);
                if w.read_own_writes && acked {
                    let node = ctx.pick_node();
                    ctx.read(node, &key, false).await;
                }
            }
            (WorkloadKind::Register, false) => {
                let key = format!("k{}", ctx.rng.gen_range(0..w.keys));
                let node = ctx.pick_node();
                ctx.read(node, &key, false).await;
            }
            (WorkloadKind::Set, true) => {
                let key = format!("set{}", ctx.rng.gen_range(0..w.keys));
                let element = format!("s{}-{seq}", session.id);
                let node = ctx.pick_node();
                let mut op = ctx.op(node, &key, OpKind::SetAdd, w.w, w.strict_writes);
                op.value = Some(element.clone());
                let client = &session.clients[node];
                let result = match client.get(key.as_bytes(), ctx.read_opts()).await {
                    Ok(g) => {
                        let mut set = elements(&g.values);
                        set.insert(element);
                        let joined = set.into_iter().collect::<Vec<_>>().join(",");
                        op.context = Some(g.context_token());
                        client
                            .put(
                                key.as_bytes(),
                                joined.into_bytes(),
                                ctx.write_opts(Some(g.context)),
                            )
                            .await
                            .map(|_| ())
                    }
                    // The add was never sent: a failed read, not an unknown write.
                    Err(e) => Err(ClientError::Unexpected(format!(
                        "the read before the add failed: {e}"
                    ))),
                };
                op.complete_ms = rec.now_ms();
                if let Err(e) = result {
                    op.outcome = outcome(&e);
                }
                rec.record(op);
            }
            (WorkloadKind::Set, false) => {
                let key = format!("set{}", ctx.rng.gen_range(0..w.keys));
                let node = ctx.pick_node();
                ctx.read(node, &key, true).await;
            }
            (WorkloadKind::Probe, true) => {
                let key = format!("probe:{}:{seq}", session.id);
                let value = format!("s{}-{seq}", session.id);
                let node = ctx.pick_node();
                let mut op = ctx.op(node, &key, OpKind::Write, w.w, w.strict_writes);
                op.value = Some(value.clone());
                let result = session.clients[node]
                    .put(key.as_bytes(), value.into_bytes(), ctx.write_opts(None))
                    .await;
                let acked_at = Instant::now();
                op.complete_ms = rec.now_ms();
                if let Err(e) = &result {
                    op.outcome = outcome(e);
                }
                let acked = op.is_ok();
                rec.record(op);
                if acked {
                    for &t in &w.probe_ms {
                        let node = ctx.pick_node();
                        let (client, addr) =
                            (session.clients[node].clone(), session.addrs[node].clone());
                        let (rec, key, w) = (rec.clone(), key.clone(), w.clone());
                        let sid = session.id;
                        probes.spawn(async move {
                            dynakv_common::timer::sleep(
                                (acked_at + Duration::from_secs_f64(t / 1000.0))
                                    .saturating_duration_since(Instant::now()),
                            )
                            .await;
                            probe_read(&w, &rec, sid, &client, &addr, &key).await;
                        });
                    }
                }
            }
            (WorkloadKind::Probe, false) => {
                // Probe runs have no plain readers; the writers read their own keys.
                break;
            }
        }
        pace.next().await;
    }
    while probes.join_next().await.is_some() {}
}

async fn probe_read(
    w: &Workload,
    rec: &Recorder,
    session: u32,
    client: &Client,
    addr: &str,
    key: &str,
) {
    let mut op = Op {
        id: 0,
        session,
        node: addr.to_string(),
        key: key.to_string(),
        kind: OpKind::Read,
        quorum: w.r,
        strict: w.strict_reads,
        invoke_ms: rec.now_ms(),
        complete_ms: 0.0,
        outcome: Outcome::Ok,
        value: None,
        read: Vec::new(),
        context: None,
        siblings: 0,
    };
    let opts = ReadOptions {
        r: w.r,
        mode: mode(w.strict_reads),
        read_repair: w.read_repair,
        timeout_ms: w.timeout_ms,
    };
    let result = client.get(key.as_bytes(), opts).await;
    op.complete_ms = rec.now_ms();
    match result {
        Ok(g) => {
            op.siblings = g.values.len() as u32;
            op.read = values(&g.values);
            op.context = Some(g.context_token());
        }
        Err(e) => op.outcome = outcome(&e),
    }
    rec.record(op);
}

/// A register writer's next key: its own share of the keys (all keys if there are
/// fewer keys than writers).
fn register_key(w: &Workload, session: u32, rng: &mut ChaCha8Rng) -> String {
    let writers = w.writers.max(1);
    if w.keys >= writers {
        let share = w.keys / writers;
        let k = rng.gen_range(0..share) * writers + session as usize % writers;
        format!("k{k}")
    } else {
        format!("k{}", rng.gen_range(0..w.keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_union_their_siblings() {
        let got = elements(&[b"a,b".to_vec(), b"b,c".to_vec(), Vec::new()]);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec!["a", "b", "c"]);
    }

    #[test]
    fn register_writers_own_disjoint_keys() {
        let w = Workload {
            writers: 3,
            keys: 10,
            ..Workload::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut owned: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
        for s in 0..3u32 {
            for _ in 0..200 {
                owned[s as usize].insert(register_key(&w, s, &mut rng));
            }
        }
        for a in 0..3 {
            for b in a + 1..3 {
                assert!(owned[a].is_disjoint(&owned[b]));
            }
        }
    }
}
