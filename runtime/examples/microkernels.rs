//! Measures the microkernels on this machine: each tile's throughput with its panels in
//! L1, then whole products shaped like ResNet-50's convolutions, against ndarray's
//! `dot` (matrixmultiply, which the reference interpreter uses). One thread; medians
//! of 7 runs. `cargo run --release -p cnnc-runtime --example microkernels`

use cnnc_runtime::jit::gemm::{PackedA, gemm};
use cnnc_runtime::jit::microkernel::Microkernel;
use ndarray::Array2;
use std::time::Instant;

fn median_seconds(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[3]
}

fn main() {
    println!("tile throughput, panels in L1 (K = 256):");
    for kernel in Microkernel::available() {
        println!(
            "  {:<10} {:>2}x{:<2}  {:7.1} GFLOP/s",
            kernel.name,
            kernel.mr,
            kernel.nr,
            kernel.measure_peak(std::time::Duration::from_millis(300))
        );
    }
    println!(
        "\nC = A·B shaped like ResNet-50 convolutions (M = out channels, K = in x kh x kw, N = H x W):"
    );
    println!(
        "  {:<28} {:>12} {:>12} {:>7}",
        "shape", "ndarray dot", "best tile", "ratio"
    );
    let kernel = Microkernel::best();
    for (what, m, k, n) in [
        ("conv2_x 3x3, 64->64, 56x56", 64, 576, 3136),
        ("conv2_x 1x1, 64->256, 56x56", 256, 64, 3136),
        ("conv3_x 3x3, 128->128, 28x28", 128, 1152, 784),
        ("conv4_x 3x3, 256->256, 14x14", 256, 2304, 196),
        ("conv5_x 1x1, 2048->512, 7x7", 512, 2048, 49),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let (a2, b2) = (
            Array2::from_shape_vec((m, k), a.clone()).expect("A"),
            Array2::from_shape_vec((k, n), b.clone()).expect("B"),
        );
        let flops = (2 * m * k * n) as f64;
        let ndarray_seconds = median_seconds(|| {
            std::hint::black_box(a2.dot(&b2));
        });
        let packed = PackedA::new(&kernel, &a, m, k);
        let mut c = vec![0.0; m * n];
        let tile_seconds = median_seconds(|| gemm(&kernel, &packed, &b, n, &mut c));
        println!(
            "  {:<28} {:>7.1} GF/s {:>7.1} GF/s {:>6.2}x",
            what,
            flops / ndarray_seconds / 1e9,
            flops / tile_seconds / 1e9,
            ndarray_seconds / tile_seconds
        );
    }
}
