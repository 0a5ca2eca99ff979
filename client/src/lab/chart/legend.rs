//! The legend: one entry per series (a sample of its line or bar, then its name), laid
//! out in centred rows between the title and the plot so it never covers data. More than
//! [`MAX_LEGEND_ROWS`] rows fold the rest into "+N more".

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::element::DashedPathElement;
use plotters::prelude::{
    Circle, Color, DrawingArea, FontDesc, FontFamily, FontStyle, PathElement, RGBColor, Rectangle,
    SVGBackend, Text,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    clean_text, colour, draw_error, fit, text_width, ChartError, DASH_PX, GAP_PX, LEGEND_ROW,
    LEGEND_SIZE, MARGIN, TEXT_COLOUR, TITLE_BAND, WIDTH,
};

/// More legend rows than this would squeeze the plot; the rest become "+N more".
const MAX_LEGEND_ROWS: usize = 4;
/// The widest a legend name may be, in pixels.
const MAX_LEGEND_NAME_PX: u32 = 340;
/// Length of the line (or side of the square) drawn before a legend name: three dashes
/// and two gaps.
const SWATCH_PX: i32 = 3 * DASH_PX + 2 * GAP_PX;

/// One legend entry: a sample of how the series is drawn, then its name.
#[derive(Clone)]
pub(super) struct LegendEntry {
    pub(super) name: String,
    pub(super) colour: RGBColor,
    pub(super) swatch: Swatch,
}

/// What is drawn before a legend name.
#[derive(Clone, Copy)]
pub(super) enum Swatch {
    /// A short stretch of the series' line, with a marker if the series has them.
    Line { dashed: bool, marker: bool },
    /// A small filled square in the bar colour.
    Bar,
    /// Nothing: the entry is text only ("+3 more").
    None,
}

/// The legend of a bar chart: one square per series, in the series' colours.
pub(super) fn bar_legend(names: &[String]) -> Vec<LegendEntry> {
    names
        .iter()
        .enumerate()
        .map(|(j, n)| LegendEntry {
            name: legend_name(n, false),
            colour: colour(j),
            swatch: Swatch::Bar,
        })
        .collect()
}

/// A series' name as the legend shows it: cleaned, shortened to fit, and marked if the
/// series had nothing to draw.
pub(super) fn legend_name(name: &str, empty: bool) -> String {
    const NO_DATA: &str = " (no data)";
    if empty {
        let room =
            MAX_LEGEND_NAME_PX.saturating_sub(text_width(NO_DATA, LEGEND_SIZE, FontStyle::Normal));
        fit(&clean_text(name), LEGEND_SIZE, FontStyle::Normal, room) + NO_DATA
    } else {
        fit(
            &clean_text(name),
            LEGEND_SIZE,
            FontStyle::Normal,
            MAX_LEGEND_NAME_PX,
        )
    }
}

/// Gap between legend entries in a row.
const LEGEND_GAP: i32 = 22;
/// Gap between the swatch and the name.
const SWATCH_GAP: i32 = 6;

fn entry_width(e: &LegendEntry) -> i32 {
    let swatch = if matches!(e.swatch, Swatch::None) {
        0
    } else {
        SWATCH_PX + SWATCH_GAP
    };
    swatch + text_width(&e.name, LEGEND_SIZE, FontStyle::Normal) as i32
}

/// How many rows [`draw_legend`] will take for `entries`.
pub(super) fn legend_row_count(entries: &[LegendEntry]) -> i32 {
    legend_rows(&capped_legend(entries)).len() as i32
}

/// Splits the entries into rows that fit across the chart, filling each row in order.
fn legend_rows(entries: &[LegendEntry]) -> Vec<Vec<usize>> {
    let room = WIDTH as i32 - 2 * MARGIN;
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let w = entry_width(e);
        match rows.last_mut() {
            Some(row) if used + LEGEND_GAP + w <= room => {
                row.push(i);
                used += LEGEND_GAP + w;
            }
            _ => {
                rows.push(vec![i]);
                used = w;
            }
        }
    }
    rows
}

/// The entries that fit in [`MAX_LEGEND_ROWS`] rows, the last replaced by "+N more"
/// if not all do.
fn capped_legend(entries: &[LegendEntry]) -> Vec<LegendEntry> {
    let rows = legend_rows(entries);
    if rows.len() <= MAX_LEGEND_ROWS {
        return entries.to_vec();
    }
    let mut kept = rows[..MAX_LEGEND_ROWS].iter().flatten().count();
    loop {
        let mut shown = entries[..kept].to_vec();
        shown.push(LegendEntry {
            name: format!("+{} more", entries.len() - kept),
            colour: TEXT_COLOUR,
            swatch: Swatch::None,
        });
        if kept == 0 || legend_rows(&shown).len() <= MAX_LEGEND_ROWS {
            return shown;
        }
        kept -= 1;
    }
}

/// Draws the legend in centred rows under the title; returns the number of rows used.
pub(super) fn draw_legend(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[LegendEntry],
    title: &str,
) -> Result<i32, ChartError> {
    let entries = capped_legend(entries);
    let rows = legend_rows(&entries);
    let err = |e: DrawingAreaErrorKind<std::io::Error>| draw_error(title, e);
    let font = FontDesc::new(FontFamily::SansSerif, LEGEND_SIZE, FontStyle::Normal);
    for (r, row) in rows.iter().enumerate() {
        let width: i32 = row.iter().map(|&i| entry_width(&entries[i])).sum::<i32>()
            + LEGEND_GAP * (row.len() as i32 - 1);
        let mut x = (WIDTH as i32 - width) / 2;
        let y = TITLE_BAND + r as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        for &i in row {
            let e = &entries[i];
            let line = e.colour.stroke_width(2);
            let mut text_x = x + SWATCH_PX + SWATCH_GAP;
            match e.swatch {
                Swatch::Line { dashed: false, .. } => root
                    .draw(&PathElement::new(vec![(x, y), (x + SWATCH_PX, y)], line))
                    .map_err(err)?,
                Swatch::Line { dashed: true, .. } => root
                    .draw(&DashedPathElement::new(
                        vec![(x, y), (x + SWATCH_PX, y)],
                        DASH_PX,
                        GAP_PX,
                        line,
                    ))
                    .map_err(err)?,
                Swatch::Bar => root
                    .draw(&Rectangle::new(
                        [
                            (x + SWATCH_PX / 2 - 7, y - 7),
                            (x + SWATCH_PX / 2 + 7, y + 7),
                        ],
                        e.colour.filled(),
                    ))
                    .map_err(err)?,
                Swatch::None => text_x = x,
            }
            if let Swatch::Line { marker: true, .. } = e.swatch {
                root.draw(&Circle::new((x + SWATCH_PX / 2, y), 4, e.colour.filled()))
                    .map_err(err)?;
            }
            let style = font
                .color(&TEXT_COLOUR)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(e.name.clone(), (text_x, y), style))
                .map_err(err)?;
            x += entry_width(e) + LEGEND_GAP;
        }
    }
    Ok(rows.len() as i32)
}
