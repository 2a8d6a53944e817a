//! The summary as text: an aligned table for terminals, a Markdown table for documents.

use super::{Summary, bytes, si, thousands};
use std::fmt::Write;

const HEADERS: [&str; 5] = ["Layer", "Op", "Output", "Params", "MACs"];

fn cells(summary: &Summary) -> Vec<[String; 5]> {
    summary
        .layers
        .iter()
        .map(|row| {
            [
                row.name.clone(),
                row.op.clone(),
                row.output.to_string(),
                thousands(row.params),
                thousands(row.macs),
            ]
        })
        .collect()
}

fn title(summary: &Summary) -> String {
    let inputs: Vec<String> = summary
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.name, i.shape))
        .collect();
    format!("network {} ({})", summary.network, inputs.join(", "))
}

fn totals_lines(summary: &Summary) -> Vec<(String, String)> {
    let t = &summary.totals;
    let mut lines = Vec::new();
    let pruned = if t.with_side_outputs.is_some() {
        " (inference, side outputs pruned)"
    } else {
        ""
    };
    lines.push((
        format!("Parameters{pruned}"),
        format!(
            "{} ({})",
            thousands(t.inference.params),
            si(t.inference.params)
        ),
    ));
    lines.push((
        format!("MACs{pruned}"),
        format!(
            "{} ({}) per sample; 1 multiply-add = 1 MAC",
            thousands(t.inference.macs),
            si(t.inference.macs)
        ),
    ));
    if let Some(all) = t.with_side_outputs {
        let names = t.side_outputs.join(", ");
        lines.push((
            format!("Parameters with side outputs ({names})"),
            format!("{} ({})", thousands(all.params), si(all.params)),
        ));
        lines.push((
            format!("MACs with side outputs ({names})"),
            format!("{} ({})", thousands(all.macs), si(all.macs)),
        ));
    }
    let a = &t.activations;
    lines.push((
        "Activations (f32, per sample)".to_string(),
        format!(
            "{} in all; largest {} ({})",
            bytes(a.total_bytes),
            bytes(a.largest_bytes),
            a.largest_tensor
        ),
    ));
    lines.push((
        "Peak activation memory".to_string(),
        format!(
            "{} per sample (memory plan, after fusion)",
            bytes(a.peak_bytes)
        ),
    ));
    lines
}

pub fn table(summary: &Summary) -> String {
    let rows = cells(summary);
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        )
        .trim_end()
        .to_string()
    };
    let rule = "─".repeat(widths.iter().sum::<usize>() + 8);
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", title(summary));
    let _ = writeln!(out, "{}", line(&HEADERS.map(String::from)));
    let _ = writeln!(out, "{rule}");
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let _ = writeln!(out, "{rule}");
    let totals = totals_lines(summary);
    let key_width = totals.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in totals {
        let _ = writeln!(
            out,
            "{:<key_width$}  {value}",
            format!("{key}:"),
            key_width = key_width + 1
        );
    }
    out
}

pub fn markdown(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}\n", title(summary));
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|---|---|---|---:|---:|");
    for row in cells(summary) {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            row[0], row[1], row[2], row[3], row[4]
        );
    }
    let _ = writeln!(out);
    for (key, value) in totals_lines(summary) {
        let _ = writeln!(out, "- **{key}**: {value}");
    }
    out
}
