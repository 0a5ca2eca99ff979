//! Fault injection in the node's own transport, for the lab and for tests: this kernel
//! has no netem, so delays, loss and partitions are applied to the messages a node
//! exchanges with its peers ([`FaultSpec`], see its docs for the semantics).
//!
//! Off unless configured (`[fault]` in the node config) or set at run time by an admin
//! request (`SetFaults`, admin or node certificate only). While off, the request path
//! pays one relaxed atomic load per peer message ([`Faults::is_active`]).
//!
//! Where each fault acts:
//! - the sender of a request ([`Faults::outgoing`]): a cut link or a lost message means
//!   the request is never sent (the caller waits out its deadline, as on a silent
//!   network); otherwise it is sent after the request delay (W or R), and its reply, if
//!   the reverse link is not cut and the reply is not lost, is accepted after the reply
//!   delay (A or S);
//! - the receiver ([`Faults::incoming`]): a request arriving on a cut link is not
//!   processed, and a reply that would travel a cut link is not sent — so a partition
//!   set on one side only still cuts both ends of its links;
//! - the coordinator's own replica operation, when `local` is set ([`Faults::local`]).
//!
//! Random draws come from a ChaCha generator seeded with the spec's seed and this node's
//! id, so a lab run can be repeated with `--seed`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dynakv_common::dist::Dist;
use dynakv_common::wire::{FaultSpec, Request};
use dynakv_common::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which pair of delays a peer message gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A replica write and its acknowledgement (W, A).
    Write,
    /// A replica read and its response (R, S).
    Read,
    /// Anything else (pings, tree exchanges, reaps, forwarded client writes): cut and lost
    /// like the rest, never delayed.
    Other,
}

impl Kind {
    /// The kind of a request.
    pub fn of(req: &Request) -> Kind {
        match req {
            Request::ReplicaPut { .. } | Request::ReplicaPutMany { .. } => Kind::Write,
            Request::ReplicaGet { .. } | Request::ReplicaGetMany { .. } => Kind::Read,
            _ => Kind::Other,
        }
    }
}

/// What the sender of one request does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outgoing {
    /// Never send it (cut link, or lost).
    Drop,
    /// Send after `request`; accept the reply after `reply`, or never if `reply_lost`.
    Send {
        request: Duration,
        reply: Duration,
        reply_lost: bool,
    },
}

/// What the receiver of one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Process it and reply.
    Serve,
    /// The link from the sender is cut: do not process it.
    Ignore,
    /// Process it, but the link back is cut: do not reply.
    Mute,
}

/// The node's fault layer.
pub struct Faults {
    me: NodeId,
    active: AtomicBool,
    spec: RwLock<Arc<FaultSpec>>,
    rng: Mutex<ChaCha8Rng>,
}

fn rng_for(spec: &FaultSpec, me: &NodeId) -> ChaCha8Rng {
    let mixed = spec.seed ^ xxhash_rust::xxh3::xxh3_64(me.as_str().as_bytes());
    ChaCha8Rng::seed_from_u64(mixed)
}

fn ms(x: f64) -> Duration {
    Duration::from_secs_f64(x.max(0.0) / 1000.0)
}

impl Faults {
    /// The fault layer of node `me`, starting with `spec` (usually empty).
    pub fn new(me: NodeId, spec: FaultSpec) -> Faults {
        let rng = rng_for(&spec, &me);
        Faults {
            active: AtomicBool::new(!spec.is_empty()),
            spec: RwLock::new(Arc::new(spec)),
            rng: Mutex::new(rng),
            me,
        }
    }

    /// Whether any fault is configured. The only cost on the request path when off.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Replaces the faults (and reseeds the random draws).
    pub fn set(&self, spec: FaultSpec) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = rng_for(&spec, &self.me);
        let empty = spec.is_empty();
        *self.spec.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(spec);
        self.active.store(!empty, Ordering::SeqCst);
    }

    /// The faults in force.
    pub fn get(&self) -> FaultSpec {
        (**self.spec.read().unwrap_or_else(|p| p.into_inner())).clone()
    }

    fn current(&self) -> Arc<FaultSpec> {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cut(spec: &FaultSpec, from: &NodeId, to: &NodeId) -> bool {
        spec.rules.iter().any(|r| r.cut && r.matches(from, to))
    }

    /// Sums the delays of every matching rule of the selected kind, and returns the
    /// highest loss among them.
    fn draw(
        &self,
        spec: &FaultSpec,
        from: &NodeId,
        to: &NodeId,
        pick: impl Fn(&dynakv_common::wire::LinkRule) -> Option<&Dist>,
        rng: &mut ChaCha8Rng,
    ) -> (Duration, f64) {
        let mut delay = 0.0;
        let mut loss: f64 = 0.0;
        for rule in spec.rules.iter().filter(|r| r.matches(from, to)) {
            if let Some(d) = pick(rule) {
                delay += d.sample(rng);
            }
            loss = loss.max(rule.loss);
        }
        (ms(delay), loss)
    }

    /// The fate of a request of `kind` this node sends to `to`.
    pub fn outgoing(&self, to: &NodeId, kind: Kind) -> Outgoing {
        let spec = self.current();
        if Faults::cut(&spec, &self.me, to) {
            return Outgoing::Drop;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let (request, loss) = match kind {
            Kind::Write => self.draw(&spec, &self.me, to, |r| r.w.as_ref(), &mut rng),
            Kind::Read => self.draw(&spec, &self.me, to, |r| r.r.as_ref(), &mut rng),
            Kind::Other => self.draw(&spec, &self.me, to, |_| None, &mut rng),
        };
        if loss > 0.0 && rng.gen_bool(loss) {
            return Outgoing::Drop;
        }
        let (reply, reply_loss) = match kind {
            Kind::Write => self.draw(&spec, to, &self.me, |r| r.a.as_ref(), &mut rng),
            Kind::Read => self.draw(&spec, to, &self.me, |r| r.s.as_ref(), &mut rng),
            Kind::Other => self.draw(&spec, to, &self.me, |_| None, &mut rng),
        };
        let reply_lost =
            Faults::cut(&spec, to, &self.me) || (reply_loss > 0.0 && rng.gen_bool(reply_loss));
        Outgoing::Send {
            request,
            reply,
            reply_lost,
        }
    }

    /// What to do with a request this node received from `from` (None: not a member
    /// this node can name, e.g. a client).
    pub fn incoming(&self, from: Option<&NodeId>) -> Incoming {
        let Some(from) = from else {
            return Incoming::Serve;
        };
        let spec = self.current();
        if Faults::cut(&spec, from, &self.me) {
            Incoming::Ignore
        } else if Faults::cut(&spec, &self.me, from) {
            Incoming::Mute
        } else {
            Incoming::Serve
        }
    }

    /// Whether the spec delays this node's own replica operations.
    pub fn has_local(&self) -> bool {
        self.current().local
    }

    /// The delays of this node's own replica operation of `kind` (request, reply), when
    /// the spec asks for local delays.
    pub fn local(&self, kind: Kind) -> Option<(Duration, Duration)> {
        let spec = self.current();
        if !spec.local {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let me = &self.me;
        let pair = match kind {
            Kind::Write => (
                self.draw(&spec, me, me, |r| r.w.as_ref(), &mut rng).0,
                self.draw(&spec, me, me, |r| r.a.as_ref(), &mut rng).0,
            ),
            Kind::Read => (
                self.draw(&spec, me, me, |r| r.r.as_ref(), &mut rng).0,
                self.draw(&spec, me, me, |r| r.s.as_ref(), &mut rng).0,
            ),
            Kind::Other => return None,
        };
        Some(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_common::wire::LinkRule;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn rule(from: Option<&str>, to: Option<&str>) -> LinkRule {
        LinkRule {
            from: from.map(node),
            to: to.map(node),
            ..LinkRule::default()
        }
    }

    #[test]
    fn off_by_default_and_switchable_at_run_time() {
        let f = Faults::new(node("n1"), FaultSpec::default());
        assert!(!f.is_active());
        f.set(FaultSpec {
            rules: vec![rule(None, None)],
            ..FaultSpec::default()
        });
        assert!(f.is_active());
        f.set(FaultSpec::default());
        assert!(!f.is_active());
    }

    #[test]
    fn a_one_way_cut_drops_requests_one_way_and_mutes_replies_the_other() {
        let cut = LinkRule {
            cut: true,
            ..rule(Some("n1"), Some("n2"))
        };
        let spec = FaultSpec {
            rules: vec![cut],
            ..FaultSpec::default()
        };
        let n1 = Faults::new(node("n1"), spec.clone());
        let n2 = Faults::new(node("n2"), spec);
        assert_eq!(n1.outgoing(&node("n2"), Kind::Write), Outgoing::Drop);
        assert_eq!(n2.incoming(Some(&node("n1"))), Incoming::Ignore);
        // n2 → n1 requests get through, but n1's replies travel the cut link.
        match n2.outgoing(&node("n1"), Kind::Read) {
            Outgoing::Send { reply_lost, .. } => assert!(reply_lost),
            other => panic!("{other:?}"),
        }
        assert_eq!(n1.incoming(Some(&node("n2"))), Incoming::Mute);
        // Other links and clients are untouched.
        assert_eq!(n2.incoming(None), Incoming::Serve);
        assert!(matches!(
            n1.outgoing(&node("n3"), Kind::Read),
            Outgoing::Send {
                reply_lost: false,
                ..
            }
        ));
    }

    #[test]
    fn delays_follow_the_kind_and_repeat_with_the_seed() {
        let spec = FaultSpec {
            rules: vec![LinkRule {
                w: Some("fixed(7)".parse().unwrap()),
                a: Some("fixed(3)".parse().unwrap()),
                r: Some("exp(1)".parse().unwrap()),
                ..rule(None, None)
            }],
            local: true,
            seed: 42,
        };
        let f = Faults::new(node("n1"), spec.clone());
        assert_eq!(
            f.outgoing(&node("n2"), Kind::Write),
            Outgoing::Send {
                request: Duration::from_millis(7),
                reply: Duration::from_millis(3),
                reply_lost: false
            }
        );
        assert_eq!(
            f.local(Kind::Write),
            Some((Duration::from_millis(7), Duration::from_millis(3)))
        );
        let draws = |f: &Faults| -> Vec<Outgoing> {
            (0..20)
                .map(|_| f.outgoing(&node("n2"), Kind::Read))
                .collect()
        };
        let (a, b) = (
            Faults::new(node("n1"), f.get()),
            Faults::new(node("n1"), f.get()),
        );
        assert_eq!(draws(&a), draws(&b), "the same seed draws the same delays");
        let reseeded = Faults::new(
            node("n1"),
            FaultSpec {
                seed: 43,
                ..f.get()
            },
        );
        assert_ne!(draws(&a), draws(&reseeded));
    }

    #[test]
    fn loss_drops_about_its_share() {
        let f = Faults::new(
            node("n1"),
            FaultSpec {
                rules: vec![LinkRule {
                    loss: 0.3,
                    ..rule(Some("n1"), None)
                }],
                ..FaultSpec::default()
            },
        );
        let dropped = (0..10_000)
            .filter(|_| f.outgoing(&node("n2"), Kind::Other) == Outgoing::Drop)
            .count();
        assert!((2_700..3_300).contains(&dropped), "{dropped}");
    }
}
