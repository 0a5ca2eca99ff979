//! Charts are written for typical and edge-case inputs and come out as well-formed SVG
//! with their text; the pure axis and clipping helpers pick what they should.
//!
//! Set `DYNAKV_CHART_DIR` to a directory to keep the sample charts there and look at them.

use std::path::PathBuf;

use super::*;

/// Where a test's chart goes: `DYNAKV_CHART_DIR` if set, else a fresh temporary directory.
struct OutDir {
    dir: PathBuf,
    keep: bool,
}

impl OutDir {
    fn new(test: &str) -> OutDir {
        if let Some(dir) = std::env::var_os("DYNAKV_CHART_DIR") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            return OutDir { dir, keep: true };
        }
        let dir = std::env::temp_dir().join(format!("dynakv-chart-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        OutDir { dir, keep: false }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Checks the minimal structure of an SVG document — one `<svg>` root, balanced tags,
/// only known entities, no characters XML forbids — and returns the content of its
/// `<text>` elements, unescaped.
fn parse_svg(svg: &str) -> Vec<String> {
    assert!(
        svg.starts_with("<svg"),
        "does not start with <svg: {:?}",
        &svg[..svg.len().min(40)]
    );
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "does not end with </svg>"
    );
    assert!(
        svg.contains("xmlns=\"http://www.w3.org/2000/svg\""),
        "no SVG namespace"
    );
    for c in svg.chars() {
        assert!(
            !c.is_control() || c == '\n' || c == '\t' || c == '\r',
            "control character {c:?}"
        );
    }
    let mut stack: Vec<String> = Vec::new();
    let mut texts = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let content = &rest[..open];
        check_entities(content);
        if stack.last().map(String::as_str) == Some("text") {
            // The backend puts each text on a line of its own; XML whitespace rules drop
            // those newlines when rendering.
            texts.push(unescape(content.trim_matches('\n')));
        }
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else {
            let name = tag
                .split_whitespace()
                .next()
                .expect("empty tag")
                .trim_end_matches('/');
            check_entities(tag);
            if stack.is_empty() {
                roots += 1;
                assert_eq!(name, "svg", "root element is not svg");
            }
            if !tag.ends_with('/') {
                stack.push(name.to_string());
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "more than one root element");
    texts
}

fn check_entities(s: &str) {
    for (i, _) in s.match_indices('&') {
        let known = ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;"];
        assert!(
            known.iter().any(|e| s[i..].starts_with(e)),
            "bare '&' in {s:?}"
        );
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn write_line(out: &OutDir, file: &str, chart: &LineChart) -> Vec<String> {
    let path = out.path(file);
    line_chart(&path, chart).unwrap();
    parse_svg(&std::fs::read_to_string(&path).unwrap())
}

fn write_bar(out: &OutDir, file: &str, chart: &BarChart) -> Vec<String> {
    let path = out.path(file);
    bar_chart(&path, chart).unwrap();
    parse_svg(&std::fs::read_to_string(&path).unwrap())
}

fn has(texts: &[String], want: &str) -> bool {
    texts.iter().any(|t| t == want)
}

fn series(name: &str, points: Vec<(f64, f64)>, style: LineStyle) -> Series {
    Series {
        name: name.to_string(),
        points,
        style,
    }
}

/// Measured staleness bins and a smooth model curve, as the report draws them.
fn consistency_chart(x_log: bool) -> LineChart {
    let bins = [0.5, 1.5, 3.5, 7.5, 15.0, 35.0, 75.0, 150.0, 350.0, 750.0];
    let measured = bins
        .iter()
        .map(|&t| (t, 1.0 - 0.6 * (-t / 40.0f64).exp()))
        .collect();
    let predicted = (0..=200)
        .map(|i| {
            let t = i as f64 * 5.0;
            (t, 1.0 - 0.55 * (-t / 45.0f64).exp())
        })
        .collect();
    LineChart {
        title: "P(consistent read), N=3 R=1 W=1".to_string(),
        x_label: "time since write acknowledged (ms)".to_string(),
        y_label: "P(consistent read)".to_string(),
        series: vec![
            series("measured", measured, LineStyle::Solid),
            series("PBS model", predicted, LineStyle::Dashed),
        ],
        x_log,
        y_range: Some((0.0, 1.0)),
    }
}

#[test]
fn consistency_chart_has_title_labels_series_and_ticks() {
    let out = OutDir::new("consistency");
    let texts = write_line(&out, "consistency.svg", &consistency_chart(false));
    for want in [
        "P(consistent read), N=3 R=1 W=1",
        "time since write acknowledged (ms)",
        "P(consistent read)",
        "measured",
        "PBS model",
        "0",
        "500",
        "1000",
        "0.0",
        "0.5",
        "1.0",
    ] {
        assert!(has(&texts, want), "no text {want:?} in {texts:?}");
    }
}

#[test]
fn log_x_axis_ticks_at_decades_and_skips_zero() {
    let out = OutDir::new("log");
    let mut chart = consistency_chart(true);
    chart.series[0].points.push((0.0, 0.1));
    let texts = write_line(&out, "consistency-log.svg", &chart);
    for want in ["0.1", "1", "10", "100", "1000"] {
        assert!(has(&texts, want), "no tick {want:?} in {texts:?}");
    }
}

#[test]
fn line_chart_edge_cases_do_not_panic() {
    let out = OutDir::new("line-edges");
    let long = "a very long series name that goes on and on ".repeat(20);
    let charts = [
        ("no-series", vec![]),
        (
            "empty-series",
            vec![series("empty", vec![], LineStyle::Solid)],
        ),
        (
            "one-point",
            vec![series("one", vec![(3.0, 0.5)], LineStyle::Dashed)],
        ),
        (
            "non-finite",
            vec![series(
                "nan",
                vec![
                    (f64::NAN, 1.0),
                    (1.0, f64::INFINITY),
                    (2.0, 2.0),
                    (3.0, f64::NAN),
                    (4.0, 1e300),
                ],
                LineStyle::Solid,
            )],
        ),
        (
            "all-zero",
            vec![series(
                "zero",
                vec![(0.0, 0.0), (0.0, 0.0)],
                LineStyle::Solid,
            )],
        ),
        (
            "long-name",
            vec![series(
                &long,
                vec![(0.0, 1.0), (1.0, 2.0)],
                LineStyle::Solid,
            )],
        ),
        (
            "out-of-range",
            vec![series(
                "wild",
                vec![(0.0, -3.0), (1.0, 0.5), (2.0, 4.0), (3.0, 0.2)],
                LineStyle::Solid,
            )],
        ),
    ];
    for (file, series) in charts {
        for x_log in [false, true] {
            let chart = LineChart {
                title: long.clone(),
                x_label: long.clone(),
                y_label: long.clone(),
                series: series.clone(),
                x_log,
                y_range: (file == "out-of-range").then_some((0.0, 1.0)),
            };
            let texts = write_line(&out, &format!("{file}-{x_log}.svg"), &chart);
            // Shortened to fit the chart's width, with an ellipsis.
            assert!(
                texts.iter().all(|t| t.chars().count() < 120),
                "{file}: {texts:?}"
            );
            assert!(texts
                .iter()
                .any(|t| t.starts_with("a very long") && t.ends_with('…')));
        }
    }
}

#[test]
fn empty_series_are_marked_in_the_legend() {
    let out = OutDir::new("empty");
    let chart = LineChart {
        title: "t".to_string(),
        x_label: "x".to_string(),
        y_label: "y".to_string(),
        series: vec![series("nothing", vec![(f64::NAN, 0.0)], LineStyle::Solid)],
        x_log: false,
        y_range: None,
    };
    let texts = write_line(&out, "empty.svg", &chart);
    assert!(has(&texts, "nothing (no data)"), "{texts:?}");
    assert!(has(&texts, "no data"), "{texts:?}");
}

#[test]
fn names_with_markup_and_control_characters_stay_valid_svg() {
    let out = OutDir::new("markup");
    let chart = LineChart {
        title: "<b>&\"quoted\"</b>".to_string(),
        x_label: "x\0\u{7}".to_string(),
        y_label: "y'\n".to_string(),
        series: vec![series(
            "a<b>&c",
            vec![(0.0, 1.0), (1.0, 2.0)],
            LineStyle::Solid,
        )],
        x_log: false,
        y_range: None,
    };
    let texts = write_line(&out, "markup.svg", &chart);
    assert!(has(&texts, "<b>&\"quoted\"</b>"), "{texts:?}");
    assert!(has(&texts, "a<b>&c"), "{texts:?}");
}

#[test]
fn many_series_fold_into_more() {
    let out = OutDir::new("many");
    let chart = LineChart {
        title: "many".to_string(),
        x_label: "x".to_string(),
        y_label: "y".to_string(),
        series: (0..40)
            .map(|i| {
                series(
                    &format!("series number {i}"),
                    vec![(0.0, i as f64), (1.0, 1.0)],
                    LineStyle::Solid,
                )
            })
            .collect(),
        x_log: false,
        y_range: None,
    };
    let texts = write_line(&out, "many.svg", &chart);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with('+') && t.ends_with(" more")),
        "{texts:?}"
    );
}

#[test]
fn bad_y_range_is_an_error() {
    let out = OutDir::new("bad-range");
    for range in [
        (1.0, 1.0),
        (1.0, 0.0),
        (f64::NAN, 1.0),
        (0.0, f64::INFINITY),
    ] {
        let mut chart = consistency_chart(false);
        chart.y_range = Some(range);
        let err = line_chart(&out.path("bad.svg"), &chart).unwrap_err();
        assert!(matches!(err, ChartError::InvalidChart { .. }), "{err}");
    }
}

fn latency_chart() -> BarChart {
    BarChart {
        title: "Write latency by W (N=3)".to_string(),
        y_label: "latency (ms)".to_string(),
        groups: vec![
            BarGroup {
                label: "W=1".to_string(),
                values: vec![0.42, 1.25, 3.5],
            },
            BarGroup {
                label: "W=2".to_string(),
                values: vec![0.81, 2.1, 6.75],
            },
            BarGroup {
                label: "W=3".to_string(),
                values: vec![1.6, 4.2, 12.5],
            },
        ],
        series_names: vec!["p50".to_string(), "p90".to_string(), "p99".to_string()],
    }
}

#[test]
fn latency_bars_have_groups_series_and_values() {
    let out = OutDir::new("latency");
    let texts = write_bar(&out, "latency.svg", &latency_chart());
    for want in [
        "Write latency by W (N=3)",
        "latency (ms)",
        "W=1",
        "W=2",
        "W=3",
        "p50",
        "p90",
        "p99",
        "0.42",
        "1.25",
        "12.5",
    ] {
        assert!(has(&texts, want), "no text {want:?} in {texts:?}");
    }
}

#[test]
fn zero_bars_are_labelled_and_counts_tick_at_integers() {
    let out = OutDir::new("lost");
    let chart = BarChart {
        title: "Lost writes by conflict policy".to_string(),
        y_label: "lost writes".to_string(),
        groups: vec![
            BarGroup {
                label: "DVV".to_string(),
                values: vec![0.0],
            },
            BarGroup {
                label: "LWW".to_string(),
                values: vec![0.0],
            },
        ],
        series_names: vec!["lost writes".to_string()],
    };
    let texts = write_bar(&out, "lost-zero.svg", &chart);
    assert_eq!(
        texts.iter().filter(|t| *t == "0").count(),
        3,
        "two bar labels and a tick: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains('.')),
        "fractional tick on a count axis: {texts:?}"
    );

    let mut some = chart.clone();
    some.groups[1].values[0] = 17.0;
    some.title = "Lost writes, some".to_string();
    let texts = write_bar(&out, "lost.svg", &some);
    assert!(
        has(&texts, "17") && has(&texts, "DVV") && has(&texts, "LWW"),
        "{texts:?}"
    );
}

#[test]
fn bar_chart_edge_cases_do_not_panic() {
    let out = OutDir::new("bar-edges");
    let long = "an extremely long group label ".repeat(10);
    let charts = [
        BarChart {
            title: "none".into(),
            y_label: "y".into(),
            groups: vec![],
            series_names: vec![],
        },
        BarChart {
            title: "no series".into(),
            y_label: "y".into(),
            groups: vec![BarGroup {
                label: "g".into(),
                values: vec![],
            }],
            series_names: vec![],
        },
        BarChart {
            title: "bad values".into(),
            y_label: "y".into(),
            groups: vec![BarGroup {
                label: "g".into(),
                values: vec![f64::NAN, f64::INFINITY, -2.5],
            }],
            series_names: vec!["a".into(), "b".into(), "c".into()],
        },
        BarChart {
            title: "crowded".into(),
            y_label: long.clone(),
            groups: (0..12)
                .map(|i| BarGroup {
                    label: format!("{long}{i}"),
                    values: vec![123456.789, 0.001234, i as f64],
                })
                .collect(),
            series_names: vec![long.clone(), "b".into(), "c".into()],
        },
    ];
    for (i, chart) in charts.iter().enumerate() {
        let texts = write_bar(&out, &format!("bar-edge-{i}.svg"), chart);
        assert!(has(&texts, &chart.title), "{texts:?}");
        assert!(texts.iter().all(|t| t.chars().count() < 120), "{texts:?}");
    }
    let texts = write_bar(&out, "bar-edge-2.svg", &charts[2]);
    assert_eq!(texts.iter().filter(|t| *t == "n/a").count(), 2, "{texts:?}");
    assert!(has(&texts, "-2.5"), "{texts:?}");
}

#[test]
fn bar_values_must_match_series() {
    let out = OutDir::new("mismatch");
    let mut chart = latency_chart();
    chart.groups[1].values.pop();
    let err = bar_chart(&out.path("mismatch.svg"), &chart).unwrap_err();
    assert!(matches!(err, ChartError::InvalidChart { .. }), "{err}");
    assert!(err.to_string().contains("W=2"), "{err}");
}

#[test]
fn bad_path_is_an_error_not_a_panic() {
    let out = OutDir::new("bad-path");
    let path = out.path("no-such-dir").join("chart.svg");
    let err = line_chart(&path, &consistency_chart(false)).unwrap_err();
    assert!(matches!(err, ChartError::Write { .. }), "{err}");
    let err = bar_chart(&path, &latency_chart()).unwrap_err();
    assert!(matches!(err, ChartError::Write { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn fit_shortens_with_an_ellipsis() {
    ensure_font().unwrap();
    assert_eq!(fit("short", LEGEND_SIZE, FontStyle::Normal, 300), "short");
    let long = "x".repeat(10_000);
    let cut = fit(&long, LEGEND_SIZE, FontStyle::Normal, 100);
    assert!(cut.ends_with('…') && text_width(&cut, LEGEND_SIZE, FontStyle::Normal) <= 100);
    assert_eq!(fit(&long, LEGEND_SIZE, FontStyle::Normal, 0), "…");
}
