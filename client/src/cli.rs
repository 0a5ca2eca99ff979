//! The `dynakv` command line (`src/main.rs` only calls [`main`]). Parses arguments, calls the client library,
//! prints results for people (or JSON with `--json`). Exits non-zero with one clear
//! line on failure.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::{self, BenchOptions};
use crate::settings::{Overrides, Settings};
use crate::show::{human_bytes, json_bytes};
use crate::{Client, ClientOptions, ReadOptions, WriteOptions};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use dynakv_common::limits::{Limits, LARGEST_MAX_KEY_BYTES, LARGEST_MAX_VALUE_BYTES};
use dynakv_common::quorum::Quorum;
use dynakv_common::replication::QuorumMode;
use dynakv_common::wire::ReadRepair;

use dynakv_common::version::decode_context;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "dynakv",
    version,
    about = "Read and write a dynakv cluster, show its status, benchmark it",
    after_help = "With no --node/--config, dynakv reads ./dynakv-dev/client.toml, written by `dynakv-node dev`."
)]
struct Cli {
    /// Node address host:port (repeatable or comma-separated); the next is tried if one
    /// is unreachable.
    #[arg(
        long = "node",
        global = true,
        env = "DYNAKV_NODES",
        value_delimiter = ','
    )]
    nodes: Vec<String>,
    /// Client settings file (nodes, ca, cert, key) [default: ./dynakv-dev/client.toml if present].
    #[arg(long, global = true, env = "DYNAKV_CONFIG")]
    config: Option<PathBuf>,
    /// Cluster CA certificate (PEM).
    #[arg(long, global = true, env = "DYNAKV_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), issued by the cluster CA.
    #[arg(long, global = true, env = "DYNAKV_CERT")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(
        long = "key",
        id = "key_file",
        value_name = "KEY_PEM",
        global = true,
        env = "DYNAKV_KEY"
    )]
    key_file: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Server-side deadline for the request, in milliseconds [default: the node's].
    #[arg(long, global = true)]
    timeout_ms: Option<u32>,
    /// Send a read with no answer after this many milliseconds to another node too (the
    /// first answer wins, and the slow node is passed over for 2 s); a write met with
    /// silence that long passes its node over too (it is not sent again); 0: neither.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        default_value_t = crate::client::DEFAULT_READ_HEDGE.as_millis() as u64
    )]
    read_hedge_ms: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a value. VALUE comes from the argument, --file, or stdin.
    Put {
        /// The key (1 byte to 1 KiB by default).
        key: String,
        /// The value; omit it to use --file or stdin.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Replicas that must store the write: 1..N, one, quorum or all.
        #[arg(long, default_value = "quorum")]
        w: Quorum,
        /// Context token from your last read of this key; replaces what that read saw.
        /// Without it the write is added next to existing values as a sibling.
        #[arg(long)]
        context: Option<String>,
        /// Count only the key's primary replicas toward W (Riak's PW): fail when fewer
        /// than W of them are up, instead of letting fallbacks stand in (sloppy quorum).
        #[arg(long)]
        strict: bool,
    },
    /// Read a key: every concurrent value (sibling) and the context to write back with.
    Get {
        /// The key to read.
        key: String,
        /// Replicas that must answer: 1..N, one, quorum or all.
        #[arg(long, default_value = "quorum")]
        r: Quorum,
        /// Count only the key's primary replicas toward R (Riak's PR).
        #[arg(long)]
        strict: bool,
        /// Repair replicas found behind: off, async (after the reply) or sync (before it,
        /// so the answer is on every replica that answered).
        #[arg(long, default_value = "async")]
        read_repair: ReadRepair,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        /// The key to delete.
        key: String,
        /// Replicas that must store the delete: 1..N, one, quorum or all.
        #[arg(long, default_value = "quorum")]
        w: Quorum,
        /// Context token from your last read: deletes exactly what that read saw. Without
        /// it, dynakv reads the key first (with --w as R) and deletes what that read sees;
        /// a value written concurrently and not yet seen survives as a sibling.
        #[arg(long)]
        context: Option<String>,
        /// Count only the key's primary replicas toward W (see put --strict).
        #[arg(long)]
        strict: bool,
    },
    /// Show the cluster as the connected node sees it.
    Status,
    /// Look inside one node (admin certificate needed).
    Debug {
        #[command(subcommand)]
        command: DebugCmd,
    },
    /// Operate the cluster's background repair (admin certificate needed).
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
    /// Tunable-consistency experiments on a local cluster of their own: stale reads vs
    /// R/W, latency vs W, lost writes under faults, with reports and charts.
    Lab {
        #[command(subcommand)]
        command: crate::labcmd::LabCmd,
    },
    /// The quorum table for N replicas: for every R and W, whether reads see the latest
    /// write, whether writes overlap, and how many replicas may be down.
    Quorum {
        /// Replicas per key.
        n: usize,
    },
    /// Drive the cluster with a read/write mix and report throughput and latency percentiles.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum DebugCmd {
    /// One node's local copy of a key: siblings with their dots, the clock, hints held
    /// for it. Use --node to pick the node (the first one given otherwise).
    Replica {
        /// The key.
        key: String,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Show the faults a node injects into its peer traffic; with --set FILE (a TOML
    /// fault spec, the `[fault]` table of docs/node.example.toml) or --clear, change them
    /// first. For experiments; `dynakv lab` does this for you.
    Faults {
        /// A TOML file with `rules = [...]`, `local`, `seed`.
        #[arg(long, conflicts_with = "clear")]
        set: Option<PathBuf>,
        /// Remove every fault.
        #[arg(long)]
        clear: bool,
    },
    /// A node's Merkle-tree anti-entropy: last exchange per partition and peer, keys
    /// repaired, bytes exchanged. With --now, run a full exchange round first.
    AntiEntropy {
        /// Exchange every partition with every other replica now, then show the state.
        #[arg(long)]
        now: bool,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Fraction of operations that are reads (0 = writes only, 1 = reads only).
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Number of distinct keys (at least --concurrency when the run writes: each worker
    /// writes keys of its own).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Stop after this many operations.
    #[arg(long)]
    ops: Option<u64>,
    /// Stop after this many seconds [default: 10 when --ops is not given].
    #[arg(long)]
    duration: Option<f64>,
    /// Read quorum.
    #[arg(long, default_value = "quorum")]
    r: Quorum,
    /// Write quorum.
    #[arg(long, default_value = "quorum")]
    w: Quorum,
    /// Key prefix.
    #[arg(long, default_value = "bench:")]
    prefix: String,
    /// Load data instead: write every key 0..KEYS exactly once (blind writes with --w),
    /// then stop. Ignores --read-ratio, --ops and --duration.
    #[arg(long)]
    fill: bool,
    /// Open loop: send this many operations per second in total (at most --concurrency in
    /// flight) and count each latency from when the operation was due, so stalls are not
    /// hidden. Without it each worker sends its next request when the last one answers.
    #[arg(long, value_name = "OPS_PER_S")]
    rate: Option<f64>,
    /// Send every request on a QUIC stream of its own instead of batching those queued
    /// at once for the same node (for comparison).
    #[arg(long)]
    no_coalesce: bool,
}

/// Parses the command line and runs the command; the whole program behind the binary.
/// The CLI runs on one thread: it waits on the network, not the CPU, and even
/// `dynakv bench` at hundreds in flight needs a fraction of a core, which it then
/// leaves to the nodes when they share the host.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = RuntimeOptions {
        threads: Some(1),
        ..RuntimeOptions::default()
    };
    run_binary("warn", runtime, run(cli))
}

/// The shared shell of the dynakv binaries: logs to stderr (`RUST_LOG`, else
/// `default_log`), runs `work` on a runtime of `threads` threads (None: one per core),
/// and turns an error into one `error: ...` line and a failing exit code.
///
/// One thread means tokio's current-thread scheduler, not a multi-threaded one with one
/// worker: every task, timer and socket is then driven by the thread that runs `work`,
/// so no request wakes a second thread (measured: +16% puts, +17-29% gets per node,
/// docs/benchmarks.md).
pub fn run_binary(
    default_log: &str,
    runtime: RuntimeOptions,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let RuntimeOptions {
        threads,
        idle_spin,
        idle_spin_light,
    } = runtime;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk, a closed pipe) is
        // dropped: reporting it would print to stderr too, and std's eprintln! panics
        // when that fails, killing whichever task was logging (a request, mid-write).
        .log_internal_errors(false)
        .init();
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    if !idle_spin.is_zero() || !idle_spin_light.is_zero() {
        dynakv_common::net::idle_spin::set(idle_spin);
        dynakv_common::net::idle_spin::set_light(idle_spin_light);
        builder.on_thread_park(dynakv_common::net::idle_spin::before_park);
    }
    if let Some(n) = threads.filter(|&n| n > 1) {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            report_error(format_args!("cannot start the runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report_error(format_args!("{e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

/// How [`run_binary`] builds its runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeOptions {
    /// Runtime threads: one is tokio's current-thread scheduler; `None`, tokio's default.
    pub threads: Option<usize>,
    /// How long a runtime thread polls for work before it sleeps (see
    /// [`dynakv_common::net::idle_spin`]); zero: it sleeps at once.
    pub idle_spin: std::time::Duration,
    /// How long instead while the process serves at most one request (see
    /// [`dynakv_common::net::idle_spin::set_light`]); zero: `idle_spin`.
    pub idle_spin_light: std::time::Duration,
}

/// Prints `error: ...` to stderr if it can (unlike `eprintln!`, never panics: the exit
/// code still says what happened when stderr is gone).
fn report_error(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::resolve(Overrides {
        config: cli.config.clone(),
        nodes: cli.nodes.clone(),
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key_file.clone(),
    })?)
}

async fn connect(
    settings: &Settings,
    nodes: Vec<String>,
    read_hedge: Option<Duration>,
) -> anyhow::Result<Arc<Client>> {
    connect_with(settings, nodes, true, read_hedge).await
}

async fn connect_with(
    settings: &Settings,
    nodes: Vec<String>,
    coalesce: bool,
    read_hedge: Option<Duration>,
) -> anyhow::Result<Arc<Client>> {
    let mut opts = ClientOptions::new(nodes, settings.tls_config()?);
    // The nodes enforce their own (configurable) limits and say which; the CLI only
    // refuses what no node could accept.
    opts.limits = Limits {
        max_key_bytes: LARGEST_MAX_KEY_BYTES,
        max_value_bytes: LARGEST_MAX_VALUE_BYTES,
    };
    opts.coalesce = coalesce;
    opts.read_hedge = read_hedge;
    Ok(Client::connect(opts).await?)
}

/// Prints the outcome of a put or delete: `{"context":..}` as JSON, else a line saying
/// `done` and how many replicas acknowledged, then the context to pass back.
fn print_write(
    out: &mut impl Write,
    json: bool,
    done: &str,
    r: &crate::PutResult,
) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", json!({ "context": r.context_token() }))
    } else {
        let replicas = if r.replicas_acked == 1 {
            "replica"
        } else {
            "replicas"
        };
        writeln!(out, "{done} ({} {replicas} acknowledged)", r.replicas_acked)?;
        writeln!(out, "context: {}", r.context_token())
    }
}

fn mode(strict: bool) -> QuorumMode {
    if strict {
        QuorumMode::Strict
    } else {
        QuorumMode::Sloppy
    }
}

fn parse_context(token: Option<&str>) -> anyhow::Result<Option<dynakv_common::Clock>> {
    token
        .map(decode_context)
        .transpose()
        .context("bad --context")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The lab and the quorum table need no cluster settings.
    match cli.command {
        Cmd::Lab { command } => {
            return crate::labcmd::run(command, cli.json, &mut std::io::stdout().lock()).await
        }
        Cmd::Quorum { n } => {
            return crate::labcmd::quorum(n, cli.json, &mut std::io::stdout().lock())
        }
        _ => {}
    }
    let s = settings(&cli)?;
    let hedge = (cli.read_hedge_ms > 0).then(|| Duration::from_millis(cli.read_hedge_ms));
    let out = &mut std::io::stdout().lock();
    match &cli.command {
        Cmd::Put {
            key,
            value,
            file,
            w,
            context,
            strict,
        } => {
            let value = match (value, file) {
                (Some(v), _) => v.clone().into_bytes(),
                (None, Some(path)) => std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => {
                    if std::io::stdin().is_terminal() {
                        bail!("no value: give VALUE, --file PATH, or pipe it on stdin");
                    }
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
            };
            let opts = WriteOptions {
                w: *w,
                mode: mode(*strict),
                context: parse_context(context.as_deref())?,
                timeout_ms: cli.timeout_ms,
            };
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let r = client.put(key.as_bytes(), value, opts).await?;
            print_write(out, cli.json, "ok", &r)?;
            client.close().await;
        }
        Cmd::Delete {
            key,
            w,
            context,
            strict,
        } => {
            let context = parse_context(context.as_deref())?;
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let context = match context {
                Some(c) => c,
                None => {
                    // A quorum read, whatever W: a delete should see what is there.
                    let read = ReadOptions {
                        r: Quorum::Quorum,
                        mode: mode(*strict),
                        timeout_ms: cli.timeout_ms,
                        ..ReadOptions::default()
                    };
                    client.get(key.as_bytes(), read).await?.context
                }
            };
            let opts = WriteOptions {
                w: *w,
                mode: mode(*strict),
                context: Some(context),
                timeout_ms: cli.timeout_ms,
            };
            let r = client.delete(key.as_bytes(), opts).await?;
            print_write(out, cli.json, "deleted", &r)?;
            client.close().await;
        }
        Cmd::Get {
            key,
            r,
            strict,
            read_repair,
        } => {
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let g = client
                .get(
                    key.as_bytes(),
                    ReadOptions {
                        r: *r,
                        mode: mode(*strict),
                        read_repair: *read_repair,
                        timeout_ms: cli.timeout_ms,
                    },
                )
                .await?;
            if cli.json {
                let values: Vec<_> = g.values.iter().map(|v| json_bytes(v)).collect();
                let doc = json!({
                    "key": key,
                    "found": g.found(),
                    "values": values,
                    "context": g.context_token(),
                });
                writeln!(out, "{doc}")?;
            } else {
                match g.values.len() {
                    0 => writeln!(out, "not found")?,
                    1 => writeln!(out, "{}", human_bytes(&g.values[0]))?,
                    n => {
                        writeln!(
                            out,
                            "{n} siblings (concurrent writes): resolve them and write back with --context"
                        )?;
                        for (i, v) in g.values.iter().enumerate() {
                            writeln!(out, "  [{}] {}", i + 1, human_bytes(v))?;
                        }
                    }
                }
                writeln!(out, "context: {}", g.context_token())?;
            }
            client.close().await;
        }
        Cmd::Status => {
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let st = client.status().await?;
            if cli.json {
                let members: Vec<_> = st
                    .members
                    .iter()
                    .map(|m| json!({"id": m.id.as_str(), "addr": m.addr, "up": m.up, "partitions": m.partitions}))
                    .collect();
                let counters: serde_json::Map<String, serde_json::Value> = st
                    .counters
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    json!({"node": st.node.as_str(), "version": st.version, "replicas": st.replicas,
                           "partitions": st.partitions, "keys": st.keys, "members": members, "counters": counters,
                           "hints_pending": st.hints_pending.iter().map(|(id, n)| (id.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                           "workers": st.workers, "latency": st.latency})
                )?;
            } else {
                writeln!(
                    out,
                    "node {} (dynakv {}), N={}, Q={}, ~{} keys stored here",
                    st.node, st.version, st.replicas, st.partitions, st.keys
                )?;
                writeln!(
                    out,
                    "{:<12} {:<24} {:<6} partitions",
                    "member", "address", "state"
                )?;
                for m in &st.members {
                    writeln!(
                        out,
                        "{:<12} {:<24} {:<6} {}",
                        m.id.as_str(),
                        m.addr,
                        if m.up { "up" } else { "DOWN" },
                        m.partitions
                    )?;
                }
                let counters: Vec<String> = st
                    .counters
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                writeln!(out, "counters: {}", counters.join(" "))?;
                if !st.hints_pending.is_empty() {
                    let hints: Vec<String> = st
                        .hints_pending
                        .iter()
                        .map(|(id, n)| format!("{id}={n}"))
                        .collect();
                    writeln!(out, "hints pending: {}", hints.join(" "))?;
                }
                for w in &st.workers {
                    writeln!(
                        out,
                        "worker {:<16} {:<8} {:>6} steps  {}",
                        w.name, w.state, w.steps, w.detail
                    )?;
                }
                for l in &st.latency {
                    let ms = |us: u64| us as f64 / 1000.0;
                    writeln!(
                        out,
                        "latency {:<12} n={:<8} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                        l.op,
                        l.count,
                        ms(l.p50_us),
                        ms(l.p90_us),
                        ms(l.p99_us),
                        ms(l.p999_us),
                        ms(l.max_us)
                    )?;
                }
            }
            client.close().await;
        }
        Cmd::Debug {
            command: DebugCmd::Replica { key },
        } => {
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let d = client.debug_replica(key.as_bytes()).await?;
            if cli.json {
                writeln!(out, "{}", crate::show::debug_json(&d))?;
            } else {
                write!(out, "{}", crate::show::debug_text(&d))?;
            }
            client.close().await;
        }
        Cmd::Admin {
            command: AdminCmd::Faults { set, clear },
        } => {
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            if *clear {
                client.set_faults(Default::default()).await?;
            } else if let Some(path) = set {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let spec: dynakv_common::wire::FaultSpec = toml::from_str(&text)
                    .with_context(|| format!("{} is not a fault spec", path.display()))?;
                client.set_faults(spec).await?;
            }
            let spec = client.faults().await?;
            if cli.json {
                writeln!(out, "{}", serde_json::to_string(&spec)?)?;
            } else {
                write!(out, "{}", toml::to_string(&spec).unwrap_or_default())?;
            }
            client.close().await;
        }
        Cmd::Admin {
            command: AdminCmd::AntiEntropy { now },
        } => {
            let client = connect(&s, s.nodes.clone(), hedge).await?;
            let st = client.anti_entropy(*now).await?;
            if cli.json {
                writeln!(out, "{}", serde_json::to_string(&st)?)?;
            } else {
                write!(out, "{}", crate::show::anti_entropy_text(&st))?;
            }
            client.close().await;
        }
        Cmd::Lab { .. } | Cmd::Quorum { .. } => unreachable!("handled above"),
        Cmd::Bench(args) => {
            if !(0.0..=1.0).contains(&args.read_ratio) {
                bail!("--read-ratio must be between 0 and 1");
            }
            if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                bail!("--rate must be a positive number of operations per second");
            }
            if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
                bail!("--duration must be a positive number of seconds");
            }
            if args.read_ratio < 1.0 && !args.fill && args.keys < u64::from(args.concurrency) {
                bail!(
                    "--keys {} is fewer than --concurrency {}: each worker writes keys of its own (so every write carries its key's latest context); use at least as many keys as workers, or --concurrency {} for a run over {} key(s)",
                    args.keys,
                    args.concurrency,
                    args.keys,
                    args.keys
                );
            }
            let mut clients = Vec::new();
            for i in 0..s.nodes.len() {
                // Each client starts at a different node so load is spread over the cluster.
                let mut order = s.nodes.clone();
                order.rotate_left(i);
                clients.push(connect_with(&s, order, !args.no_coalesce, hedge).await?);
            }
            // An R or W the cluster cannot meet would fail every operation: say so now.
            let n = usize::from(clients[0].status().await?.replicas);
            if args.read_ratio > 0.0 {
                args.r.resolve(n, "R")?;
            }
            if args.read_ratio < 1.0 || args.fill {
                args.w.resolve(n, "W")?;
            }
            let duration = match (args.duration, args.ops) {
                _ if args.fill => None,
                (Some(d), _) => Some(Duration::from_secs_f64(d)),
                (None, Some(_)) => None,
                (None, None) => Some(Duration::from_secs(10)),
            };
            let opts = BenchOptions {
                concurrency: args.concurrency as usize,
                keys: args.keys,
                value_size: args.value_size,
                read_ratio: if args.fill { 0.0 } else { args.read_ratio },
                ops: if args.fill { None } else { args.ops },
                fill: args.fill,
                rate: args.rate,
                duration,
                r: args.r,
                w: args.w,
                prefix: args.prefix.clone(),
                timeout_ms: cli.timeout_ms,
            };
            let bar = if std::io::stderr().is_terminal() && !cli.json {
                let len = if args.fill {
                    args.keys
                } else {
                    args.ops.unwrap_or(0)
                };
                let bar = if len > 0 {
                    indicatif::ProgressBar::new(len)
                } else {
                    indicatif::ProgressBar::new_spinner()
                };
                let template = if len > 0 {
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ops  {msg}"
                } else {
                    "{spinner} [{elapsed_precise}] {pos} ops  {msg}"
                };
                bar.set_style(
                    indicatif::ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                Some(bar)
            } else {
                None
            };
            let progress_bar = bar.clone();
            let started = std::time::Instant::now();
            let report = bench::run(clients.clone(), opts, move |done| {
                if let Some(b) = &progress_bar {
                    b.set_position(done);
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    b.set_message(format!("{rate:.0} ops/s"));
                }
            })
            .await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if cli.json {
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(out, "{}", bench::render(&report))?;
            }
            for c in clients {
                c.close().await;
            }
            if report.ops == 0 && report.errors > 0 {
                bail!(
                    "every operation failed ({} errors), e.g.: {}",
                    report.errors,
                    report.sample_errors.first().map_or("", String::as_str)
                );
            }
        }
    }
    Ok(())
}
