//! Fault injection in the node's own transport, for experiments and tests: this kernel
//! has no netem, so delay, loss and partitions are applied to the requests a node
//! sends to its peers. Off unless configured; a node with the default config never
//! touches this path beyond one check.
//!
//! Faults apply to outgoing peer requests only (client connections are not affected), so
//! a partition between A and B is configured on both A and B, and a one-way partition on
//! one of them.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How much delay to add to each outgoing peer request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Delay {
    /// No added delay.
    #[default]
    None,
    /// Always `ms`.
    Fixed { ms: f64 },
    /// Uniform in `[min_ms, max_ms]`.
    Uniform { min_ms: f64, max_ms: f64 },
    /// Exponential with mean `mean_ms`.
    Exponential { mean_ms: f64 },
    /// Pareto with scale `scale_ms` and shape `shape` (heavy tail; shape > 1 has a mean).
    Pareto { scale_ms: f64, shape: f64 },
}

impl Delay {
    /// Draws one delay.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let ms = match *self {
            Delay::None => 0.0,
            Delay::Fixed { ms } => ms,
            Delay::Uniform { min_ms, max_ms } => rng.gen_range(min_ms..=max_ms),
            Delay::Exponential { mean_ms } => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                -mean_ms * u.ln()
            }
            Delay::Pareto { scale_ms, shape } => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                scale_ms / u.powf(1.0 / shape)
            }
        };
        Duration::from_secs_f64((ms.max(0.0) / 1000.0).min(3600.0))
    }
}

/// The faults a node injects into its outgoing peer traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Delay added before each outgoing peer request.
    pub delay: Delay,
    /// Probability in [0, 1] that an outgoing peer request is dropped (fails as lost).
    pub loss: f64,
    /// Peers this node cannot reach (a partition as seen from this side).
    pub partitioned_from: Vec<String>,
}

impl FaultConfig {
    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        self.delay != Delay::None || self.loss > 0.0 || !self.partitioned_from.is_empty()
    }

    /// Refuses impossible settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!(
                "fault.loss is {} but must be between 0 and 1",
                self.loss
            ));
        }
        let bad = match self.delay {
            Delay::None => false,
            Delay::Fixed { ms } => ms < 0.0,
            Delay::Uniform { min_ms, max_ms } => min_ms < 0.0 || max_ms < min_ms,
            Delay::Exponential { mean_ms } => mean_ms < 0.0,
            Delay::Pareto { scale_ms, shape } => scale_ms < 0.0 || shape <= 0.0,
        };
        if bad {
            return Err(format!(
                "fault.delay {:?} has negative or inverted bounds",
                self.delay
            ));
        }
        Ok(())
    }
}

/// What the fault layer decided for one outgoing request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Send after this delay.
    Send(Duration),
    /// The peer is partitioned away.
    Partitioned,
    /// The request is lost.
    Lost,
}

/// Decides the fate of one request to `peer` (pure apart from the random draw).
pub fn judge(config: &FaultConfig, peer: &str, rng: &mut impl Rng) -> Verdict {
    if config.partitioned_from.iter().any(|p| p == peer) {
        return Verdict::Partitioned;
    }
    if config.loss > 0.0 && rng.gen_bool(config.loss) {
        return Verdict::Lost;
    }
    Verdict::Send(config.delay.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_injects_nothing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = FaultConfig::default();
        assert!(!c.is_active());
        assert_eq!(judge(&c, "n2", &mut rng), Verdict::Send(Duration::ZERO));
    }

    #[test]
    fn partitions_and_loss_are_applied() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let c = FaultConfig {
            partitioned_from: vec!["n2".into()],
            loss: 1.0,
            ..Default::default()
        };
        assert_eq!(judge(&c, "n2", &mut rng), Verdict::Partitioned);
        assert_eq!(judge(&c, "n3", &mut rng), Verdict::Lost);
    }

    #[test]
    fn delay_distributions_stay_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let u = Delay::Uniform {
            min_ms: 5.0,
            max_ms: 10.0,
        };
        for _ in 0..100 {
            let d = u.sample(&mut rng).as_secs_f64() * 1000.0;
            assert!((5.0..=10.0).contains(&d));
        }
        let p = Delay::Pareto {
            scale_ms: 2.0,
            shape: 1.5,
        };
        assert!((0..100).all(|_| p.sample(&mut rng) >= Duration::from_millis(2)));
        let bad = FaultConfig {
            loss: 2.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
