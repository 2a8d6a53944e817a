//! `cnnc bench --profile --chart FILE.svg`: where the time goes, as a bar chart. One
//! bar per kernel in network order, its length its time, coloured by op as in the
//! architecture diagrams, with the share of the total beside it, so the slowest layers
//! stand out at a glance.

use super::svg::{escape, fill};
use super::{Kind, kind};
use crate::ops::Op;
use std::fmt::Write;

/// One kernel's measured time.
pub struct Bar<'a> {
    pub name: &'a str,
    pub op: &'a Op,
    /// The op as the summary writes it (`conv 64 3x3 p1`).
    pub label: String,
    pub milliseconds: f64,
}

const ROW: f64 = 16.0;
const NAME_WIDTH: f64 = 300.0;
const BAR_WIDTH: f64 = 520.0;
const TOP: f64 = 48.0;

/// The chart as an SVG document.
pub fn chart(title: &str, bars: &[Bar]) -> String {
    let total: f64 = bars.iter().map(|b| b.milliseconds).sum();
    let longest = bars.iter().map(|b| b.milliseconds).fold(0.0, f64::max);
    let width = NAME_WIDTH + BAR_WIDTH + 140.0;
    let height = TOP + ROW * bars.len() as f64 + 60.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(&format!("{title}: {total:.2} ms in {} kernels", bars.len()))
    );
    for (row, bar) in bars.iter().enumerate() {
        bar_row(&mut svg, row, bar, longest, total);
    }
    legend(&mut svg, bars, TOP + ROW * bars.len() as f64 + 24.0);
    svg.push_str("</svg>\n");
    svg
}

fn bar_row(svg: &mut String, row: usize, bar: &Bar, longest: f64, total: f64) {
    let y = TOP + ROW * row as f64;
    let length = if longest > 0.0 {
        bar.milliseconds / longest * BAR_WIDTH
    } else {
        0.0
    };
    let share = if total > 0.0 {
        bar.milliseconds / total * 100.0
    } else {
        0.0
    };
    let kind = kind(bar.op);
    let _ = writeln!(
        svg,
        r##"<g><title>{}</title><text x="{}" y="{}" text-anchor="end">{}</text><rect x="{}" y="{}" width="{length:.1}" height="{}" fill="{}" stroke="{}"/><text x="{}" y="{}">{}</text></g>"##,
        escape(&format!(
            "{} ({}): {:.3} ms",
            bar.name, bar.label, bar.milliseconds
        )),
        NAME_WIDTH - 6.0,
        y + ROW - 4.0,
        escape(&shorten(bar.name, 46)),
        NAME_WIDTH,
        y + 2.0,
        ROW - 3.0,
        fill(kind),
        stroke(kind),
        NAME_WIDTH + length + 6.0,
        y + ROW - 4.0,
        escape(&format!("{:.2} ms  {share:.1}%", bar.milliseconds)),
    );
}

/// The kinds of op that appear, each with its colour.
fn legend(svg: &mut String, bars: &[Bar], y: f64) {
    let mut seen: Vec<Kind> = Vec::new();
    for bar in bars {
        let kind = kind(bar.op);
        if !seen.contains(&kind) {
            seen.push(kind);
        }
    }
    for (i, kind) in seen.iter().enumerate() {
        let x = 10.0 + 120.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="12" fill="{}" stroke="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            fill(*kind),
            stroke(*kind),
            x + 20.0,
            y,
            name(*kind)
        );
    }
}

/// The pale fills of the diagrams, outlined so a bar shows on white.
fn stroke(kind: Kind) -> &'static str {
    match kind {
        Kind::Conv => "#2563eb",
        Kind::Pool => "#16a34a",
        Kind::Dense => "#ca8a04",
        Kind::Norm => "#9333ea",
        Kind::Merge => "#dc2626",
        _ => "#64748b",
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Input => "input",
        Kind::Conv => "convolution",
        Kind::Pool => "pooling",
        Kind::Dense => "dense",
        Kind::Norm => "normalisation",
        Kind::Activation => "element-wise",
        Kind::Merge => "concat / add",
        Kind::Reshape => "reshape",
        Kind::Block => "block",
    }
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let tail: String = text
        .chars()
        .rev()
        .take(width - 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}
