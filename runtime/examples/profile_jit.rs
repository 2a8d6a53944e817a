//! Per-kernel times of the JIT on one example (the median of 9 runs after a warm-up),
//! by op and slowest first: a development aid until `cnnc bench --profile`.
//! `THREADS=2 cargo run --release -p cnnc-runtime --example profile_jit -- resnet50`
use cnnc_runtime::jit::Program;
use cnnc_runtime::weights::Weights;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "resnet50".into());
    let path = format!("{}/../examples/{name}.cnn", env!("CARGO_MANIFEST_DIR"));
    let mut compilation = cnnc_compiler::compile(&std::fs::read_to_string(path).expect("example"));
    let net = compilation.networks.remove(0);
    let weights = Weights::seeded(&net, 0);
    let threads = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let program = Program::with_threads(&net, &weights, threads).expect("compiles");
    let mut shape = vec![1];
    shape.extend(
        net.facts[net.graph.inputs[0].0]
            .shape
            .0
            .iter()
            .map(|&d| d as usize),
    );
    let input = cnnc_runtime::Tensor::zeros(shape);
    let _ = program.run(vec![input.clone()]).expect("runs");
    let mut runs: Vec<(f64, Vec<std::time::Duration>)> = (0..9)
        .map(|_| {
            let (_, times) = program.run_profiled(vec![input.clone()]).expect("runs");
            (times.iter().map(|t| t.as_secs_f64()).sum(), times)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let times = runs.swap_remove(4).1; // the median run
    let total: f64 = times.iter().map(|t| t.as_secs_f64()).sum();
    let mut rows: Vec<_> = program.fused().kernels.iter().zip(&times).collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    println!(
        "total {:.1} ms (median of 9 runs, {threads} threads)",
        total * 1e3
    );
    let mut by_op: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (kernel, time) in program.fused().kernels.iter().zip(&times) {
        let op = kernel.op.rule().describe();
        let key = format!(
            "{} {}",
            op.split(' ').next().unwrap_or(""),
            if kernel.op.rule().describe().contains("1x1") {
                "1x1"
            } else {
                ""
            }
        );
        let entry = by_op.entry(key).or_default();
        entry.0 += time.as_secs_f64();
        entry.1 += 1;
    }
    for (op, (t, n)) in &by_op {
        println!("  {op:<16} {n:4} kernels {:8.2} ms", t * 1e3);
    }
    for (kernel, time) in rows.iter().take(15) {
        println!(
            "{:8.2} ms  {:>5.1}%  {}  {}",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / total * 100.0,
            kernel.name,
            kernel.op.rule().describe()
        );
    }
}
