//! What a run will need, computed before anything is allocated, and the limit it must
//! stay under.

use crate::error::{Result, RuntimeError};
use cnnc_compiler::check::CheckedGraph;
use cnnc_compiler::summary::bytes;

const F32: u64 = 4;

/// Peak bytes of weights plus live activations for `batch` samples, as the reference
/// interpreter frees each activation after its last use (`keep`: nodes held to the end).
pub fn estimate(net: &CheckedGraph, batch: u64, keep: &[bool]) -> (u64, Vec<(String, u64)>) {
    let nodes = &net.graph.nodes;
    let mut sizes = Vec::with_capacity(nodes.len());
    let mut weights = 0u64;
    for facts in &net.facts {
        let elements = facts.shape.0.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        sizes.push(elements.saturating_mul(batch).saturating_mul(F32));
        for w in &facts.weights {
            let n = w.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
            weights = weights.saturating_add(n.saturating_mul(F32));
        }
    }
    let last_use = last_uses(net);
    let (mut live, mut peak) = (0u64, 0u64);
    for (i, node) in nodes.iter().enumerate() {
        live = live.saturating_add(sizes[i]);
        peak = peak.max(live);
        let mut inputs = node.inputs.clone();
        inputs.sort();
        inputs.dedup();
        for input in inputs {
            if last_use[input.0] == i && !keep[input.0] {
                live = live.saturating_sub(sizes[input.0]);
            }
        }
    }
    let mut largest: Vec<(String, u64)> = nodes.iter().map(|n| n.name.clone()).zip(sizes).collect();
    largest.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    largest.truncate(3);
    (weights.saturating_add(peak), largest)
}

/// The index of the last node that reads each node (itself if none does).
pub fn last_uses(net: &CheckedGraph) -> Vec<usize> {
    let mut last: Vec<usize> = (0..net.graph.nodes.len()).collect();
    for (i, node) in net.graph.nodes.iter().enumerate() {
        for input in &node.inputs {
            last[input.0] = i;
        }
    }
    last
}

/// Needs this small are not checked against the machine's available memory: a machine
/// with less free would struggle with any process, and reading `/proc/meminfo` took
/// longer (20 us) than the rest of LeNet-5's start before its run.
const SURELY_AVAILABLE: u64 = 64 << 20;

/// Refuses a run whose estimate exceeds `limit` bytes, or by default the machine's
/// available memory (read only for an estimate above `SURELY_AVAILABLE`).
pub fn check(net: &CheckedGraph, batch: u64, keep: &[bool], limit: Option<u64>) -> Result<u64> {
    let (needed, largest) = estimate(net, batch, keep);
    let limit = match limit {
        Some(limit) => limit,
        None if needed > SURELY_AVAILABLE => available().unwrap_or(u64::MAX),
        None => return Ok(needed),
    };
    if needed > limit {
        let largest = largest
            .iter()
            .map(|(name, size)| format!("{name} ({})", bytes(*size)))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(RuntimeError::OutOfMemory {
            needed: bytes(needed),
            limit: bytes(limit),
            largest,
        });
    }
    Ok(needed)
}

/// Memory available to this process: Linux's `MemAvailable`, if it can be read.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `4GiB`, `512MiB`, `1.5G`, `1000000`: a size in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        _ => return None,
    };
    (number >= 0.0 && number.is_finite()).then_some((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn without_a_limit_a_run_beyond_the_machine_is_refused_and_a_small_one_passes() {
        if available().is_none() {
            return; // /proc/meminfo hidden (a sandbox): nothing to check against.
        }
        let net = crate::checked_network("network N(input: 3x64x64) { conv c(16, 3x3) }");
        let keep = vec![false; net.graph.nodes.len()];
        // 16 x 62 x 62 floats a sample: petabytes at this batch, more than any machine has.
        let huge = check(&net, 1 << 32, &keep, None);
        assert!(
            matches!(huge, Err(RuntimeError::OutOfMemory { .. })),
            "{huge:?}"
        );
        let small = check(&net, 1, &keep, None).expect("a small run passes");
        assert!(small < SURELY_AVAILABLE, "{small}");
        assert!(check(&net, 1, &keep, Some(small - 1)).is_err());
    }
}
