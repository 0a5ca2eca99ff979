//! `dynakv bench`: a closed-loop load generator with HDR-histogram latencies.
//!
//! `concurrency` workers each loop: pick read or write by `read_ratio`, pick a key, send,
//! record the latency. Workers are spread over the given nodes (one client connection
//! per node). Each worker writes only its own slice of the key space; before the clock
//! starts it reads each key of its slice once (up to [`WARM_UP_MAX_KEYS`] keys in all;
//! beyond that, a key's first write reads it first, untimed) and every write carries the
//! context of the worker's previous read or write, so the benchmark measures steady-state overwrites
//! instead of growing sibling lists. Reads pick any key.
//!
//! With a `rate`, the run is open-loop instead (as wrk2 does): operation i is due at
//! `start + i / rate`, the next free worker sends it when it is due, and its latency is
//! counted from when it was due, so a stall shows as the queueing delay a real client at
//! that rate would see rather than hiding it (coordinated omission).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_common::quorum::Quorum;
use dynakv_common::version::Clock;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, ClientError, ReadOptions, WriteOptions};
use crate::pacer::Pacer;

/// Up to this many keys, the workers fetch the contexts of the keys they write before
/// the clock starts, so the timed run is writes only.
pub const WARM_UP_MAX_KEYS: u64 = 100_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Workers sending requests at once.
    pub concurrency: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Fraction of operations that are reads, 0.0..=1.0.
    pub read_ratio: f64,
    /// Stop after this many operations in total...
    pub ops: Option<u64>,
    /// ...or after this long (if both, whichever comes first).
    pub duration: Option<Duration>,
    pub r: Quorum,
    pub w: Quorum,
    /// Key prefix, so runs can use separate key spaces.
    pub prefix: String,
    /// Server-side deadline per request in milliseconds (None: the node's default).
    pub timeout_ms: Option<u32>,
    /// Load mode: write every key `0..keys` exactly once (blind writes, no reads), then
    /// stop. For loading data before a measurement.
    pub fill: bool,
    /// Open-loop mode: send this many operations per second in total (at most
    /// `concurrency` in flight), counting latency from when each was due.
    pub rate: Option<f64>,
}

/// Latency summary of one operation type, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct OpStats {
    pub op: &'static str,
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub ops: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub concurrency: usize,
    pub value_size: usize,
    pub read_ratio: f64,
    pub r: String,
    pub w: String,
    /// The target rate of an open-loop run (None: closed loop).
    pub rate: Option<f64>,
    pub stats: Vec<OpStats>,
    /// Up to five distinct error messages seen.
    pub sample_errors: Vec<String>,
    /// Reads sent to a second node as well because the first had not answered within
    /// the client's hedge delay (see `ClientOptions::read_hedge`).
    pub hedged_reads: u64,
}

struct WorkerResult {
    get_errors: u64,
    put_errors: u64,
    errors: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// The latencies of a run: one histogram per operation, shared by every worker. (One
/// pair per worker was 240 KB each: at 512 workers a quarter of a gigabyte to allocate
/// and page in while the clock ran, which the bench then reported as a stall.)
struct Latencies {
    gets: std::sync::Mutex<Histogram<u64>>,
    puts: std::sync::Mutex<Histogram<u64>>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            gets: std::sync::Mutex::new(histogram()),
            puts: std::sync::Mutex::new(histogram()),
        }
    }

    fn record(&self, put: bool, micros: u64) {
        let h = if put { &self.puts } else { &self.gets };
        let _ = h
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(micros.max(1));
    }

    /// The gets and the puts recorded so far.
    fn snapshot(&self) -> (Histogram<u64>, Histogram<u64>) {
        let copy = |m: &std::sync::Mutex<Histogram<u64>>| {
            m.lock().unwrap_or_else(|p| p.into_inner()).clone()
        };
        (copy(&self.gets), copy(&self.puts))
    }
}

fn summarize(op: &'static str, h: &Histogram<u64>, errors: u64) -> OpStats {
    OpStats {
        op,
        count: h.len(),
        errors,
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

/// Runs a benchmark over `clients` (one per node), calling `progress` with the number of
/// completed operations about ten times a second.
pub async fn run(
    clients: Vec<Arc<Client>>,
    opts: BenchOptions,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<BenchReport, ClientError> {
    if clients.is_empty() {
        return Err(ClientError::NoNodes);
    }
    let counters = Arc::new(Counters::default());
    let schedule = opts.rate.filter(|r| *r > 0.0).map(Pacer::new);
    let n = opts.concurrency.max(1);
    let latencies = Arc::new(Latencies::new());
    // Every worker warms up, then all start together with the clock.
    let warmed = Arc::new(tokio::sync::Barrier::new(n + 1));
    let go = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut workers = Vec::new();
    for i in 0..n {
        let client = clients[i % clients.len()].clone();
        let opts = opts.clone();
        let counters = counters.clone();
        let schedule = schedule.clone();
        let (warmed, go) = (warmed.clone(), go.clone());
        let latencies = latencies.clone();
        workers.push(tokio::spawn(async move {
            let contexts = warm_up(i, &client, &opts).await;
            warmed.wait().await;
            go.wait().await;
            worker(i, client, opts, contexts, counters, schedule, latencies).await
        }));
    }
    warmed.wait().await;
    let hedged = |clients: &[Arc<Client>]| clients.iter().map(|c| c.hedged_reads()).sum::<u64>();
    let hedged_before = hedged(&clients);
    let started = Instant::now();
    // Stopped once every worker is done (a worker may wait for one more operation).
    let pacer = schedule.as_ref().map(|s| s.start(started));
    go.wait().await;
    let ticker = {
        let counters = counters.clone();
        let deadline = opts.duration.map(|d| started + d);
        tokio::spawn(async move {
            while !counters.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress(counters.done.load(Ordering::Relaxed));
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    counters.stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    let mut results = Vec::with_capacity(workers.len());
    for w in workers {
        if let Ok(r) = w.await {
            results.push(r);
        }
    }
    if let Some(pacer) = pacer {
        pacer.abort();
    }
    // The run ends when its last operation does, not after the results are merged.
    let elapsed = started.elapsed();
    let (gets, puts) = latencies.snapshot();
    let (mut get_errors, mut put_errors) = (0, 0);
    let mut sample_errors: Vec<String> = Vec::new();
    for r in results {
        get_errors += r.get_errors;
        put_errors += r.put_errors;
        for e in r.errors {
            if sample_errors.len() < 5 && !sample_errors.contains(&e) {
                sample_errors.push(e);
            }
        }
    }
    counters.stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    let ops = gets.len() + puts.len();
    let mut stats = Vec::new();
    if gets.len() + get_errors > 0 {
        stats.push(summarize("get", &gets, get_errors));
    }
    if puts.len() + put_errors > 0 {
        stats.push(summarize("put", &puts, put_errors));
    }
    Ok(BenchReport {
        ops,
        errors: get_errors + put_errors,
        elapsed_s: elapsed.as_secs_f64(),
        ops_per_s: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        concurrency: opts.concurrency,
        value_size: opts.value_size,
        read_ratio: opts.read_ratio,
        r: opts.r.to_string(),
        w: opts.w.to_string(),
        rate: opts.rate,
        stats,
        sample_errors,
        hedged_reads: hedged(&clients) - hedged_before,
    })
}

/// Before the clock starts: the contexts of the keys this worker writes (its slice of
/// the key space), when writes are part of the mix and there are few enough keys.
async fn warm_up(index: usize, client: &Client, opts: &BenchOptions) -> HashMap<u64, Clock> {
    let mut contexts = HashMap::new();
    if opts.fill || opts.read_ratio >= 1.0 || opts.keys > WARM_UP_MAX_KEYS {
        return contexts;
    }
    let workers = opts.concurrency.max(1) as u64;
    let keys = opts.keys.max(workers);
    let read_options = ReadOptions {
        r: opts.r,
        timeout_ms: opts.timeout_ms,
        ..ReadOptions::default()
    };
    for slot in 0..keys / workers {
        let k = slot * workers + index as u64;
        let key = format!("{}{k}", opts.prefix);
        if let Ok(g) = client.get(key.as_bytes(), read_options).await {
            contexts.insert(k, g.context);
        }
    }
    contexts
}

/// What the workers and the progress ticker share.
#[derive(Default)]
struct Counters {
    /// Operations completed.
    done: AtomicU64,
    /// Operations started (for `ops`).
    issued: AtomicU64,
    /// Set when the run is over.
    stop: AtomicBool,
}

async fn worker(
    index: usize,
    client: Arc<Client>,
    opts: BenchOptions,
    mut contexts: HashMap<u64, Clock>,
    counters: Arc<Counters>,
    schedule: Option<Arc<Pacer>>,
    latencies: Arc<Latencies>,
) -> WorkerResult {
    let mut result = WorkerResult {
        get_errors: 0,
        put_errors: 0,
        errors: Vec::new(),
    };
    let workers = opts.concurrency.max(1) as u64;
    let keys = opts.keys.max(workers);
    let keys = if opts.fill { opts.keys } else { keys };
    let mut rng = rand::rngs::StdRng::from_entropy();
    let value: Vec<u8> = (0..opts.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut next_fill = 0u64;
    loop {
        if counters.stop.load(Ordering::Relaxed) {
            break;
        }
        if opts.fill {
            // This worker's keys are index, index + workers, ...: each written once.
            let k = next_fill * workers + index as u64;
            if k >= opts.keys {
                break;
            }
            next_fill += 1;
            let key = format!("{}{k}", opts.prefix);
            let wopts = WriteOptions {
                w: opts.w,
                timeout_ms: opts.timeout_ms,
                ..WriteOptions::default()
            };
            let t0 = Instant::now();
            match client.put(key.as_bytes(), value.clone(), wopts).await {
                Ok(_) => {
                    latencies.record(true, t0.elapsed().as_micros() as u64);
                }
                Err(e) => {
                    result.put_errors += 1;
                    if result.errors.len() < 5 {
                        result.errors.push(e.to_string());
                    }
                }
            }
            counters.done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(limit) = opts.ops {
            if counters.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        let read = rng.gen_bool(opts.read_ratio.clamp(0.0, 1.0));
        let read_options = ReadOptions {
            r: opts.r,
            timeout_ms: opts.timeout_ms,
            ..ReadOptions::default()
        };
        let outcome = if read {
            let k = rng.gen_range(0..keys);
            let key = format!("{}{k}", opts.prefix);
            let t0 = match &schedule {
                Some(s) => s.next_due().await,
                None => Instant::now(),
            };
            let r = client.get(key.as_bytes(), read_options).await.map(|_| ());
            (r, t0.elapsed())
        } else {
            // This worker owns keys congruent to its index.
            let slot = rng.gen_range(0..keys / workers);
            let k = slot * workers + index as u64;
            let key = format!("{}{k}", opts.prefix);
            // The first write of a key in this run starts from a read (not timed), like a
            // real client, so it replaces what earlier runs left instead of adding a sibling.
            if let Entry::Vacant(slot) = contexts.entry(k) {
                if let Ok(g) = client.get(key.as_bytes(), read_options).await {
                    slot.insert(g.context);
                }
            }
            let wopts = WriteOptions {
                w: opts.w,
                context: contexts.get(&k).cloned(),
                timeout_ms: opts.timeout_ms,
                ..WriteOptions::default()
            };
            let t0 = match &schedule {
                Some(s) => s.next_due().await,
                None => Instant::now(),
            };
            let r = client
                .put(key.as_bytes(), value.clone(), wopts)
                .await
                .map(|r| {
                    contexts.insert(k, r.context);
                });
            (r, t0.elapsed())
        };
        let (outcome, elapsed) = outcome;
        let micros = (elapsed.as_micros() as u64).max(1);
        match (outcome, read) {
            (Ok(()), true) => {
                latencies.record(false, micros);
            }
            (Ok(()), false) => {
                latencies.record(true, micros);
            }
            (Err(e), read) => {
                if read {
                    result.get_errors += 1;
                } else {
                    result.put_errors += 1;
                }
                if result.errors.len() < 5 {
                    result.errors.push(e.to_string());
                }
            }
        }
        counters.done.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Formats a report as a table.
pub fn render(report: &BenchReport) -> String {
    let mut out = format!(
        "{} ops in {:.2} s = {:.0} ops/s  ({}concurrency {}, {}-byte values, read ratio {:.2}, R={} W={}, {} errors)\n",
        report.ops,
        report.elapsed_s,
        report.ops_per_s,
        report
            .rate
            .map(|r| format!("open loop at {r:.0}/s, "))
            .unwrap_or_default(),
        report.concurrency,
        report.value_size,
        report.read_ratio,
        report.r,
        report.w,
        report.errors
    );
    out.push_str("op     count    errors   p50 ms   p90 ms   p99 ms  p99.9 ms   max ms\n");
    let ms = |us: u64| us as f64 / 1000.0;
    for s in &report.stats {
        out.push_str(&format!(
            "{:<5} {:>7} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2}\n",
            s.op,
            s.count,
            s.errors,
            ms(s.p50_us),
            ms(s.p90_us),
            ms(s.p99_us),
            ms(s.p999_us),
            ms(s.max_us)
        ));
    }
    if report.hedged_reads > 0 {
        out.push_str(&format!(
            "{} reads hedged: sent to a second node after no answer from the first within the hedge delay\n",
            report.hedged_reads
        ));
    }
    for e in &report.sample_errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}
