//! The operation history a lab run records: one [`Op`] per request, written as JSON
//! lines, and a [`History`] that indexes them for the checkers.
//!
//! Conventions the checkers rely on:
//! - Times are milliseconds since the run started (`f64`), taken by the client just
//!   before sending (`invoke_ms`) and when the answer or the give-up came (`complete_ms`).
//! - Lab values are unique per key ("c3-17": session 3, its 17th write), so a value read
//!   identifies the write that produced it; set-workload elements are unique the same way.
//! - Real-time precedence: X strictly precedes Y iff X's effect ended before Y was
//!   invoked. A write only has a known end if it was acknowledged; a failed or unknown
//!   write may still be applied later (a coordinator that wrote locally, a hint delivered
//!   after a heal), so its end is +∞ and it precedes nothing ([`Op::end_ms`]).
//!
//! [`History::new`] validates the records (finite, ordered times; unique ids and values;
//! a value on every write) so checkers never meet nonsense, and sorts them by invocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dynakv_common::quorum::Quorum;
use serde::{Deserialize, Serialize};

use super::LabError;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A get; `read` holds the values returned.
    Read,
    /// A put of `value`.
    Write,
    /// A delete (a write of a tombstone).
    Delete,
    /// Set workload: add the element `value` to the key's set.
    SetAdd,
}

impl OpKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Delete => "delete",
            OpKind::SetAdd => "set_add",
        }
    }

    /// Whether this kind changes the key's register value (put or delete).
    pub fn is_register_write(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Delete)
    }
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: a read returned, a write reached its W.
    Ok,
    /// Refused or failed (e.g. quorum not reached). A failed write may still have been
    /// applied on some replicas and show up later.
    Failed {
        /// The error as the client printed it.
        message: String,
    },
    /// No answer (timeout, connection lost): may or may not have been applied.
    Unknown {
        /// What happened.
        message: String,
    },
}

/// One recorded operation: a JSON line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the run; reports cite operations by it.
    pub id: u64,
    /// The client session that issued it. A session issues one operation at a time.
    pub session: u32,
    /// The node address the request was sent to.
    pub node: String,
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// R for reads, W for writes, deletes and adds, as requested (`one`, `quorum`,
    /// `all` or a number).
    #[serde(with = "quorum_text")]
    pub quorum: Quorum,
    /// Whether the quorum was strict (primaries only) rather than sloppy.
    #[serde(default)]
    pub strict: bool,
    /// When the client sent it, ms since the run started.
    pub invoke_ms: f64,
    /// When the answer (or the give-up) came, ms since the run started.
    pub complete_ms: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// The value written (`Write`) or the element added (`SetAdd`); unique per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What a successful read returned: every sibling's value, or for a set key the
    /// elements of the union of the siblings. Empty: not found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    /// The context token a read returned or a write sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// How many siblings a successful read returned (before any union).
    #[serde(default)]
    pub siblings: u32,
}

impl Op {
    /// Whether the operation was acknowledged.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// When the operation's effect is known to have ended: `complete_ms` if it was
    /// acknowledged, +∞ otherwise (a failed or unknown write may be applied any time).
    pub fn end_ms(&self) -> f64 {
        if self.is_ok() {
            self.complete_ms
        } else {
            f64::INFINITY
        }
    }

    /// Real-time precedence: whether `self` ended before `other` was invoked.
    pub fn strictly_precedes(&self, other: &Op) -> bool {
        self.end_ms() < other.invoke_ms
    }

    /// How long the client waited, ms.
    pub fn latency_ms(&self) -> f64 {
        self.complete_ms - self.invoke_ms
    }
}

/// A validated history: operations sorted by invocation time (then id), with indexes by
/// key, session and written value.
#[derive(Debug, Clone, Default)]
pub struct History {
    ops: Vec<Op>,
    by_key: BTreeMap<String, Vec<usize>>,
    by_session: BTreeMap<u32, Vec<usize>>,
    /// key → written value or added element → index of the write or add.
    by_value: HashMap<String, HashMap<String, usize>>,
}

impl History {
    /// Validates and indexes `ops`: times finite, non-negative and `complete >= invoke`;
    /// ids unique; writes and adds carry a value unique within their key (per kind).
    pub fn new(mut ops: Vec<Op>) -> Result<History, LabError> {
        ops.sort_by(|a, b| a.invoke_ms.total_cmp(&b.invoke_ms).then(a.id.cmp(&b.id)));
        let mut history = History::default();
        let mut ids = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let invalid = |reason: String| LabError::InvalidHistory { id: op.id, reason };
            if !(op.invoke_ms.is_finite() && op.complete_ms.is_finite() && op.invoke_ms >= 0.0) {
                return Err(invalid(format!(
                    "times must be finite and non-negative, got invoke {} and complete {}",
                    op.invoke_ms, op.complete_ms
                )));
            }
            if op.complete_ms < op.invoke_ms {
                return Err(invalid(format!(
                    "completed at {} ms, before it was invoked at {} ms",
                    op.complete_ms, op.invoke_ms
                )));
            }
            if !ids.insert(op.id) {
                return Err(invalid("the id is used twice; ids must be unique".into()));
            }
            if matches!(op.kind, OpKind::Write | OpKind::SetAdd) {
                let Some(value) = &op.value else {
                    return Err(invalid(format!("a {} without a value", op.kind.as_str())));
                };
                // Writes and adds live in separate keys in practice; a key's written
                // values and added elements each identify their op.
                let slot = format!("{}:{value}", op.kind.as_str());
                if let Some(&other) = history
                    .by_value
                    .entry(op.key.clone())
                    .or_default()
                    .get(&slot)
                {
                    return Err(invalid(format!(
                        "value {value:?} of key {:?} was already written by operation {}; \
                         lab values must be unique so that a read identifies its write",
                        op.key, ops[other].id
                    )));
                }
                history
                    .by_value
                    .entry(op.key.clone())
                    .or_default()
                    .insert(slot, i);
            }
            history.by_key.entry(op.key.clone()).or_default().push(i);
            history.by_session.entry(op.session).or_default().push(i);
        }
        history.ops = ops;
        Ok(history)
    }

    /// Reads a history from JSON lines (blank lines are skipped) and validates it.
    pub fn from_json_lines(text: &str) -> Result<History, LabError> {
        let ops = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| LabError::UnreadableHistory {
                    line: i + 1,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<Op>, _>>()?;
        History::new(ops)
    }

    /// The history as JSON lines, one operation per line, in invocation order.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            // An Op is strings, numbers and enums only: serialising cannot fail, and a
            // record that somehow did would be skipped rather than abort the report.
            if let Ok(line) = serde_json::to_string(op) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Every operation, sorted by invocation time.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The keys that appear, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }

    /// The operations on `key`, by invocation time.
    pub fn ops_for_key<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Op> + 'a {
        self.indexed(self.by_key.get(key))
    }

    /// The sessions that appear, sorted.
    pub fn sessions(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_session.keys().copied()
    }

    /// The operations of `session`, by invocation time.
    pub fn ops_for_session(&self, session: u32) -> impl Iterator<Item = &Op> {
        self.indexed(self.by_session.get(&session))
    }

    /// The write (put) of `key` that wrote `value`, whatever its outcome.
    pub fn write_of(&self, key: &str, value: &str) -> Option<&Op> {
        self.by_value_slot(key, OpKind::Write, value)
    }

    /// The add of `element` to the set at `key`, whatever its outcome.
    pub fn add_of(&self, key: &str, element: &str) -> Option<&Op> {
        self.by_value_slot(key, OpKind::SetAdd, element)
    }

    fn by_value_slot(&self, key: &str, kind: OpKind, value: &str) -> Option<&Op> {
        let slot = format!("{}:{value}", kind.as_str());
        let i = *self.by_value.get(key)?.get(&slot)?;
        self.ops.get(i)
    }

    fn indexed<'a>(&'a self, idx: Option<&'a Vec<usize>>) -> impl Iterator<Item = &'a Op> + 'a {
        idx.into_iter()
            .flatten()
            .filter_map(move |&i| self.ops.get(i))
    }
}

/// Serde for [`Quorum`] as its text (`one`, `quorum`, `all`, `2`), which reads better in
/// a JSON line than the enum's derived form.
/// R and W as text (`one`, `quorum`, `all`, `2`); a bare number is accepted too.
pub(crate) mod quorum_text {
    use dynakv_common::quorum::Quorum;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(q: &Quorum, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(q)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Name(String),
        Number(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Quorum, D::Error> {
        let text = match Text::deserialize(d)? {
            Text::Name(s) => s,
            Text::Number(n) => n.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Builders for hand-written histories in the lab's unit tests.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// An acknowledged operation with the given times; adjust fields as needed.
    pub fn op(id: u64, session: u32, key: &str, kind: OpKind, invoke: f64, complete: f64) -> Op {
        Op {
            id,
            session,
            node: "127.0.0.1:7000".into(),
            key: key.into(),
            kind,
            quorum: Quorum::One,
            strict: false,
            invoke_ms: invoke,
            complete_ms: complete,
            outcome: Outcome::Ok,
            value: None,
            read: Vec::new(),
            context: None,
            siblings: 0,
        }
    }

    /// An acknowledged write of `value`.
    pub fn write(id: u64, session: u32, key: &str, value: &str, invoke: f64, complete: f64) -> Op {
        Op {
            value: Some(value.into()),
            ..op(id, session, key, OpKind::Write, invoke, complete)
        }
    }

    /// An acknowledged set add of `element`.
    pub fn add(id: u64, session: u32, key: &str, element: &str, invoke: f64, complete: f64) -> Op {
        Op {
            value: Some(element.into()),
            ..op(id, session, key, OpKind::SetAdd, invoke, complete)
        }
    }

    /// A successful read returning `values` (one sibling each).
    pub fn read(
        id: u64,
        session: u32,
        key: &str,
        values: &[&str],
        invoke: f64,
        complete: f64,
    ) -> Op {
        Op {
            read: values.iter().map(|v| v.to_string()).collect(),
            siblings: values.len() as u32,
            ..op(id, session, key, OpKind::Read, invoke, complete)
        }
    }

    /// `op` with an unknown outcome.
    pub fn unknown(op: Op) -> Op {
        Op {
            outcome: Outcome::Unknown {
                message: "timed out".into(),
            },
            ..op
        }
    }

    /// `op` failed.
    pub fn failed(op: Op) -> Op {
        Op {
            outcome: Outcome::Failed {
                message: "quorum not reached".into(),
            },
            ..op
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn json_lines_round_trip() {
        let ops = vec![
            Op {
                quorum: Quorum::Count(2),
                strict: true,
                context: Some("abc".into()),
                ..write(1, 0, "k", "c0-1", 0.0, 1.5)
            },
            unknown(write(2, 1, "k", "c1-1", 0.5, 9.0)),
            read(3, 1, "k", &["c0-1", "c1-1"], 10.0, 11.0),
        ];
        let h = History::new(ops.clone()).unwrap();
        let text = h.to_json_lines();
        assert!(text.contains(r#""quorum":"2""#), "{text}");
        assert!(text.contains(r#""outcome":{"status":"unknown","message":"timed out"}"#));
        let back = History::from_json_lines(&text).unwrap();
        assert_eq!(back.ops(), &ops[..]);
        assert_eq!(back.write_of("k", "c1-1").map(|o| o.id), Some(2));
        assert_eq!(back.ops_for_session(1).count(), 2);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["k"]);
    }

    #[test]
    fn refuses_nonsense_with_a_sentence() {
        let cases = [
            (
                vec![write(1, 0, "k", "a", 5.0, 4.0)],
                "before it was invoked",
            ),
            (vec![write(1, 0, "k", "a", f64::NAN, 4.0)], "finite"),
            (
                vec![
                    write(1, 0, "k", "a", 0.0, 1.0),
                    write(1, 0, "k", "b", 2.0, 3.0),
                ],
                "used twice",
            ),
            (
                vec![
                    write(1, 0, "k", "a", 0.0, 1.0),
                    write(2, 0, "k", "a", 2.0, 3.0),
                ],
                "must be unique",
            ),
            (
                vec![op(1, 0, "k", OpKind::Write, 0.0, 1.0)],
                "without a value",
            ),
        ];
        for (ops, needle) in cases {
            let err = History::new(ops).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = History::from_json_lines("{}\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn precedence_uses_the_acknowledged_end() {
        let a = write(1, 0, "k", "a", 0.0, 1.0);
        let b = write(2, 0, "k", "b", 2.0, 3.0);
        assert!(a.strictly_precedes(&b));
        assert!(!b.strictly_precedes(&a));
        // An unacknowledged write may land at any time: it precedes nothing.
        assert!(!unknown(a.clone()).strictly_precedes(&b));
        assert!(!failed(a).strictly_precedes(&b));
    }
}
