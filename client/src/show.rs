//! How the CLI shows a replica's local state and a node's anti-entropy status: plain
//! text for people, JSON for tools. Values that are not UTF-8 print as base64.

use std::fmt::Write as _;

use base64::Engine;
use dynakv_common::version::{encode_context, Versioned};
use dynakv_common::wire::{AntiEntropyStatus, DebugReplica};
use serde_json::{json, Value};

/// A value as JSON: a string if it is UTF-8, else `{"base64": "..."}`.
pub fn json_bytes(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// A value for people: the text if it is UTF-8, else base64 marked as such.
pub fn human_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!(
            "(binary, base64) {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

fn clock_text(state: &Versioned) -> String {
    let entries: Vec<String> = state
        .clock()
        .dots
        .iter()
        .map(|(actor, counter)| format!("{actor}:{counter}"))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn state_json(state: &Versioned) -> Value {
    let siblings: Vec<Value> = state
        .siblings()
        .iter()
        .map(|s| {
            json!({
                "dot": {"actor": s.dot.actor.0, "counter": s.dot.counter},
                "value": s.value.as_deref().map(json_bytes),
                "tombstone": s.value.is_none(),
                "written_at_ms": s.written_at_ms,
            })
        })
        .collect();
    let clock: serde_json::Map<String, Value> = state
        .clock()
        .dots
        .iter()
        .map(|(a, c)| (a.0.clone(), json!(c)))
        .collect();
    json!({
        "clock": clock,
        "context": encode_context(state.clock()),
        "digest": format!("{:032x}", state.digest()),
        "siblings": siblings,
    })
}

fn state_text(out: &mut String, indent: &str, state: &Versioned) {
    let _ = writeln!(
        out,
        "{indent}clock {}  digest {:032x}",
        clock_text(state),
        state.digest()
    );
    if state.siblings().is_empty() {
        let _ = writeln!(out, "{indent}no siblings");
    }
    for s in state.siblings() {
        let what = match &s.value {
            Some(v) => human_bytes(v),
            None => "(tombstone)".to_string(),
        };
        let _ = writeln!(
            out,
            "{indent}({}, {}) {what}  written at {} ms",
            s.dot.actor, s.dot.counter, s.written_at_ms
        );
    }
}

/// `dynakv debug replica --json`.
pub fn debug_json(d: &DebugReplica) -> Value {
    let hints: Vec<Value> = d
        .hints
        .iter()
        .map(|(target, state, age)| json!({"for": target.as_str(), "age_ms": age, "state": state_json(state)}))
        .collect();
    json!({
        "node": d.node.as_str(),
        "partition": d.partition,
        "primaries": d.primaries.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "is_primary": d.primaries.contains(&d.node),
        "state": d.state.as_ref().map(state_json),
        "hints": hints,
        "tombstone_since_ms": d.tombstone_since_ms,
    })
}

/// `dynakv debug replica`, for people.
pub fn debug_text(d: &DebugReplica) -> String {
    let mut out = String::new();
    let primaries: Vec<&str> = d.primaries.iter().map(|p| p.as_str()).collect();
    let role = if d.primaries.contains(&d.node) {
        "a primary"
    } else {
        "not a primary"
    };
    let _ = writeln!(
        out,
        "node {} ({role}); partition {}; primaries {}",
        d.node,
        d.partition,
        primaries.join(" ")
    );
    match &d.state {
        Some(state) => {
            let _ = writeln!(out, "stored state:");
            state_text(&mut out, "  ", state);
        }
        None => {
            let _ = writeln!(out, "stored state: none");
        }
    }
    if let Some(at) = d.tombstone_since_ms {
        let _ = writeln!(
            out,
            "deleted (tombstones only) since {at} ms; awaiting reaping"
        );
    }
    if d.hints.is_empty() {
        let _ = writeln!(out, "hints held here: none");
    }
    for (target, state, age) in &d.hints {
        let _ = writeln!(
            out,
            "hint pending for {target} (held {:.1} s):",
            *age as f64 / 1000.0
        );
        state_text(&mut out, "  ", state);
    }
    out
}

/// `dynakv admin anti-entropy`, for people.
pub fn anti_entropy_text(s: &AntiEntropyStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}: trees {}; {} exchanges ({} found differences), {} keys repaired, {} bytes sent, {} received",
        s.node,
        if s.trees_ready { "ready" } else { "building" },
        s.exchanges,
        s.exchanges_with_differences,
        s.keys_repaired,
        s.bytes_sent,
        s.bytes_received
    );
    if s.last.is_empty() {
        let _ = writeln!(out, "no exchange yet");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>9} {:<12} {:>14} {:>9} {:>9} {:>10} {:>10}  result",
        "partition", "peer", "at (ms)", "differing", "compared", "sent B", "recv B"
    );
    for r in &s.last {
        let _ = writeln!(
            out,
            "{:>9} {:<12} {:>14} {:>9} {:>9} {:>10} {:>10}  {}",
            r.partition,
            r.peer.as_str(),
            r.at_ms,
            r.keys_differing,
            r.nodes_compared,
            r.bytes_sent,
            r.bytes_received,
            r.error.as_deref().unwrap_or("ok")
        );
    }
    out
}
