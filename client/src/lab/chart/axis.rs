//! Axes and data cleaning for the charts: pure functions, no drawing. An [`Axis`] picks
//! its range and ticks (round steps of 1, 2 or 5 × 10^k; decades on a log axis) and is
//! itself the plotters coordinate, so plotters draws grid lines and labels where it says.
//! Values that cannot be drawn (NaN, infinite, beyond [`MAX_PLOTTABLE`]) are filtered
//! here, so the drawing code only ever sees finite numbers.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// Aim for at most this many intervals between ticks on an axis.
const TARGET_TICKS: f64 = 10.0;
/// Values beyond this magnitude are skipped like infinities: no lab metric comes near,
/// and range arithmetic on them overflows.
pub(super) const MAX_PLOTTABLE: f64 = 1e100;

/// One axis in plot coordinates (log10 of the value on a log axis): the range drawn,
/// the labelled ticks, the unlabelled grid lines between them, and how a tick reads.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
    pub(super) minor: Vec<f64>,
    pub(super) labels: TickLabels,
}

/// How an [`Axis`] writes its ticks.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TickLabels {
    /// The value with this many decimals.
    Decimals(usize),
    /// The plot coordinate is log10 of the value.
    Decades,
    /// Group `i` is centred at `i + 0.5`.
    Groups(Vec<String>),
}

impl Axis {
    /// A linear axis over `lo..hi`, widened if empty. `extend` rounds the ends out to a
    /// whole step (for auto ranges; a range the caller fixed is kept). `integer` keeps
    /// the step at 1 or more (for counts).
    pub(super) fn linear(lo: f64, hi: f64, extend: bool, integer: bool) -> Axis {
        let (mut lo, mut hi) = widen(lo, hi);
        let mut step = nice_step((hi - lo) / TARGET_TICKS);
        if integer {
            step = step.max(1.0);
        }
        if extend {
            lo = (lo / step).floor() * step;
            hi = (hi / step).ceil() * step;
        }
        let ticks = multiples(lo, hi, step);
        let minor = if integer && step < 2.0 {
            Vec::new()
        } else {
            multiples(lo, hi, step / 2.0)
                .into_iter()
                .filter(|m| !ticks.iter().any(|t| (t - m).abs() < step * 1e-6))
                .collect()
        };
        let decimals = if step >= 1.0 {
            0
        } else {
            (-(step.log10() + 1e-9).floor()) as usize
        };
        Axis {
            lo,
            hi,
            ticks,
            minor,
            labels: TickLabels::Decimals(decimals),
        }
    }

    /// A log10 axis covering `lo..hi` (both > 0), from decade to decade.
    pub(super) fn log(lo: f64, hi: f64) -> Axis {
        let d_lo = lo.log10().floor();
        let d_hi = hi.log10().ceil().max(d_lo + 1.0);
        let decades = (d_hi - d_lo) as usize;
        let every = (decades as f64 / TARGET_TICKS).ceil().max(1.0) as usize;
        let mut ticks: Vec<f64> = (0..=decades)
            .filter(|k| k % every == 0)
            .map(|k| d_lo + k as f64)
            .collect();
        let mut minor = Vec::new();
        if decades <= 30 {
            for d in 0..decades {
                for m in 2..=9 {
                    let v = d_lo + d as f64 + (m as f64).log10();
                    // With a decade or two there is room to label 2× and 5× too.
                    if decades <= 2 && (m == 2 || m == 5) {
                        ticks.push(v);
                    } else {
                        minor.push(v);
                    }
                }
            }
        }
        ticks.sort_by(f64::total_cmp);
        Axis {
            lo: d_lo,
            hi: d_hi,
            ticks,
            minor,
            labels: TickLabels::Decades,
        }
    }

    /// Groups of bars side by side, group `i` over `i..i + 1`.
    pub(super) fn groups(labels: Vec<String>) -> Axis {
        let n = labels.len();
        Axis {
            lo: 0.0,
            hi: n.max(1) as f64,
            ticks: (0..n).map(|i| i as f64 + 0.5).collect(),
            minor: Vec::new(),
            labels: TickLabels::Groups(labels),
        }
    }

    /// The text of the tick at plot coordinate `v`.
    pub(super) fn label(&self, v: f64) -> String {
        match &self.labels {
            TickLabels::Decimals(n) => {
                let s = if v.abs() >= 1e7 {
                    // "2e7", not "20000000" (nor "2.0000000000000004e7").
                    let s = format!("{v:.3e}");
                    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
                    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
                    format!("{mantissa}e{exponent}")
                } else {
                    format!("{v:.n$}")
                };
                // Rounding can leave "-0" or "-0.0".
                if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
                    s[1..].to_string()
                } else {
                    s
                }
            }
            TickLabels::Decades => {
                let d = (v + 1e-9).floor();
                let m = 10f64.powf(v - d).round();
                let d = d as i32;
                match d {
                    0..=5 => format!("{}", m * 10f64.powi(d)),
                    -4..=-1 => format!("{:.*}", (-d) as usize, m * 10f64.powi(d)),
                    _ => format!("{m}e{d}"),
                }
            }
            TickLabels::Groups(labels) => {
                let i = (v - 0.5).round();
                if i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            }
        }
    }
}

/// An axis is its own plotters coordinate, so plotters draws grid lines and labels at the
/// ticks chosen here instead of its own.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        // lo < hi always holds; `as` saturates a wild value instead of panicking.
        let t = (value - self.lo) / (self.hi - self.lo);
        (f64::from(limit.0) + t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // plotters asks for "light" points for the faint grid, "bold" ones for the
        // labelled ticks.
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// An empty or reversed range made into one around its value.
pub(super) fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo > hi.abs().max(lo.abs()) * 1e-9 {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, lo + pad)
    }
}

/// The round step (1, 2 or 5 × 10^k) at or above `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let m = if norm <= 1.0 + 1e-9 {
        1.0
    } else if norm <= 2.0 + 1e-9 {
        2.0
    } else if norm <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * magnitude
}

/// The multiples of `step` in `lo..=hi` (none if absurdly many).
pub(super) fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let last = (hi / step + 1e-9).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return Vec::new();
    }
    (0..=(last - first).max(-1.0) as i64)
        .map(|k| (first + k as f64) * step)
        .collect()
}

/// Whether `v` can be drawn: finite and within [`MAX_PLOTTABLE`].
pub(super) fn usable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_PLOTTABLE
}

/// The points of a series that can be drawn, in plot coordinates, sorted by x.
pub(super) fn plottable(points: &[(f64, f64)], x_log: bool) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = points
        .iter()
        .filter(|&&(x, y)| usable(x) && usable(y) && (!x_log || x > 0.0))
        .map(|&(x, y)| (if x_log { x.log10() } else { x }, y))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The least and greatest of `values` (`None` if there are none).
pub(super) fn min_max(values: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>) {
    values.fold((None, None), |(lo, hi), v| {
        (
            Some(lo.map_or(v, |l: f64| l.min(v))),
            Some(hi.map_or(v, |h: f64| h.max(v))),
        )
    })
}

/// Splits a polyline into the runs inside `lo..=hi` in y, cutting each segment where it
/// crosses a bound, so a line leaves through the plot's edge instead of running over the
/// title or the axis labels (plotters does not clip).
pub(super) fn clip_y(points: &[(f64, f64)], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let inside = |p: &(f64, f64)| (lo..=hi).contains(&p.1);
    if points.len() == 1 {
        return if inside(&points[0]) {
            vec![points.to_vec()]
        } else {
            Vec::new()
        };
    }
    let mut runs = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dy = b.1 - a.1;
        let (t0, t1) = if dy == 0.0 {
            if inside(&a) {
                (0.0, 1.0)
            } else {
                (1.0, 0.0)
            }
        } else {
            let (ta, tb) = ((lo - a.1) / dy, (hi - a.1) / dy);
            (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
        };
        if t0 > t1 {
            if run.len() > 1 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
            continue;
        }
        let at = |t: f64| (a.0 + (b.0 - a.0) * t, a.1 + dy * t);
        if run.is_empty() || t0 > 0.0 {
            if run.len() > 1 {
                runs.push(std::mem::take(&mut run));
            }
            run = vec![at(t0)];
        }
        run.push(at(t1));
        if t1 < 1.0 {
            runs.push(std::mem::take(&mut run));
        }
    }
    if run.len() > 1 {
        runs.push(run);
    }
    runs
}

/// The text written above a bar: whole numbers as such, others to three significant
/// digits; `n/a` for a value that cannot be drawn.
pub(super) fn value_label(v: f64) -> String {
    if !usable(v) {
        return "n/a".to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let decimals = (2.0 - v.abs().log10().floor()).clamp(0.0, 6.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_or_five() {
        assert_eq!(nice_step(100.0), 100.0);
        assert_eq!(nice_step(101.0), 200.0);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }

    #[test]
    fn linear_axes_round_out_and_label() {
        let x = Axis::linear(3.0, 937.0, true, false);
        assert_eq!((x.lo, x.hi), (0.0, 1000.0));
        assert_eq!(x.ticks.len(), 11);
        assert_eq!(x.label(500.0), "500");

        let p = Axis::linear(0.0, 1.0, false, false);
        assert_eq!(p.ticks.len(), 11);
        assert_eq!(p.label(p.ticks[3]), "0.3");

        let fixed = Axis::linear(0.05, 0.95, false, false);
        assert_eq!((fixed.lo, fixed.hi), (0.05, 0.95));

        let counts = Axis::linear(0.0, 3.0, true, true);
        assert_eq!(counts.ticks, vec![0.0, 1.0, 2.0, 3.0]);
        assert!(counts.minor.is_empty());

        let big = Axis::linear(0.0, 6e7, true, false);
        assert_eq!(big.label(big.ticks[3]), "3e7");

        let single = Axis::linear(5.0, 5.0, true, false);
        assert!(single.lo < 5.0 && single.hi > 5.0);
        // Rounding a tiny negative must not print "-0.0".
        assert_eq!(Axis::linear(-1.0, 0.0, true, false).label(-0.01), "0.0");
    }

    #[test]
    fn log_axes_tick_at_decades() {
        let a = Axis::log(0.5, 800.0);
        assert_eq!((a.lo, a.hi), (-1.0, 3.0));
        let labels: Vec<String> = a.ticks.iter().map(|&t| a.label(t)).collect();
        assert_eq!(labels, ["0.1", "1", "10", "100", "1000"]);

        let narrow = Axis::log(2.0, 30.0);
        let labels: Vec<String> = narrow.ticks.iter().map(|&t| narrow.label(t)).collect();
        assert_eq!(labels, ["1", "2", "5", "10", "20", "50", "100"]);

        let wide = Axis::log(1e-90, 1e90);
        assert!(wide.ticks.len() <= 11, "{}", wide.ticks.len());
        assert_eq!(wide.label(wide.ticks[0]), "1e-90");
    }

    #[test]
    fn clipping_cuts_lines_at_the_range_edges() {
        let runs = clip_y(&[(0.0, 0.5), (1.0, 1.5), (2.0, 0.5)], 0.0, 1.0);
        assert_eq!(
            runs,
            vec![vec![(0.0, 0.5), (0.5, 1.0)], vec![(1.5, 1.0), (2.0, 0.5)]]
        );
        assert_eq!(
            clip_y(&[(0.0, 0.2), (1.0, 0.4), (2.0, 0.6)], 0.0, 1.0).len(),
            1
        );
        assert!(clip_y(&[(0.0, 2.0), (1.0, 3.0)], 0.0, 1.0).is_empty());
        assert_eq!(clip_y(&[(0.0, -1.0), (1.0, 2.0)], 0.0, 1.0)[0].len(), 2);
        assert_eq!(clip_y(&[(4.0, 0.5)], 0.0, 1.0), vec![vec![(4.0, 0.5)]]);
        assert!(clip_y(&[], 0.0, 1.0).is_empty());
    }

    #[test]
    fn values_read_naturally() {
        assert_eq!(value_label(0.0), "0");
        assert_eq!(value_label(17.0), "17");
        assert_eq!(value_label(12.5), "12.5");
        assert_eq!(value_label(1234.5678), "1235");
        assert_eq!(value_label(0.012345), "0.0123");
        assert_eq!(value_label(-2.5), "-2.5");
        assert_eq!(value_label(f64::NAN), "n/a");
    }
}
