//! Predicted staleness: the WARS model of Bailis et al., "Probabilistically Bounded
//! Staleness for Practical Partial Quorums" (VLDB 2012), §4 (closed forms) and §5
//! (WARS Monte Carlo), so a lab report can chart what the model predicts next to what a
//! run measured.
//!
//! WARS: a write goes to all N replicas (W delay), each acknowledges (A delay), and the
//! write commits when W acknowledgements are in. A read sent t ms after the commit goes
//! to all N replicas (R delay); each answers (S delay) with the new value iff the write
//! reached it before the read request did; the coordinator returns the first R answers.
//! Every replica draws from the same four distributions, independently.
//!
//! The model has no anti-entropy, read repair or hinted handoff beyond these delays, and
//! it counts a read as consistent if any of the R answers has the new value (with DVV
//! siblings a dynakv read returns every answer's value, so this matches). Pure: callers
//! pass the RNG; results are reproducible from a seed.

use dynakv_common::dist::Dist;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::LabError;

/// The most replicas a model may have; quorum arithmetic beyond this is not a lab case.
pub const MAX_REPLICAS: usize = 64;

/// The most Monte Carlo trials one prediction may run (each costs a few N-sized sorts).
pub const MAX_TRIALS: usize = 10_000_000;

/// A WARS model: N, R, W and the four delay distributions (ms), the same for every
/// replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Replicas per key.
    pub n: usize,
    /// Answers a read waits for.
    pub r: usize,
    /// Acknowledgements a write waits for.
    pub w: usize,
    /// W: coordinator → replica, the write request.
    pub w_delay: Dist,
    /// A: replica → coordinator, the write's acknowledgement.
    pub a_delay: Dist,
    /// R: coordinator → replica, the read request.
    pub r_delay: Dist,
    /// S: replica → coordinator, the read's response.
    pub s_delay: Dist,
}

impl Model {
    /// Refuses R or W outside 1..=N, N above [`MAX_REPLICAS`], and invalid delays.
    pub fn validate(&self) -> Result<(), LabError> {
        check_quorum(self.n, self.r, self.w)?;
        for (which, d) in [
            ("w_delay", &self.w_delay),
            ("a_delay", &self.a_delay),
            ("r_delay", &self.r_delay),
            ("s_delay", &self.s_delay),
        ] {
            d.validate()
                .map_err(|source| LabError::InvalidDelay { which, source })?;
        }
        Ok(())
    }
}

fn check_quorum(n: usize, r: usize, w: usize) -> Result<(), LabError> {
    let ok = (1..=MAX_REPLICAS).contains(&n) && (1..=n).contains(&r) && (1..=n).contains(&w);
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidQuorum { n, r, w })
    }
}

/// The model's median read latency, ms: the R-th fastest `r_i + s_i` — the time the
/// coordinator waits for R answers. Against a measured read latency it gives the time
/// a real request spends outside the model (client hops, processing).
pub fn median_read_latency(
    model: &Model,
    trials: usize,
    rng: &mut impl Rng,
) -> Result<f64, LabError> {
    model.validate()?;
    if !(1..=MAX_TRIALS).contains(&trials) {
        return Err(LabError::InvalidArgument {
            what: "number of trials",
            reason: format!("{trials}; use 1 to {MAX_TRIALS}"),
        });
    }
    let mut waits = Vec::with_capacity(trials);
    let mut answers = vec![0.0; model.n];
    for _ in 0..trials {
        for a in answers.iter_mut() {
            *a = model.r_delay.sample(rng) + model.s_delay.sample(rng);
        }
        let (_, &mut rth, _) = answers.select_nth_unstable_by(model.r - 1, f64::total_cmp);
        waits.push(rth);
    }
    let mid = waits.len() / 2;
    let (_, &mut median, _) = waits.select_nth_unstable_by(mid, f64::total_cmp);
    Ok(median)
}

/// Monte Carlo estimate of P(consistent read) for a read starting `t` ms after the
/// write commits, for each `t` in `ts` (ms, finite and >= 0). Returns `(t, p)` in the
/// order given.
///
/// Every `t` is judged on the same `trials` draws, so the curve is non-decreasing in `t`
/// by construction, not just in expectation: a replica that has the write at `t` still
/// has it at any later `t`.
pub fn predict(
    model: &Model,
    ts: &[f64],
    trials: usize,
    rng: &mut impl Rng,
) -> Result<Vec<(f64, f64)>, LabError> {
    model.validate()?;
    if !(1..=MAX_TRIALS).contains(&trials) {
        return Err(LabError::InvalidArgument {
            what: "number of trials",
            reason: format!("{trials}; use 1 to {MAX_TRIALS}"),
        });
    }
    if let Some(t) = ts.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
        return Err(LabError::InvalidArgument {
            what: "time since commit",
            reason: format!("{t}; times must be finite and 0 ms or more"),
        });
    }
    let n = model.n;
    let mut consistent = vec![0usize; ts.len()];
    let (mut w, mut r, mut acked, mut answered) = (
        vec![0.0; n],
        vec![0.0; n],
        vec![0.0; n],
        Vec::with_capacity(n),
    );
    for _ in 0..trials {
        answered.clear();
        for i in 0..n {
            w[i] = model.w_delay.sample(rng);
            let a = model.a_delay.sample(rng);
            r[i] = model.r_delay.sample(rng);
            let s = model.s_delay.sample(rng);
            acked[i] = w[i] + a;
            answered.push((r[i] + s, i));
        }
        // The commit time: the W-th acknowledgement.
        let (_, &mut commit, _) = acked.select_nth_unstable_by(model.w - 1, f64::total_cmp);
        // The R first answers (ties broken by replica index; replicas are exchangeable,
        // so this does not bias the estimate).
        answered.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // Replica i has the write when the read reaches it iff w_i <= commit + t + r_i,
        // i.e. t >= w_i - commit - r_i; the read is consistent from the smallest such
        // threshold among the answering replicas on.
        let threshold = answered[..model.r]
            .iter()
            .map(|&(_, i)| w[i] - commit - r[i])
            .fold(f64::INFINITY, f64::min);
        for (count, t) in consistent.iter_mut().zip(ts) {
            if *t >= threshold {
                *count += 1;
            }
        }
    }
    Ok(ts
        .iter()
        .zip(consistent)
        .map(|(t, c)| (*t, c as f64 / trials as f64))
        .collect())
}

/// The chance that a read quorum of R misses a write quorum of W when both are chosen
/// uniformly among N replicas: C(N-W, R) / C(N, R) (PBS §4.1, "p_s").
fn p_miss(n: usize, r: usize, w: usize) -> f64 {
    // C(N-W,R)/C(N,R) = Π_{i<R} (N-W-i)/(N-i): no factorials, so no overflow.
    (0..r)
        .map(|i| (n - w).saturating_sub(i) as f64 / (n - i) as f64)
        .product()
}

/// PBS k-staleness (§4.2): the probability that a read returns none of the last `k`
/// committed versions, i.e. is k or more versions behind, when each write reached only
/// its write quorum (no propagation beyond it) and quorums are chosen independently:
/// (C(N-W,R) / C(N,R))^k. `k = 0` gives 1 (no versions to miss). A measured counterpart
/// is the share of reads with `k` or more in the staleness checker's k distribution.
pub fn k_staleness(n: usize, r: usize, w: usize, k: u32) -> Result<f64, LabError> {
    check_quorum(n, r, w)?;
    // Saturate rather than wrap: any k above i32::MAX gives 0 or 1 anyway.
    Ok(p_miss(n, r, w).powi(i32::try_from(k).unwrap_or(i32::MAX)))
}

/// The probability that a read sees the latest committed write when that write reached
/// only its W replicas: 1 − C(N-W,R)/C(N,R); exactly 1 when R + W > N.
pub fn p_consistent_no_propagation(n: usize, r: usize, w: usize) -> Result<f64, LabError> {
    check_quorum(n, r, w)?;
    Ok(1.0 - p_miss(n, r, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const TRIALS: usize = 20_000;
    /// Three standard deviations of a 20 000-trial estimate of p ≈ 1/2, rounded up.
    const TOLERANCE: f64 = 0.015;

    fn model(n: usize, r: usize, w: usize, delays: [&str; 4]) -> Model {
        let d = |s: &str| s.parse::<Dist>().unwrap();
        Model {
            n,
            r,
            w,
            w_delay: d(delays[0]),
            a_delay: d(delays[1]),
            r_delay: d(delays[2]),
            s_delay: d(delays[3]),
        }
    }

    fn run(m: &Model, ts: &[f64]) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(42);
        predict(m, ts, TRIALS, &mut rng)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    #[test]
    fn zero_delays_are_always_consistent() {
        let m = model(3, 1, 1, ["0", "0", "0", "0"]);
        assert_eq!(run(&m, &[0.0, 1.0, 100.0]), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn overlapping_quorums_are_consistent_at_commit() {
        for (n, r, w) in [(3, 2, 2), (3, 1, 3), (5, 3, 3), (5, 4, 2)] {
            let m = model(
                n,
                r,
                w,
                ["exp(0.1)", "pareto(1,1.5)", "exp(1)", "pareto(2,1.1)"],
            );
            assert_eq!(run(&m, &[0.0]), [1.0], "N={n} R={r} W={w}");
        }
    }

    #[test]
    fn a_write_seen_only_by_its_quorum_matches_the_closed_form() {
        // A = R = 0 and continuous W delays: at t = 0 exactly the W acknowledging
        // replicas have the write. S ~ exp(1) makes the reader pick R replicas at
        // random. (W ~ exp(1e-3), mean 1 s, is "slow"; far slower rates such as
        // exp(1e-9) would mostly sample the one-hour cap and tie every replica there.)
        for (n, r, w) in [
            (3, 1, 1),
            (3, 1, 2),
            (3, 2, 1),
            (5, 1, 2),
            (5, 2, 2),
            (7, 2, 3),
        ] {
            let m = model(n, r, w, ["exp(1e-3)", "0", "0", "exp(1)"]);
            let want = p_consistent_no_propagation(n, r, w).unwrap();
            let got = run(&m, &[0.0])[0];
            assert!(
                (got - want).abs() < TOLERANCE,
                "N={n} R={r} W={w}: {got} vs {want}"
            );
        }
        assert!((p_consistent_no_propagation(3, 1, 1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn consistency_grows_with_time_since_commit() {
        let m = model(3, 1, 1, ["exp(0.1)", "exp(0.1)", "exp(0.1)", "exp(0.1)"]);
        let ts = [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0];
        let ps = run(&m, &ts);
        assert!(ps.windows(2).all(|p| p[0] <= p[1]), "{ps:?}");
        assert!(ps[0] < 0.9 && ps[ts.len() - 1] > 0.999, "{ps:?}");
    }

    #[test]
    fn median_read_latency_matches_known_cases() {
        let mut rng = StdRng::seed_from_u64(3);
        let fixed = Model {
            n: 3,
            r: 2,
            w: 1,
            w_delay: "0".parse().unwrap(),
            a_delay: "0".parse().unwrap(),
            r_delay: "2".parse().unwrap(),
            s_delay: "3".parse().unwrap(),
        };
        assert_eq!(median_read_latency(&fixed, 1000, &mut rng).unwrap(), 5.0);
        // The minimum of three Exp(1) is Exp(3): median ln 2 / 3.
        let exp = Model {
            r: 1,
            r_delay: "exp(1)".parse().unwrap(),
            s_delay: "0".parse().unwrap(),
            ..fixed
        };
        let m = median_read_latency(&exp, 200_000, &mut rng).unwrap();
        assert!((m - std::f64::consts::LN_2 / 3.0).abs() < 0.01, "{m}");
    }

    #[test]
    fn k_staleness_closed_form() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(k_staleness(3, 1, 1, 1).unwrap(), 2.0 / 3.0));
        assert!(close(k_staleness(3, 1, 1, 2).unwrap(), 4.0 / 9.0));
        assert!(close(k_staleness(3, 1, 1, 0).unwrap(), 1.0));
        assert!(close(k_staleness(5, 2, 2, 1).unwrap(), 3.0 / 10.0));
        assert!(close(k_staleness(3, 2, 2, 1).unwrap(), 0.0));
        assert!(close(p_consistent_no_propagation(3, 2, 2).unwrap(), 1.0));
    }

    #[test]
    fn refuses_bad_arguments_with_a_sentence() {
        assert!(k_staleness(3, 0, 1, 1).is_err());
        assert!(p_consistent_no_propagation(3, 1, 4).is_err());
        let err = p_consistent_no_propagation(0, 1, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("R and W each 1 to N"), "{err}");
        let mut rng = StdRng::seed_from_u64(1);
        let m = model(3, 1, 1, ["0", "0", "0", "0"]);
        assert!(predict(&m, &[-1.0], 10, &mut rng).is_err());
        assert!(predict(&m, &[f64::NAN], 10, &mut rng).is_err());
        assert!(predict(&m, &[0.0], 0, &mut rng).is_err());
        let bad = Model {
            w_delay: Dist::Exp { rate: -1.0 },
            ..m
        };
        let err = predict(&bad, &[0.0], 10, &mut rng).unwrap_err().to_string();
        assert!(err.contains("w_delay"), "{err}");
    }

    #[test]
    fn models_read_from_json_with_text_delays() {
        let m: Model = serde_json::from_str(
            r#"{"n":3,"r":1,"w":1,"w_delay":"exp(0.1)","a_delay":"0",
                "r_delay":"uniform(1,2)","s_delay":"0.9*exp(1) + 0.1*pareto(10,1.5)"}"#,
        )
        .unwrap();
        assert_eq!(m.w_delay, Dist::Exp { rate: 0.1 });
        let back: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
