//! SVG charts for the lab's report directories: line charts (P(consistent read) against
//! time since the write was acknowledged, measured against the PBS model's prediction)
//! and grouped bar charts (latency percentiles per W, lost writes per policy). Pure data
//! in, one SVG file out: the report code maps its results to [`LineChart`] and
//! [`BarChart`]; nothing here knows the lab's result types.
//!
//! Drawn with `plotters`' SVG backend. An SVG's text is rendered by whoever views it (a
//! browser, GitHub's Markdown view) with its own `sans-serif` font, so plotters needs a
//! font only to *measure* text when it lays out labels. DejaVu Sans is embedded (the
//! `dejavu` crate) and registered as `sans-serif` through plotters' `ab_glyph` feature,
//! so no system font or fontconfig is needed. It is the widest of the common default
//! sans-serif faces, so text measured with it also fits in Arial, Helvetica or Noto.
//!
//! What this module guarantees:
//! - Bad data never panics: NaN, infinite and absurdly large values are skipped, a chart
//!   or series without data is drawn with a "no data" note, names too long for their
//!   place are shortened with an ellipsis, control characters are blanked (they would
//!   make the SVG invalid XML). Only a self-contradictory chart
//!   ([`ChartError::InvalidChart`]) or a failed write is an error.
//! - Axis ranges and ticks are chosen here rather than by plotters: round steps of
//!   1, 2 or 5 × 10^k, auto-ranged axes extended to a whole step, a count axis never
//!   ticks at fractions, and a log axis ticks at decades.
//! - The legend sits in its own rows between the title and the plot, so it never hides
//!   data.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::cartesian::Cartesian2d;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::{
    ChartBuilder, ChartContext, Circle, Color, DashedLineSeries, EmptyElement, FontDesc,
    FontFamily, FontStyle, FontTransform, IntoDrawingArea, LineSeries, PathElement, RGBColor,
    Rectangle, SVGBackend, Text, TextStyle, WHITE,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};

mod axis;
mod legend;

use axis::{clip_y, min_max, plottable, usable, value_label, Axis};
use legend::{bar_legend, draw_legend, legend_name, legend_row_count, LegendEntry, Swatch};

/// Width of every chart, in pixels: room for a legend row of three or four series.
pub const WIDTH: u32 = 800;
/// Height of every chart, in pixels.
pub const HEIGHT: u32 = 480;

/// Font sizes in plotters' unit, which is 1.24 × the SVG `font-size` it writes.
const TITLE_SIZE: f64 = 24.0;
const LEGEND_SIZE: f64 = 17.0;
const AXIS_DESC_SIZE: f64 = 18.0;
const TICK_SIZE: f64 = 16.0;
const VALUE_SIZE: f64 = 15.0;
const NOTE_SIZE: f64 = 20.0;

/// Space around the chart, in pixels.
const MARGIN: i32 = 12;
/// Extra space right of the plot, so the last x tick label is not cut off.
const MARGIN_RIGHT: i32 = 28;
/// Height of the title band at the top.
const TITLE_BAND: i32 = 40;
/// Height of one legend row.
const LEGEND_ROW: i32 = 22;
/// Dash and gap of a dashed line.
const DASH_PX: i32 = 6;
const GAP_PX: i32 = 5;
/// Height of the band under the plot for x tick labels and the x axis label.
const X_LABEL_AREA: i32 = 56;
/// Length of the tick marks; plotters puts tick labels twice this far from the axis.
const TICK_MARK_PX: i32 = 5;

/// A solid series with more points than this is drawn without markers, which would
/// merge into a thick smear.
const MAX_MARKED_POINTS: usize = 60;

/// Okabe–Ito colours (minus yellow, unreadable on white): told apart with the common
/// forms of colour blindness.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
];
const TEXT_COLOUR: RGBColor = RGBColor(0x22, 0x22, 0x22);
const AXIS_COLOUR: RGBColor = RGBColor(0x55, 0x55, 0x55);
const GRID_COLOUR: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const MINOR_GRID_COLOUR: RGBColor = RGBColor(0xF0, 0xF0, 0xF0);

/// How a series' line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineStyle {
    /// A solid line with a marker at each point: measured data.
    #[default]
    Solid,
    /// A dashed line without markers: a model's prediction.
    Dashed,
}

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// `(x, y)` points in any order (they are drawn sorted by x). Points with a NaN or
    /// infinite coordinate, or x ≤ 0 on a log x axis, are skipped.
    pub points: Vec<(f64, f64)>,
    /// Solid (measured) or dashed (predicted).
    pub style: LineStyle,
}

/// A chart of one or more series against a shared x axis; each series gets its own
/// colour, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Shown above the chart.
    pub title: String,
    /// X axis label, with its unit ("time since write acknowledged (ms)").
    pub x_label: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The lines, in legend order.
    pub series: Vec<Series>,
    /// Logarithmic x axis (base 10), for times spanning decades.
    pub x_log: bool,
    /// Fixed y range `(low, high)`, e.g. `(0.0, 1.0)` for a probability; lines are cut
    /// at its edges. `None` fits the data, always including 0.
    pub y_range: Option<(f64, f64)>,
}

/// A grouped bar chart: for each group one bar per series, the value written above it.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Shown above the chart.
    pub title: String,
    /// Y axis label, with its unit.
    pub y_label: String,
    /// The groups along the x axis, in order.
    pub groups: Vec<BarGroup>,
    /// One name per bar of a group (legend order, e.g. `p50`, `p90`, `p99`).
    pub series_names: Vec<String>,
}

/// One group of bars (e.g. `W=1`).
#[derive(Debug, Clone, PartialEq)]
pub struct BarGroup {
    /// Label under the group.
    pub label: String,
    /// One value per entry of [`BarChart::series_names`]. A NaN or infinite value is
    /// drawn as no bar, labelled `n/a`; a zero is a flat bar labelled `0`.
    pub values: Vec<f64>,
}

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The chart contradicts itself; nothing was written.
    #[error("invalid chart {title:?}: {reason}")]
    InvalidChart {
        /// The chart's title.
        title: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The embedded font that lays out the chart's text could not be loaded.
    #[error("the embedded chart font could not be loaded; charts cannot be drawn")]
    FontUnavailable,
    /// plotters failed while drawing (in memory, before anything was written).
    #[error("drawing chart {title:?} failed: {reason}")]
    Draw {
        /// The chart's title.
        title: String,
        /// plotters' error.
        reason: String,
    },
    /// The SVG file could not be written.
    #[error("could not write chart to {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Draws `chart` and writes it to `path` as SVG (the file is replaced).
pub fn line_chart(path: &Path, chart: &LineChart) -> Result<(), ChartError> {
    write_svg(path, &render_line_chart(chart)?)
}

/// Draws `chart` and writes it to `path` as SVG (the file is replaced).
pub fn bar_chart(path: &Path, chart: &BarChart) -> Result<(), ChartError> {
    write_svg(path, &render_bar_chart(chart)?)
}

fn write_svg(path: &Path, svg: &str) -> Result<(), ChartError> {
    std::fs::write(path, svg).map_err(|source| ChartError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The plot both chart kinds draw into: plot coordinates on both axes (log10 of the
/// value on a log axis), with the ticks an [`Axis`] chose.
type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;

fn render_line_chart(chart: &LineChart) -> Result<String, ChartError> {
    // Layout measures text, which needs the font before anything is drawn.
    ensure_font()?;
    let invalid = |reason: String| ChartError::InvalidChart {
        title: chart.title.clone(),
        reason,
    };
    let lines: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| plottable(&s.points, chart.x_log))
        .collect();
    let all = || lines.iter().flatten();
    let (x_min, x_max) = min_max(all().map(|p| p.0));
    let x = match (x_min, chart.x_log) {
        (None, true) => Axis::log(1.0, 1000.0),
        (None, false) => Axis::linear(0.0, 1.0, true, false),
        (Some(lo), true) => Axis::log(10f64.powf(lo), 10f64.powf(x_max.unwrap_or(lo))),
        (Some(lo), false) => Axis::linear(lo, x_max.unwrap_or(lo), true, false),
    };
    let y = match chart.y_range {
        Some((lo, hi)) => {
            if !(usable(lo) && usable(hi) && lo < hi) {
                return Err(invalid(format!(
                    "y range ({lo}, {hi}) must be two finite numbers, low below high"
                )));
            }
            Axis::linear(lo, hi, false, false)
        }
        None => {
            let (lo, hi) = min_max(all().map(|p| p.1));
            let (lo, hi) = (lo.unwrap_or(0.0).min(0.0), hi.unwrap_or(1.0).max(0.0));
            // A little room, so the highest point does not sit on the plot's frame.
            let pad = (hi - lo) * AUTO_PAD;
            Axis::linear(if lo < 0.0 { lo - pad } else { lo }, hi + pad, true, false)
        }
    };

    let legend: Vec<LegendEntry> = chart
        .series
        .iter()
        .zip(&lines)
        .enumerate()
        .map(|(i, (s, pts))| LegendEntry {
            name: legend_name(&s.name, pts.is_empty()),
            colour: colour(i),
            swatch: Swatch::Line {
                dashed: s.style == LineStyle::Dashed,
                marker: has_markers(s.style, pts.len()),
            },
        })
        .collect();
    let frame = Frame {
        title: &chart.title,
        x_desc: &chart.x_label,
        y_desc: &chart.y_label,
        x: &x,
        y: &y,
        legend: &legend,
        vertical_grid: true,
    };
    render(&frame, |plot| {
        let draw = |e: DrawingAreaErrorKind<std::io::Error>| draw_error(&chart.title, e);
        for (i, (s, pts)) in chart.series.iter().zip(&lines).enumerate() {
            let line = colour(i).stroke_width(2);
            for run in clip_y(pts, y.lo, y.hi) {
                match s.style {
                    LineStyle::Solid => plot.draw_series(LineSeries::new(run, line)),
                    LineStyle::Dashed => {
                        plot.draw_series(DashedLineSeries::new(run, DASH_PX, GAP_PX, line))
                    }
                }
                .map_err(draw)?;
            }
            if has_markers(s.style, pts.len()) {
                let inside = pts.iter().filter(|p| (y.lo..=y.hi).contains(&p.1));
                plot.draw_series(inside.map(|&p| Circle::new(p, 4, colour(i).filled())))
                    .map_err(draw)?;
            }
        }
        if lines.iter().all(Vec::is_empty) {
            no_data_note(plot, &x, &y, &chart.title)?;
        }
        Ok(())
    })
}

fn render_bar_chart(chart: &BarChart) -> Result<String, ChartError> {
    ensure_font()?;
    let series = chart.series_names.len();
    if let Some(g) = chart.groups.iter().find(|g| g.values.len() != series) {
        return Err(ChartError::InvalidChart {
            title: chart.title.clone(),
            reason: format!(
                "group {:?} has {} values but there are {series} series names; \
                 give one value per series",
                g.label,
                g.values.len()
            ),
        });
    }
    let legend = bar_legend(&chart.series_names);
    let rows = legend_row_count(&legend);
    let layout = BarLayout::new(chart, rows);
    let x = Axis::groups(
        chart
            .groups
            .iter()
            .map(|g| {
                fit(
                    &clean_text(&g.label),
                    TICK_SIZE,
                    FontStyle::Normal,
                    layout.label_px,
                )
            })
            .collect(),
    );
    let frame = Frame {
        title: &chart.title,
        x_desc: "",
        y_desc: &chart.y_label,
        x: &x,
        y: &layout.y,
        legend: &legend,
        vertical_grid: false,
    };
    render(&frame, |plot| {
        let width = layout.share / series.max(1) as f64;
        for (g, group) in chart.groups.iter().enumerate() {
            for (j, &v) in group.values.iter().enumerate() {
                let x0 = g as f64 + (1.0 - layout.share) / 2.0 + j as f64 * width;
                // A thin gap between neighbouring bars.
                let bar = (x0 + width * 0.06, x0 + width * 0.94);
                let value = usable(v).then_some(v);
                draw_bar(plot, bar, value, colour(j), layout.upright, &chart.title)?;
            }
        }
        if chart.groups.is_empty() || series == 0 {
            no_data_note(plot, &x, &layout.y, &chart.title)?;
        }
        Ok(())
    })
}

/// How a bar chart's bars share the plot, and a y axis with room for the value labels.
struct BarLayout {
    /// The fraction of each group's width its bars take.
    share: f64,
    /// Value labels are wider than the bars, so they are written upright.
    upright: bool,
    /// The widest a group label may be, in pixels.
    label_px: u32,
    y: Axis,
}

impl BarLayout {
    fn new(chart: &BarChart, legend_rows: i32) -> BarLayout {
        let series = chart.series_names.len().max(1) as f64;
        let values = || chart.groups.iter().flat_map(|g| &g.values).copied();
        let (lo, hi) = min_max(values().filter(|&v| usable(v)));
        let (lo, hi) = (lo.unwrap_or(0.0).min(0.0), hi.unwrap_or(0.0).max(0.0));
        let integer = values().filter(|&v| usable(v)).all(|v| v.fract() == 0.0);

        // The plot's size depends on the y tick labels, which depend on the headroom
        // below; the axis without headroom is near enough to size it.
        let first_y = Axis::linear(lo, if hi == lo { 1.0 } else { hi }, true, integer);
        let (plot_w, plot_h) = plot_size(legend_rows, y_label_area(&first_y), false);
        let group_px = plot_w / chart.groups.len().max(1) as f64;
        let share = (series * MAX_BAR_PX / group_px).min(BAR_SHARE);
        let bar_px = group_px * share / series;
        let widest_label = values()
            .map(|v| text_width(&value_label(v), VALUE_SIZE, FontStyle::Normal))
            .max()
            .unwrap_or(0) as f64;
        let upright = widest_label + 4.0 > bar_px;

        // Labels go above their bars (below, if negative; zero and n/a labels go up),
        // so the axis reaches past the data by the labels' size.
        let headroom_px = if upright {
            widest_label + 10.0
        } else {
            VALUE_SIZE + 6.0
        };
        let f = (headroom_px / plot_h).min(0.45);
        let up = values().any(|v| !(usable(v) && v < 0.0));
        let down = values().any(|v| usable(v) && v < 0.0);
        let sides = f64::from(u8::from(up) + u8::from(down));
        let span = (hi - lo) / (1.0 - f * sides);
        let y = if span == 0.0 {
            Axis::linear(0.0, 1.0, true, integer)
        } else {
            let top = if up { hi + f * span } else { hi };
            let bottom = if down { lo - f * span } else { lo };
            Axis::linear(bottom, top, true, integer)
        };
        BarLayout {
            share,
            upright,
            label_px: (group_px - 8.0).max(0.0) as u32,
            y,
        }
    }
}

/// Draws one bar over `x0..x1` with its value written at its end; `None` (a value that
/// cannot be drawn) is no bar, labelled "n/a".
fn draw_bar(
    plot: &Plot<'_, '_>,
    (x0, x1): (f64, f64),
    value: Option<f64>,
    colour: RGBColor,
    upright: bool,
    title: &str,
) -> Result<(), ChartError> {
    let area = plot.plotting_area();
    let err = |e: DrawingAreaErrorKind<std::io::Error>| draw_error(title, e);
    match value {
        None => {}
        // A flat bar, so a zero reads as "measured zero", not "missing".
        Some(0.0) => area
            .draw(&PathElement::new(
                vec![(x0, 0.0), (x1, 0.0)],
                colour.stroke_width(3),
            ))
            .map_err(err)?,
        Some(v) => area
            .draw(&Rectangle::new(
                [(x0, v.max(0.0)), (x1, v.min(0.0))],
                colour.filled(),
            ))
            .map_err(err)?,
    }
    let at = value.unwrap_or(0.0);
    let below = at < 0.0;
    let font = FontDesc::new(FontFamily::SansSerif, VALUE_SIZE, FontStyle::Normal);
    let style: TextStyle = match (upright, below) {
        (false, false) => font
            .color(&TEXT_COLOUR)
            .pos(Pos::new(HPos::Center, VPos::Bottom)),
        (false, true) => font
            .color(&TEXT_COLOUR)
            .pos(Pos::new(HPos::Center, VPos::Top)),
        // Turned a quarter left, the text's start is its bottom end.
        (true, below) => font
            .color(&TEXT_COLOUR)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(
                if below { HPos::Right } else { HPos::Left },
                VPos::Center,
            )),
    };
    let offset = if below { 4 } else { -4 };
    let label = value_label(value.unwrap_or(f64::NAN));
    let text = EmptyElement::at(((x0 + x1) / 2.0, at)) + Text::new(label, (0, offset), style);
    area.draw(&text).map_err(err)
}

/// The fraction of a group's slot its bars fill at most; the rest separates groups.
const BAR_SHARE: f64 = 0.8;
/// The widest a bar gets, in pixels: wider ones read as blocks, not bars.
const MAX_BAR_PX: f64 = 90.0;
/// Room left above (and below) the data on an auto-ranged y axis, as a fraction of it.
const AUTO_PAD: f64 = 0.05;

/// Everything around the plotted data.
struct Frame<'c> {
    title: &'c str,
    x_desc: &'c str,
    y_desc: &'c str,
    x: &'c Axis,
    y: &'c Axis,
    legend: &'c [LegendEntry],
    /// Grid lines across the x axis (not between bar groups).
    vertical_grid: bool,
}

/// Draws the frame into a fresh SVG, lets `data` draw into the plot, and returns the
/// document.
fn render(
    frame: &Frame<'_>,
    data: impl FnOnce(&mut Plot<'_, '_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    let err = |e: DrawingAreaErrorKind<std::io::Error>| draw_error(frame.title, e);
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = fit(
            &clean_text(frame.title),
            TITLE_SIZE,
            FontStyle::Bold,
            (WIDTH as i32 - 2 * MARGIN) as u32,
        );
        let title_style = FontDesc::new(FontFamily::SansSerif, TITLE_SIZE, FontStyle::Bold)
            .color(&TEXT_COLOUR)
            .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(title, (WIDTH as i32 / 2, MARGIN), title_style))
            .map_err(err)?;
        let rows = draw_legend(&root, frame.legend, frame.title)?;

        let (_, lower) = root.split_vertically(TITLE_BAND + rows * LEGEND_ROW);
        let y_area = y_label_area(frame.y);
        let (plot_w, plot_h) = plot_size(rows, y_area, !frame.x_desc.is_empty());
        let mut plot = ChartBuilder::on(&lower)
            .margin_top(8)
            .margin_bottom(MARGIN)
            .margin_left(MARGIN)
            .margin_right(MARGIN_RIGHT)
            .x_label_area_size(x_label_area(!frame.x_desc.is_empty()))
            .y_label_area_size(y_area)
            .build_cartesian_2d(frame.x.clone(), frame.y.clone())
            .map_err(err)?;
        let x_desc = fit(
            &clean_text(frame.x_desc),
            AXIS_DESC_SIZE,
            FontStyle::Normal,
            plot_w as u32,
        );
        let y_desc = fit(
            &clean_text(frame.y_desc),
            AXIS_DESC_SIZE,
            FontStyle::Normal,
            plot_h as u32,
        );
        let x_fmt = |v: &f64| frame.x.label(*v);
        let y_fmt = |v: &f64| frame.y.label(*v);
        let mut mesh = plot.configure_mesh();
        // plotters draws an empty description as an empty text element; leave it out.
        if !x_desc.is_empty() {
            mesh.x_desc(x_desc);
        }
        if !y_desc.is_empty() {
            mesh.y_desc(y_desc);
        }
        mesh.axis_desc_style(
            FontDesc::new(FontFamily::SansSerif, AXIS_DESC_SIZE, FontStyle::Normal)
                .color(&TEXT_COLOUR),
        )
        .label_style(
            FontDesc::new(FontFamily::SansSerif, TICK_SIZE, FontStyle::Normal).color(&TEXT_COLOUR),
        )
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .set_all_tick_mark_size(TICK_MARK_PX)
        .axis_style(AXIS_COLOUR.stroke_width(1))
        .bold_line_style(GRID_COLOUR.stroke_width(1))
        .light_line_style(MINOR_GRID_COLOUR.stroke_width(1));
        if !frame.vertical_grid {
            mesh.disable_x_mesh();
        }
        mesh.draw().map_err(err)?;
        data(&mut plot)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Width of the band left of the plot: the widest y tick label, the gap plotters leaves
/// between it and the axis, and the rotated y axis label.
fn y_label_area(y: &Axis) -> i32 {
    let widest = y
        .ticks
        .iter()
        .map(|&t| text_width(&y.label(t), TICK_SIZE, FontStyle::Normal))
        .max()
        .unwrap_or(0) as i32;
    widest + 3 * TICK_MARK_PX + AXIS_DESC_SIZE as i32 + 10
}

/// Height of the band under the plot: tick labels, and the x axis label if there is one.
fn x_label_area(has_desc: bool) -> i32 {
    if has_desc {
        X_LABEL_AREA
    } else {
        X_LABEL_AREA - AXIS_DESC_SIZE as i32 - 6
    }
}

/// The plot's size in pixels, for a legend of `rows` rows, a y label band of `y_area`
/// pixels and an x axis with or without a label (what [`render`] gives plotters, minus
/// its label bands).
fn plot_size(rows: i32, y_area: i32, x_desc: bool) -> (f64, f64) {
    let w = WIDTH as i32 - MARGIN - MARGIN_RIGHT - y_area;
    let h = HEIGHT as i32 - TITLE_BAND - rows * LEGEND_ROW - 8 - MARGIN - x_label_area(x_desc);
    (w.max(1) as f64, h.max(1) as f64)
}

fn no_data_note(plot: &Plot<'_, '_>, x: &Axis, y: &Axis, title: &str) -> Result<(), ChartError> {
    let style = FontDesc::new(FontFamily::SansSerif, NOTE_SIZE, FontStyle::Normal)
        .color(&AXIS_COLOUR)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let centre = ((x.lo + x.hi) / 2.0, (y.lo + y.hi) / 2.0);
    plot.plotting_area()
        .draw(&Text::new("no data", centre, style))
        .map_err(|e| draw_error(title, e))
}

fn draw_error(title: &str, e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw {
        title: title.to_string(),
        reason: e.to_string(),
    }
}

/// Registers the embedded fonts with plotters, once per process.
fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let family = FontFamily::SansSerif.as_str();
        plotters::style::register_font(family, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(family, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(ChartError::FontUnavailable)
    }
}

fn has_markers(style: LineStyle, points: usize) -> bool {
    // A lone point has no line to show it, so it always gets a marker.
    points == 1 || (style == LineStyle::Solid && (1..=MAX_MARKED_POINTS).contains(&points))
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `text` with control characters (invalid in XML, or meaningless in a label) blanked.
fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The width of `text` in pixels as plotters lays it out.
fn text_width(text: &str, size: f64, style: FontStyle) -> u32 {
    FontDesc::new(FontFamily::SansSerif, size, style)
        .box_size(text)
        .map(|(w, _)| w)
        // Unreachable once the font is registered; a generous guess keeps layout sane.
        .unwrap_or_else(|_| (text.chars().count() as f64 * size * 0.7) as u32)
}

/// `text`, shortened with an ellipsis if wider than `max_px`.
fn fit(text: &str, size: f64, style: FontStyle, max_px: u32) -> String {
    if text_width(text, size, style) <= max_px {
        return text.to_string();
    }
    // Ordinary glyphs are at least a quarter of the font size wide, which bounds the
    // search (a run of zero-width characters may be cut shorter than it had to be).
    let chars: Vec<char> = text.chars().collect();
    let cap = ((max_px as f64 / (size * 0.25)) as usize).min(chars.len());
    let with = |n: usize| chars[..n].iter().collect::<String>().trim_end().to_string() + "…";
    let (mut fits, mut over) = (0, cap + 1);
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        if text_width(&with(mid), size, style) <= max_px {
            fits = mid;
        } else {
            over = mid;
        }
    }
    if fits == 0 {
        "…".to_string()
    } else {
        with(fits)
    }
}

#[cfg(test)]
mod tests;
