//! Delay distributions in milliseconds: what the node's fault layer draws a link delay
//! from, and what the lab's PBS model (Bailis et al., VLDB 2012, §5 "WARS") draws its
//! W, A, R and S delays from.
//!
//! A [`Dist`] is plain data with a text form that scenario files and flags use:
//!
//! | text                              | meaning                                            |
//! |-----------------------------------|----------------------------------------------------|
//! | `5` or `fixed(5)`                 | always 5 ms                                        |
//! | `uniform(1,10)`                   | uniform on [1, 10) ms                              |
//! | `exp(0.1)`                        | exponential with rate λ = 0.1 per ms (mean 10 ms)  |
//! | `pareto(1,1.5)`                   | Pareto with scale xm = 1 ms and shape α = 1.5      |
//! | `0.9*exp(1) + 0.1*pareto(10,1.5)` | a mixture: weights are normalised to sum to 1      |
//!
//! Whitespace is ignored, a mixture term without a weight has weight 1, and a mixture
//! may contain a parenthesised mixture. `Display` prints a form that parses back to an
//! equal value, and serde uses that same string (`w_delay = "exp(0.1)"`).
//!
//! Invariants: parsing and deserialising always validate, so a parsed `Dist` has finite,
//! non-negative parameters and bounded nesting; [`Dist::sample`] never returns a
//! negative or NaN delay and never more than [`MAX_DELAY_MS`], even for a `Dist` built
//! by hand without validation. Nothing here reads a clock or owns an RNG: callers pass
//! one in, so runs are reproducible from a seed.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest delay a sample can take: one hour. Heavy tails (Pareto with a small
/// shape, a tiny exponential rate) are cut here so that a fault layer never parks a
/// message for days and the lab's arithmetic stays finite.
pub const MAX_DELAY_MS: f64 = 3_600_000.0;

/// How deep mixtures may nest (a mixture inside a mixture is depth 2). Bounds the
/// parser's recursion and sampling cost whatever the input.
pub const MAX_MIXTURE_DEPTH: usize = 4;

/// The most components one mixture may have.
pub const MAX_MIXTURE_COMPONENTS: usize = 32;

/// The longest text accepted by the parser, in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// What the text syntax looks like, quoted in parse errors.
const SYNTAX_HINT: &str = "write a delay in ms such as 5, fixed(5), uniform(1,10), exp(0.1), \
                           pareto(1,1.5) or a mixture such as 0.9*exp(1) + 0.1*pareto(10,1.5)";

/// A delay distribution in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Dist {
    /// Always this many milliseconds.
    Fixed(f64),
    /// Uniform on `[lo, hi)` milliseconds (exactly `lo` when `lo == hi`).
    Uniform {
        /// Smallest delay, ms.
        lo: f64,
        /// Upper bound (exclusive), ms.
        hi: f64,
    },
    /// Exponential with rate λ per millisecond: mean 1/λ ms. (The PBS paper's
    /// "W ~ Exp(λ = 0.1)" is `exp(0.1)`, a mean of 10 ms.)
    Exp {
        /// λ, per ms; must be positive.
        rate: f64,
    },
    /// Pareto: `scale / U^(1/shape)`, never below `scale`; the mean is finite only for
    /// `shape > 1` and the variance only for `shape > 2`.
    Pareto {
        /// xm, the smallest delay, ms; must be positive.
        scale: f64,
        /// α, the tail index; must be positive.
        shape: f64,
    },
    /// Draw a component with probability `weight / sum of weights`, then draw from it.
    Mixture(Vec<(f64, Dist)>),
}

/// Why a text or a value is not a usable delay distribution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistError {
    /// The text does not follow the syntax.
    #[error("cannot read delay distribution {input:?}: expected {expected} at character {position}, found {found}; {SYNTAX_HINT}")]
    Syntax {
        /// The whole text given.
        input: String,
        /// 1-based character position of the problem.
        position: usize,
        /// What the parser was looking for.
        expected: &'static str,
        /// What it found instead (a quoted character or "the end").
        found: String,
    },
    /// The text is longer than [`MAX_TEXT_LEN`].
    #[error(
        "delay distribution is {len} bytes long, more than the limit of {limit}; {SYNTAX_HINT}"
    )]
    TooLong {
        /// Length of the text given.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The syntax is fine but a parameter is out of range.
    #[error("invalid delay distribution {dist}: {reason}")]
    Invalid {
        /// The offending (sub-)distribution as text.
        dist: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl Default for Dist {
    /// No delay.
    fn default() -> Dist {
        Dist::Fixed(0.0)
    }
}

impl Dist {
    /// Draws one delay in milliseconds, in `[0, MAX_DELAY_MS]` and never NaN.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        let x = self.sample_raw(rng);
        if x.is_nan() {
            0.0
        } else {
            x.clamp(0.0, MAX_DELAY_MS)
        }
    }

    fn sample_raw(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Dist::Fixed(ms) => *ms,
            Dist::Uniform { lo, hi } => lo + (hi - lo) * rng.gen::<f64>(),
            // Inverse transform; 1 - U lies in (0, 1], so the logarithm is finite.
            Dist::Exp { rate } => -(1.0 - rng.gen::<f64>()).ln() / rate,
            Dist::Pareto { scale, shape } => scale / (1.0 - rng.gen::<f64>()).powf(1.0 / shape),
            Dist::Mixture(parts) => {
                let total: f64 = parts.iter().map(|(w, _)| w.max(0.0)).sum();
                if !(total > 0.0 && total.is_finite()) {
                    // Only reachable for a hand-built, unvalidated mixture.
                    return 0.0;
                }
                let mut pick = rng.gen::<f64>() * total;
                for (w, d) in parts {
                    let w = w.max(0.0);
                    if pick < w {
                        return d.sample_raw(rng);
                    }
                    pick -= w;
                }
                // Rounding can leave `pick` just above the last weight.
                parts.last().map_or(0.0, |(_, d)| d.sample_raw(rng))
            }
        }
    }

    /// The mean in milliseconds, or `None` when it is infinite (Pareto with shape <= 1,
    /// or a mixture containing one). This is the mean of the distribution as written;
    /// samples are cut at [`MAX_DELAY_MS`], so a distribution with real mass above one
    /// hour samples lower than this.
    pub fn mean(&self) -> Option<f64> {
        match self {
            Dist::Fixed(ms) => Some(*ms),
            Dist::Uniform { lo, hi } => Some((lo + hi) / 2.0),
            Dist::Exp { rate } => Some(1.0 / rate),
            Dist::Pareto { scale, shape } => (*shape > 1.0).then(|| shape * scale / (shape - 1.0)),
            Dist::Mixture(parts) => {
                let total: f64 = parts.iter().map(|(w, _)| w).sum();
                parts
                    .iter()
                    .map(|(w, d)| d.mean().map(|m| w / total * m))
                    .sum()
            }
        }
    }

    /// Checks every parameter: finite, non-negative, delays at most [`MAX_DELAY_MS`],
    /// positive rates, scales, shapes and weights, mixtures non-empty with at most
    /// [`MAX_MIXTURE_COMPONENTS`] components nesting at most [`MAX_MIXTURE_DEPTH`] deep.
    pub fn validate(&self) -> Result<(), DistError> {
        self.validate_at(1)
    }

    fn validate_at(&self, depth: usize) -> Result<(), DistError> {
        let invalid = |reason: String| DistError::Invalid {
            dist: self.to_string(),
            reason,
        };
        let delay_ok = |ms: f64| (0.0..=MAX_DELAY_MS).contains(&ms);
        match self {
            Dist::Fixed(ms) if !delay_ok(*ms) => Err(invalid(format!(
                "a fixed delay must be between 0 and {MAX_DELAY_MS} ms"
            ))),
            Dist::Uniform { lo, hi } if !(delay_ok(*lo) && delay_ok(*hi) && lo <= hi) => {
                Err(invalid(format!(
                    "uniform(lo,hi) needs 0 <= lo <= hi <= {MAX_DELAY_MS} ms"
                )))
            }
            Dist::Exp { rate } if !(*rate > 0.0 && rate.is_finite()) => Err(invalid(
                "the rate of exp must be a positive number per ms (exp(0.1) has a mean of 10 ms)"
                    .into(),
            )),
            Dist::Pareto { scale, shape }
                if !(*scale > 0.0
                    && *scale <= MAX_DELAY_MS
                    && *shape > 0.0
                    && shape.is_finite()) =>
            {
                Err(invalid(format!(
                    "pareto(scale,shape) needs 0 < scale <= {MAX_DELAY_MS} ms and shape > 0 \
                     (shape > 1 for a finite mean)"
                )))
            }
            Dist::Mixture(parts) => {
                if depth > MAX_MIXTURE_DEPTH {
                    return Err(invalid(format!(
                        "mixtures may nest at most {MAX_MIXTURE_DEPTH} deep"
                    )));
                }
                if parts.is_empty() || parts.len() > MAX_MIXTURE_COMPONENTS {
                    return Err(invalid(format!(
                        "a mixture needs 1 to {MAX_MIXTURE_COMPONENTS} components"
                    )));
                }
                if parts.iter().any(|(w, _)| !(*w > 0.0 && w.is_finite())) {
                    return Err(invalid("mixture weights must be positive numbers".into()));
                }
                parts.iter().try_for_each(|(_, d)| d.validate_at(depth + 1))
            }
            _ => Ok(()),
        }
    }

    fn fmt_in(&self, f: &mut fmt::Formatter<'_>, in_mixture: bool) -> fmt::Result {
        match self {
            // Bare at the top (`5`), spelled out inside a mixture (`0.5*fixed(5)` reads
            // better than `0.5*5`).
            Dist::Fixed(ms) if !in_mixture => write!(f, "{}", Num(*ms)),
            Dist::Fixed(ms) => write!(f, "fixed({})", Num(*ms)),
            Dist::Uniform { lo, hi } => write!(f, "uniform({},{})", Num(*lo), Num(*hi)),
            Dist::Exp { rate } => write!(f, "exp({})", Num(*rate)),
            Dist::Pareto { scale, shape } => write!(f, "pareto({},{})", Num(*scale), Num(*shape)),
            Dist::Mixture(parts) => {
                if in_mixture {
                    f.write_str("(")?;
                }
                for (i, (w, d)) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" + ")?;
                    }
                    write!(f, "{}*", Num(*w))?;
                    d.fmt_in(f, true)?;
                }
                if in_mixture {
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

/// Prints a number so that it parses back exactly: plain for ordinary magnitudes, with
/// an exponent for tiny or huge ones (`1e-9` rather than `0.000000001`).
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0.abs();
        if a == 0.0 || (1e-4..1e16).contains(&a) {
            // Display is the shortest text that round-trips, without an exponent.
            write!(f, "{}", self.0)
        } else {
            // Debug also round-trips and switches to an exponent at these magnitudes.
            write!(f, "{:?}", self.0)
        }
    }
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_in(f, false)
    }
}

impl FromStr for Dist {
    type Err = DistError;

    fn from_str(s: &str) -> Result<Dist, DistError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(DistError::TooLong {
                len: s.len(),
                limit: MAX_TEXT_LEN,
            });
        }
        let mut p = Parser {
            input: s,
            pos: 0,
            depth: 1,
        };
        let dist = p.mixture()?;
        p.skip_ws();
        if p.pos < s.len() {
            return Err(p.error("'+' or the end of the text"));
        }
        dist.validate()?;
        Ok(dist)
    }
}

impl Serialize for Dist {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Dist, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Dist;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a delay distribution as a string; {SYNTAX_HINT}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dist, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A recursive-descent parser over ASCII syntax. `pos` only ever advances over ASCII
/// bytes, so it always sits on a character boundary; `depth` counts open parentheses
/// and is bounded by [`MAX_MIXTURE_DEPTH`], which bounds the recursion.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then consumes `c` if it comes next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, expected: &'static str) -> Result<(), DistError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn error(&self, expected: &'static str) -> DistError {
        DistError::Syntax {
            input: self.input.to_string(),
            position: self.input[..self.pos].chars().count() + 1,
            expected,
            found: self
                .rest()
                .chars()
                .next()
                .map_or_else(|| "the end".to_string(), |c| format!("{c:?}")),
        }
    }

    fn starts_number(&self) -> bool {
        self.peek()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    }

    /// `term ('+' term)*`; a single unweighted term is that distribution itself.
    fn mixture(&mut self) -> Result<Dist, DistError> {
        let mut terms = vec![self.term()?];
        while self.eat(b'+') {
            if terms.len() == MAX_MIXTURE_COMPONENTS {
                return Err(self.error("at most 32 mixture components"));
            }
            terms.push(self.term()?);
        }
        if let [(None, _)] = terms.as_slice() {
            if let Some((_, d)) = terms.pop() {
                return Ok(d);
            }
        }
        Ok(Dist::Mixture(
            terms
                .into_iter()
                .map(|(w, d)| (w.unwrap_or(1.0), d))
                .collect(),
        ))
    }

    /// `number '*' atom | number | atom`: a weighted component or a plain one.
    fn term(&mut self) -> Result<(Option<f64>, Dist), DistError> {
        self.skip_ws();
        if self.starts_number() {
            let n = self.number()?;
            if self.eat(b'*') {
                return Ok((Some(n), self.atom()?));
            }
            return Ok((None, Dist::Fixed(n)));
        }
        Ok((None, self.atom()?))
    }

    /// A number, a named distribution, or a parenthesised mixture.
    fn atom(&mut self) -> Result<Dist, DistError> {
        self.skip_ws();
        if self.starts_number() {
            return Ok(Dist::Fixed(self.number()?));
        }
        if self.eat(b'(') {
            if self.depth >= MAX_MIXTURE_DEPTH {
                return Err(self.error("at most 4 levels of nested parentheses"));
            }
            self.depth += 1;
            let d = self.mixture()?;
            self.depth -= 1;
            self.expect(b')', "')'")?;
            return Ok(d);
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let name = self.input[start..self.pos].to_ascii_lowercase();
        let arity = match name.as_str() {
            "fixed" | "exp" => 1,
            "uniform" | "pareto" => 2,
            _ => {
                self.pos = start;
                return Err(
                    self.error("a number, fixed(..), uniform(..), exp(..), pareto(..) or '('")
                );
            }
        };
        self.expect(b'(', "'(' after the distribution's name")?;
        let a = self.number()?;
        let b = if arity == 2 {
            self.expect(b',', "',' and a second parameter")?;
            self.number()?
        } else {
            0.0
        };
        self.expect(b')', "')'")?;
        Ok(match name.as_str() {
            "fixed" => Dist::Fixed(a),
            "exp" => Dist::Exp { rate: a },
            "uniform" => Dist::Uniform { lo: a, hi: b },
            _ => Dist::Pareto { scale: a, shape: b },
        })
    }

    /// A decimal number with optional sign, fraction and exponent (`-1.5e-3`). Infinity
    /// and NaN are not numbers here; negative values parse and `validate` refuses them.
    fn number(&mut self) -> Result<f64, DistError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let bytes = self.input.as_bytes();
            let mut end = self.pos + 1;
            if matches!(bytes.get(end), Some(b'+' | b'-')) {
                end += 1;
            }
            // Only an exponent if digits follow; otherwise leave the 'e' for the caller.
            if bytes.get(end).is_some_and(u8::is_ascii_digit) {
                self.pos = end;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
        }
        match self.input[start..self.pos].parse::<f64>() {
            Ok(n) => Ok(n),
            Err(_) => {
                self.pos = start;
                Err(self.error("a number"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;

    fn parse(s: &str) -> Dist {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse("0"), Dist::Fixed(0.0));
        assert_eq!(parse(" 5 "), Dist::Fixed(5.0));
        assert_eq!(parse("fixed(5)"), Dist::Fixed(5.0));
        assert_eq!(
            parse("uniform( 1 , 10 )"),
            Dist::Uniform { lo: 1.0, hi: 10.0 }
        );
        assert_eq!(parse("exp(0.1)"), Dist::Exp { rate: 0.1 });
        assert_eq!(parse("EXP(1e-3)"), Dist::Exp { rate: 1e-3 });
        assert_eq!(
            parse("pareto(1,1.5)"),
            Dist::Pareto {
                scale: 1.0,
                shape: 1.5
            }
        );
        assert_eq!(
            parse("0.9*exp(1)+0.1 * pareto(10,1.5)"),
            Dist::Mixture(vec![
                (0.9, Dist::Exp { rate: 1.0 }),
                (
                    0.1,
                    Dist::Pareto {
                        scale: 10.0,
                        shape: 1.5
                    }
                )
            ])
        );
        // Unweighted terms weigh 1; parentheses nest a mixture.
        assert_eq!(
            parse("exp(1) + 2*(1*fixed(3) + 3*uniform(0,1))"),
            Dist::Mixture(vec![
                (1.0, Dist::Exp { rate: 1.0 }),
                (
                    2.0,
                    Dist::Mixture(vec![
                        (1.0, Dist::Fixed(3.0)),
                        (3.0, Dist::Uniform { lo: 0.0, hi: 1.0 })
                    ])
                )
            ])
        );
    }

    #[test]
    fn prints_what_it_parses() {
        for s in [
            "0",
            "5",
            "uniform(1,10)",
            "exp(0.1)",
            "exp(1e-9)",
            "pareto(1,1.5)",
            "0.9*exp(1) + 0.1*pareto(10,1.5)",
            "0.5*fixed(2) + 0.5*(1*exp(1) + 1*fixed(0))",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
        assert_eq!(parse("fixed(5)").to_string(), "5");
    }

    #[test]
    fn refuses_bad_text_with_a_sentence() {
        for (s, needle) in [
            ("", "expected a number, fixed"),
            ("exp", "expected '(' after the distribution's name"),
            ("exp(1", "expected ')'"),
            ("uniform(1)", "expected ',' and a second parameter"),
            ("gauss(1,2)", "expected a number, fixed"),
            ("exp(1) exp(2)", "expected '+' or the end"),
            ("exp(inf)", "expected a number"),
            ("0.5*", "expected a number, fixed"),
            ("((((((1))))))", "nested parentheses"),
            ("-1", "a fixed delay must be between 0"),
            ("uniform(10,1)", "0 <= lo <= hi"),
            ("exp(0)", "rate of exp must be a positive number"),
            ("pareto(0,1)", "0 < scale"),
            ("0*exp(1)", "weights must be positive"),
            ("7200000", "between 0 and 3600000 ms"),
        ] {
            let err = s.parse::<Dist>().expect_err(s).to_string();
            assert!(err.contains(needle), "{s:?}: {err}");
        }
        let long = "1+".repeat(MAX_TEXT_LEN);
        assert!(matches!(
            long.parse::<Dist>(),
            Err(DistError::TooLong { .. })
        ));
        let many = vec!["1"; MAX_MIXTURE_COMPONENTS + 1].join("+");
        assert!(many.parse::<Dist>().is_err());
    }

    #[test]
    fn validate_bounds_nesting_of_hand_built_values() {
        let mut d = Dist::Fixed(1.0);
        for _ in 0..MAX_MIXTURE_DEPTH {
            d = Dist::Mixture(vec![(1.0, d)]);
        }
        assert!(d.validate().is_ok());
        let too_deep = Dist::Mixture(vec![(1.0, d)]);
        assert!(too_deep.validate().is_err());
        assert!(Dist::Mixture(vec![]).validate().is_err());
        assert!(Dist::Fixed(f64::NAN).validate().is_err());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let de: StrDeserializer<ValueError> = "0.9*exp(1) + 0.1*fixed(3)".into_deserializer();
        let d = Dist::deserialize(de).unwrap();
        assert_eq!(
            d,
            Dist::Mixture(vec![
                (0.9, Dist::Exp { rate: 1.0 }),
                (0.1, Dist::Fixed(3.0))
            ])
        );
        let bad: StrDeserializer<ValueError> = "exp(-1)".into_deserializer();
        let err = Dist::deserialize(bad).unwrap_err().to_string();
        assert!(err.contains("rate of exp"), "{err}");
    }

    fn sample_mean(d: &Dist, n: usize) -> f64 {
        let mut rng = StdRng::seed_from_u64(7);
        (0..n).map(|_| d.sample(&mut rng)).sum::<f64>() / n as f64
    }

    #[test]
    fn sample_means_match_mean() {
        for s in [
            "5",
            "uniform(1,10)",
            "exp(0.1)",
            "exp(2)",
            "pareto(1,3)",
            "0.9*exp(1) + 0.1*fixed(10)",
            "0.5*uniform(0,2) + 0.5*(0.5*fixed(4) + 0.5*exp(0.5))",
        ] {
            let d = parse(s);
            let want = d.mean().unwrap();
            let got = sample_mean(&d, 200_000);
            assert!((got - want).abs() <= 0.02 * want, "{s}: {got} vs {want}");
        }
        assert_eq!(parse("pareto(1,1)").mean(), None);
        assert_eq!(parse("0.5*pareto(1,0.5) + 0.5*fixed(1)").mean(), None);
    }

    #[test]
    fn samples_respect_bounds() {
        let mut rng = StdRng::seed_from_u64(11);
        let cases = [
            ("uniform(2,3)", 2.0, 3.0),
            ("uniform(4,4)", 4.0, 4.0),
            ("pareto(10,1.5)", 10.0, MAX_DELAY_MS),
            ("exp(1e-9)", 0.0, MAX_DELAY_MS),
            ("pareto(1,0.01)", 1.0, MAX_DELAY_MS),
            ("0.5*fixed(1) + 0.5*fixed(2)", 1.0, 2.0),
        ];
        for (s, lo, hi) in cases {
            let d = parse(s);
            for _ in 0..10_000 {
                let x = d.sample(&mut rng);
                assert!(x >= lo && x <= hi, "{s}: {x}");
            }
        }
        // Hand-built nonsense still samples a delay, not a panic or NaN.
        for d in [
            Dist::Fixed(-3.0),
            Dist::Fixed(f64::NAN),
            Dist::Exp { rate: 0.0 },
            Dist::Mixture(vec![]),
            Dist::Mixture(vec![(0.0, Dist::Fixed(1.0))]),
        ] {
            let x = d.sample(&mut rng);
            assert!((0.0..=MAX_DELAY_MS).contains(&x), "{d:?}: {x}");
        }
    }

    fn positive() -> impl Strategy<Value = f64> {
        prop_oneof![1e-6..1e3f64, 1e-12..1e-6f64, 1e3..1e9f64]
    }

    fn delay() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), 0.0..MAX_DELAY_MS, 0.0..10.0f64]
    }

    fn dist() -> impl Strategy<Value = Dist> {
        let leaf = prop_oneof![
            delay().prop_map(Dist::Fixed),
            (delay(), delay()).prop_map(|(a, b)| Dist::Uniform {
                lo: a.min(b),
                hi: a.max(b)
            }),
            positive().prop_map(|rate| Dist::Exp { rate }),
            (1e-3..MAX_DELAY_MS, positive())
                .prop_map(|(scale, shape)| Dist::Pareto { scale, shape }),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop::collection::vec((positive(), inner), 1..4).prop_map(Dist::Mixture)
        })
    }

    proptest! {
        #[test]
        fn text_round_trips(d in dist()) {
            prop_assert!(d.validate().is_ok());
            let text = d.to_string();
            let back: Dist = text.parse().map_err(|e: DistError| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, d);
        }

        #[test]
        fn parser_never_panics(s in "[ -~]{0,40}") {
            let _ = s.parse::<Dist>();
        }
    }
}
