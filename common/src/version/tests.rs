//! Known answers from the DVV-set paper, the sibling scenarios, and property
//! tests of the merge laws over states reached by random histories of writes and syncs.

use super::*;
use proptest::prelude::*;

fn actor(name: &str) -> Actor {
    Actor(name.to_string())
}

fn clock(entries: &[(&str, u64)]) -> Clock {
    entries
        .iter()
        .map(|(a, c)| Dot::new(actor(a), *c))
        .collect()
}

fn values(v: &Versioned) -> Vec<(String, u64, Vec<u8>)> {
    v.siblings()
        .iter()
        .map(|s| {
            (
                s.dot.actor.0.clone(),
                s.dot.counter,
                s.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn sib(a: &str, c: u64, v: &str) -> (String, u64, Vec<u8>) {
    (a.to_string(), c, v.as_bytes().to_vec())
}

#[test]
fn paper_running_example_through_one_node() {
    let a = actor("a");
    let mut state = Versioned::new();
    // Mary writes v1 with no context.
    state.update(&Clock::new(), &a, Some(b"v1".to_vec()), 1);
    assert_eq!(values(&state), vec![sib("a", 1, "v1")]);
    assert_eq!(state.clock(), &clock(&[("a", 1)]));
    // Peter reads: context {a:1}.
    let peter_ctx = state.clock().clone();
    // Mary writes v2 with no context: a sibling, not an overwrite.
    state.update(&Clock::new(), &a, Some(b"v2".to_vec()), 2);
    assert_eq!(values(&state), vec![sib("a", 1, "v1"), sib("a", 2, "v2")]);
    assert_eq!(state.clock(), &clock(&[("a", 2)]));
    // Peter writes v3 with context {a:1}: v1 is covered and dropped, v2 is not.
    state.update(&peter_ctx, &a, Some(b"v3".to_vec()), 3);
    assert_eq!(values(&state), vec![sib("a", 2, "v2"), sib("a", 3, "v3")]);
    assert_eq!(state.clock(), &clock(&[("a", 3)]));
}

#[test]
fn paper_example_through_two_coordinators_syncs_in_either_order() {
    let mut base = Versioned::new();
    base.update(&Clock::new(), &actor("a"), Some(b"v1".to_vec()), 1);
    base.update(&Clock::new(), &actor("a"), Some(b"v2".to_vec()), 2);
    let ctx = base.clock().clone();
    assert_eq!(ctx, clock(&[("a", 2)]));

    let mut at_b = base.clone();
    at_b.update(&ctx, &actor("b"), Some(b"vb".to_vec()), 3);
    let mut at_c = base.clone();
    at_c.update(&ctx, &actor("c"), Some(b"vc".to_vec()), 3);

    let bc = at_b.merged(&at_c);
    let cb = at_c.merged(&at_b);
    assert_eq!(bc, cb);
    assert_eq!(values(&bc), vec![sib("b", 1, "vb"), sib("c", 1, "vc")]);
    assert_eq!(bc.clock(), &clock(&[("a", 2), ("b", 1), ("c", 1)]));
    assert_eq!(bc.compare(&at_b), Causality::After);
    assert_eq!(at_b.compare(&at_c), Causality::Concurrent);
    assert_eq!(at_b.compare(&bc), Causality::Before);
    assert_eq!(bc.compare(&cb), Causality::Equal);
}

#[test]
fn two_writes_from_one_context_through_one_coordinator_are_both_kept() {
    let a = actor("a");
    let mut state = Versioned::new();
    state.update(&Clock::new(), &a, Some(b"start".to_vec()), 1);
    let ctx = state.clock().clone();
    state.update(&ctx, &a, Some(b"alice".to_vec()), 2);
    state.update(&ctx, &a, Some(b"bob".to_vec()), 3);
    assert_eq!(state.live_values(), vec![&b"alice"[..], &b"bob"[..]]);
    // A write carrying the context of that read replaces both.
    let ctx = state.clock().clone();
    state.update(&ctx, &a, Some(b"merged".to_vec()), 4);
    assert_eq!(state.live_values(), vec![&b"merged"[..]]);
}

#[test]
fn sequential_writes_with_returned_context_keep_one_value() {
    let a = actor("a");
    let mut state = Versioned::new();
    let mut ctx = Clock::new();
    for i in 0..100u32 {
        state.update(&ctx, &a, Some(i.to_be_bytes().to_vec()), u64::from(i));
        ctx = state.clock().clone();
        assert_eq!(state.siblings().len(), 1);
    }
    assert_eq!(state.live_values(), vec![&99u32.to_be_bytes()[..]]);
}

#[test]
fn write_context_never_covers_a_sibling_the_writer_did_not_see() {
    // Y's blind write through b is already on a when X writes blindly through a.
    let mut at_a = Versioned::new();
    let mut at_b = Versioned::new();
    at_b.update(&Clock::new(), &actor("b"), Some(b"y".to_vec()), 1);
    at_a.merge(&at_b);
    let dot = at_a.update(&Clock::new(), &actor("a"), Some(b"x".to_vec()), 2);
    let x_ctx = at_a.write_context(&Clock::new(), &dot);
    assert_eq!(x_ctx, clock(&[("a", 1)]), "covers X's own write only");
    // X writes again with it: Y's value survives, X's first value is replaced.
    at_a.update(&x_ctx, &actor("a"), Some(b"x2".to_vec()), 3);
    assert_eq!(at_a.live_values(), vec![&b"x2"[..], &b"y"[..]]);
}

#[test]
fn write_context_leaves_out_the_own_dot_when_it_would_cover_an_unseen_one() {
    let a = actor("a");
    let mut state = Versioned::new();
    state.update(&Clock::new(), &a, Some(b"y".to_vec()), 1); // (a,1) by Y
    let dot = state.update(&Clock::new(), &a, Some(b"x".to_vec()), 2); // (a,2) by X
    let x_ctx = state.write_context(&Clock::new(), &dot);
    assert_eq!(x_ctx.get(&a), 0, "{{a:2}} would cover Y's (a,1)");
    state.update(&x_ctx, &a, Some(b"x2".to_vec()), 3);
    assert!(
        state.live_values().contains(&&b"y"[..]),
        "Y's value survives"
    );
    // Once the gap is gone (Y's value replaced by a reader), contexts are exact again.
    let read = state.clock().clone();
    let dot = state.update(&read, &a, Some(b"resolved".to_vec()), 4);
    let ctx = state.write_context(&read, &dot);
    assert_eq!(ctx.get(&a), dot.counter);
}

#[test]
fn writes_after_a_delete_keep_one_value_when_their_contexts_are_passed_back() {
    let a = actor("a");
    let mut state = Versioned::new();
    state.update(&Clock::new(), &a, Some(b"old".to_vec()), 1);
    let read = state.clock().clone();
    state.update(&read, &a, None, 2); // the delete: a tombstone (a,2)
                                      // Blind writes (the client never read the key again), each passing back the
                                      // context the previous one returned.
    let mut ctx = Clock::new();
    for (i, v) in [&b"v1"[..], b"v2", b"v3"].into_iter().enumerate() {
        let dot = state.update(&ctx, &a, Some(v.to_vec()), 3 + i as u64);
        ctx = state.write_context(&ctx, &dot);
        assert_eq!(ctx.get(&a), dot.counter, "the context covers the own write");
        assert_eq!(
            state.live_values(),
            vec![v],
            "one value after writing {v:?}"
        );
    }
    // A delete with the last context removes the value it names.
    state.update(&ctx, &a, None, 9);
    assert!(state.live_values().is_empty(), "{:?}", state.siblings());
}

#[test]
fn after_a_reap_an_old_context_cannot_cover_a_new_write() {
    // A key written and deleted; the client kept the context of its last read.
    let a = actor("a");
    let mut state = Versioned::new();
    let first = state.update_with_floor(&Clock::new(), &a, Some(b"v1".to_vec()), 1, 0);
    let old_ctx = state.clock().clone();
    state.update_with_floor(&old_ctx, &a, None, 2, first.counter);
    // The tombstone is reaped: the key's state is gone. The coordinator's floor is the
    // highest counter it ever minted (for any key), here 40.
    let floor = 40;
    let mut reborn = Versioned::new();
    let dot = reborn.update_with_floor(&Clock::new(), &a, Some(b"new".to_vec()), 3, floor);
    assert!(dot.counter > floor);
    // A write with the pre-delete context adds a sibling instead of dropping "new".
    reborn.update_with_floor(&old_ctx, &a, Some(b"stale-client".to_vec()), 4, dot.counter);
    assert_eq!(
        reborn.live_values(),
        vec![&b"new"[..], &b"stale-client"[..]]
    );
    // Without the floor the old context would have covered the new write.
    let mut unsafe_state = Versioned::new();
    unsafe_state.update(&Clock::new(), &a, Some(b"new".to_vec()), 3);
    unsafe_state.update(&old_ctx, &a, Some(b"stale-client".to_vec()), 4);
    assert_eq!(unsafe_state.live_values(), vec![&b"stale-client"[..]]);
}

#[test]
fn clocks_from_outside_are_validated() {
    assert!(validate_clock(&clock(&[("n1.a", 3)])).is_ok());
    let raw = |c: u64| Clock {
        dots: [(actor("n1.a"), c)].into_iter().collect(),
    };
    assert!(validate_clock(&raw(0)).is_err());
    assert!(validate_clock(&raw(u64::MAX)).is_err());
    let mut bad = Versioned::new();
    bad.update(&Clock::new(), &actor("a"), Some(b"v".to_vec()), 1);
    assert!(bad.is_well_formed());
    let mut unsorted = bad.clone();
    unsorted.update(&Clock::new(), &actor("b"), Some(b"w".to_vec()), 1);
    unsorted.siblings.reverse();
    assert!(!unsorted.is_well_formed());
    let mut uncovered = bad.clone();
    uncovered.clock = Clock::new();
    assert!(!uncovered.is_well_formed());
}

#[test]
fn delete_leaves_a_tombstone_that_wins_over_what_it_saw() {
    let a = actor("a");
    let mut replica1 = Versioned::new();
    replica1.update(&Clock::new(), &a, Some(b"x".to_vec()), 1);
    let replica2_old = replica1.clone();
    let ctx = replica1.clock().clone();
    replica1.update(&ctx, &a, None, 2);
    assert!(!replica1.has_live());
    assert_eq!(replica1.siblings().len(), 1);
    assert!(replica1.siblings()[0].is_tombstone());
    // An old replica that still has "x" cannot resurrect it.
    let synced = replica2_old.merged(&replica1);
    assert!(!synced.has_live());
}

#[test]
fn last_writer_wins_keeps_only_the_newest() {
    let mut state = Versioned::new();
    state.update(&Clock::new(), &actor("a"), Some(b"old".to_vec()), 10);
    state.update(&Clock::new(), &actor("b"), Some(b"new".to_vec()), 20);
    state.resolve_last_writer_wins();
    assert_eq!(state.live_values(), vec![&b"new"[..]]);
}

#[test]
fn context_tokens_round_trip_and_reject_garbage() {
    let c = clock(&[("n1.abc", 3), ("n2.def", 9)]);
    let token = encode_context(&c);
    assert_eq!(decode_context(&token).unwrap(), c);
    assert_eq!(decode_context("").unwrap(), Clock::new());
    assert!(decode_context("!!!").is_err());
    assert!(decode_context("AAAAAAAA_____").is_err());
}

/// One step of a random history over three replicas.
#[derive(Debug, Clone)]
enum Step {
    /// A client writes through replica `via` with the context it read from `ctx_from`.
    Write {
        via: usize,
        ctx_from: Option<usize>,
        delete: bool,
    },
    /// Replica `to` receives `from`'s state.
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, prop::option::of(0..3usize), any::<bool>()).prop_map(|(via, ctx_from, d)| {
            Step::Write {
                via,
                ctx_from,
                delete: d && ctx_from.is_some(),
            }
        }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Whether client `w` made a later write than `dot` (so it may have replaced it).
fn sessions_cover(writes: &[(usize, Dot<Actor>)], w: usize, dot: &Dot<Actor>) -> bool {
    let pos = writes.iter().position(|(_, d)| d == dot);
    pos.is_some_and(|p| writes[p + 1..].iter().any(|(c, _)| *c == w))
}

struct History {
    replicas: Vec<Versioned>,
    /// Every write: its dot and the context it was made with.
    writes: Vec<(Dot<Actor>, Clock)>,
}

fn run(steps: &[Step]) -> History {
    let actors = [actor("a"), actor("b"), actor("c")];
    let mut replicas = vec![Versioned::new(); 3];
    let mut writes = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Write {
                via,
                ctx_from,
                delete,
            } => {
                let ctx = ctx_from
                    .map(|r| replicas[r].clock().clone())
                    .unwrap_or_default();
                let value = (!delete).then(|| (i as u32).to_be_bytes().to_vec());
                let dot = replicas[via].update(&ctx, &actors[via], value, i as u64);
                writes.push((dot, ctx));
            }
            Step::Sync { from, to } => {
                let src = replicas[from].clone();
                replicas[to].merge(&src);
            }
        }
    }
    History { replicas, writes }
}

proptest! {
    #[test]
    fn merge_is_commutative_associative_idempotent(steps in prop::collection::vec(step(), 0..40)) {
        let h = run(&steps);
        let [x, y, z] = [&h.replicas[0], &h.replicas[1], &h.replicas[2]];
        prop_assert_eq!(x.merged(y), y.merged(x));
        prop_assert_eq!(x.merged(y).merged(z), x.merged(&y.merged(z)));
        prop_assert_eq!(x.merged(x), x.clone());
        prop_assert_eq!(x.merged(y).merged(y), x.merged(y));
    }

    #[test]
    fn replicas_converge_whatever_the_sync_order(steps in prop::collection::vec(step(), 0..40), order in 0usize..6) {
        let h = run(&steps);
        let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let p = perms[order];
        let mut one = h.replicas[p[0]].clone();
        one.merge(&h.replicas[p[1]]);
        one.merge(&h.replicas[p[2]]);
        let mut reference = h.replicas[0].clone();
        reference.merge(&h.replicas[1]);
        reference.merge(&h.replicas[2]);
        prop_assert_eq!(one, reference);
    }

    /// No lost update: after full sync, every write is either still a sibling or was
    /// overwritten by a later write whose context had seen it.
    #[test]
    fn no_write_is_lost_unless_a_later_write_saw_it(steps in prop::collection::vec(step(), 0..40)) {
        let h = run(&steps);
        let mut all = Versioned::new();
        for r in &h.replicas {
            all.merge(r);
        }
        for (i, (dot, _)) in h.writes.iter().enumerate() {
            let present = all.siblings().iter().any(|s| &s.dot == dot);
            let superseded = h.writes[i + 1..].iter().any(|(_, ctx)| ctx.get(&dot.actor) >= dot.counter);
            prop_assert!(present || superseded, "write {:?} vanished", dot);
            // Nothing that a later write saw survives in the merged state.
            if superseded {
                prop_assert!(!present, "write {:?} was replaced but is still a sibling", dot);
            }
        }
        // Siblings are bounded by the writes nobody has seen: no sibling explosion.
        let unseen = h.writes.iter().enumerate().filter(|(i, (dot, _))| {
            !h.writes[i + 1..].iter().any(|(_, ctx)| ctx.get(&dot.actor) >= dot.counter)
        }).count();
        prop_assert_eq!(all.siblings().len(), unseen);
        // The clock covers every sibling.
        for s in all.siblings() {
            prop_assert!(all.clock().get(&s.dot.actor) >= s.dot.counter);
        }
    }

    /// Clients that only ever pass back contexts they were given (by reads or by
    /// `write_context`) never make another client's write disappear unless a context they
    /// were given covered it — i.e. no lost update through returned write contexts.
    #[test]
    fn returned_write_contexts_never_drop_unseen_writes(ops in prop::collection::vec((0..3usize, 0..3usize, any::<bool>(), any::<bool>()), 1..40)) {
        let actors = [actor("a"), actor("b"), actor("c")];
        let mut replicas = vec![Versioned::new(); 3];
        // Each of 3 clients holds the context it was last given.
        let mut sessions = vec![Clock::new(); 3];
        let mut writes: Vec<(usize, Dot<Actor>)> = Vec::new();
        // Deletes too: a tombstone may be superseded by a write that never saw it (it
        // holds no value), a value never may.
        let mut values = Vec::new();
        for (i, &(client, via, sync, delete)) in ops.iter().enumerate() {
            if sync {
                let src = replicas[client].clone();
                replicas[via].merge(&src);
                continue;
            }
            let ctx = sessions[client].clone();
            let value = (!delete).then(|| vec![i as u8]);
            let dot = replicas[via].update(&ctx, &actors[via], value, i as u64);
            sessions[client] = replicas[via].write_context(&ctx, &dot);
            writes.push((client, dot.clone()));
            if !delete {
                values.push((client, dot));
            }
        }
        let mut all = Versioned::new();
        for r in &replicas {
            all.merge(r);
        }
        for (writer, dot) in &values {
            let present = all.siblings().iter().any(|s| &s.dot == dot);
            // A write may only vanish if some later write was made by the same client
            // (its own overwrite) — clients never saw each other's writes here.
            let overwritten_by_self = writes.iter().any(|(w, d)| w == writer && d != dot && sessions_cover(&writes, *w, dot));
            prop_assert!(present || overwritten_by_self, "write {:?} of client {} vanished", dot, writer);
        }
    }

    /// Shipping a coordinator's successive states to a replica in any order (merging
    /// each) yields exactly the state the coordinator built by applying the writes.
    #[test]
    fn syncing_shipped_states_in_any_order_equals_applying_the_writes(
        writes in prop::collection::vec((any::<bool>(), any::<bool>()), 1..25),
        seed in any::<u64>(),
    ) {
        let a = actor("a");
        let mut coordinator = Versioned::new();
        let mut shipped = Vec::new();
        for (i, (with_context, delete)) in writes.iter().enumerate() {
            let ctx = if *with_context { coordinator.clock().clone() } else { Clock::new() };
            let value = (!(*delete && *with_context)).then(|| vec![i as u8]);
            coordinator.update(&ctx, &a, value, i as u64);
            shipped.push(coordinator.clone());
        }
        // A deterministic shuffle from the seed.
        let mut order: Vec<usize> = (0..shipped.len()).collect();
        let mut x = seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut replica = Versioned::new();
        for i in order {
            replica.merge(&shipped[i]);
        }
        prop_assert_eq!(replica, coordinator);
    }

    #[test]
    fn digest_is_equal_exactly_when_states_are(steps in prop::collection::vec(step(), 0..30)) {
        let h = run(&steps);
        let (x, y) = (&h.replicas[0], &h.replicas[1]);
        prop_assert_eq!(x == y, x.digest() == y.digest());
    }
}
