#!/usr/bin/env python3
"""Fits the rational approximation of tanh that the JIT's epilogues use (the runtime's
row helper and the codegen's inline f32x4 code, `compiler/src/codegen/cpu/exp.rs`):

    tanh x ≈ x·P(x²) / Q(x²)   on |x| <= 9 (x clamped there: tanh 9 rounds to 1),

P of degree 6 and Q of degree 3 in x², P(0) = Q(0) = 1: nine multiply-adds and one
division a value, where the exponential form took about twenty operations.

The fit minimizes the largest relative error: linearized least squares, x·P − tanh(x)·Q
weighted by 1/(tanh(x)·Q_previous) (Loeb's iteration), reweighted by the error each
round (Lawson's) towards the minimax solution. It prints the coefficients, highest
power first as the Horner loops take them; the largest error of the f32 evaluation,
with fused multiply-adds (the runtime's helper) and without (the generated f32x4
code), in units of the last place, over every float in [0, 9] that the sweep visits;
and the least x from 9 where each evaluation reaches 1, which the kernels clamp |x|
to (their `TANH_SATURATES`).

    pip install numpy
    python3 tools/fit_tanh.py
"""
import numpy as np

LIMIT = 9.0
NUMERATOR, DENOMINATOR = 7, 4  # coefficients of P and Q (both constants fixed at 1)


def fit():
    x = np.concatenate([np.linspace(1e-4, 1, 4000), np.linspace(1, LIMIT, 8000)])
    t = np.tanh(x)
    s = x * x
    previous_q = np.ones_like(x)
    lawson = np.ones_like(x)
    for round_ in range(60):
        weight = lawson / (t * previous_q)
        columns = [x * s**i for i in range(1, NUMERATOR)]
        columns += [-t * s**j for j in range(1, DENOMINATOR)]
        a = np.stack(columns, 1) * weight[:, None]
        scale = np.linalg.norm(a, axis=0)
        solution, *_ = np.linalg.lstsq(a / scale, (t - x) * weight, rcond=None)
        solution /= scale
        p = np.concatenate([[1.0], solution[: NUMERATOR - 1]])
        q = np.concatenate([[1.0], solution[NUMERATOR - 1 :]])
        previous_q = sum(q[j] * s**j for j in range(DENOMINATOR))
        error = np.abs((x * sum(p[i] * s**i for i in range(NUMERATOR)) / previous_q - t) / t)
        if round_ >= 5:
            lawson *= error / error.max() + 1e-3
            lawson /= lawson.max()
    return p.astype(np.float32), q.astype(np.float32), error.max()


def fused(a, b, c):
    """a·b + c rounded once to f32 (the product of two f32 is exact in f64)."""
    return (a.astype(np.float64) * b.astype(np.float64) + np.float64(c)).astype(np.float32)


def unfused(a, b, c):
    """a·b rounded to f32, then + c rounded again."""
    return a * b + np.float32(c)


def evaluate(x, p, q, multiply_add=fused):
    """As the kernels do, with x clamped to the fitted range."""
    x = np.minimum(np.abs(x).astype(np.float32), np.float32(LIMIT)) * np.sign(x)
    return evaluate_unclamped(x.astype(np.float32), p, q, multiply_add)


def evaluate_unclamped(x, p, q, multiply_add=fused):
    """Horner in f32, then x·P / Q."""
    s = x * x
    numerator = np.full_like(x, p[-1])
    for c in p[-2::-1]:
        numerator = multiply_add(numerator, s, c)
    denominator = np.full_like(x, q[-1])
    for c in q[-2::-1]:
        denominator = multiply_add(denominator, s, c)
    return numerator * x / denominator


def main():
    p, q, error = fit()
    print(f"relative error of the fit in f64: {error:.2e}")
    print("numerator (x^12 first):", ", ".join(f"{c:.9e}" for c in p[::-1]))
    print("denominator (x^6 first):", ", ".join(f"{c:.9e}" for c in q[::-1]))
    bits = np.arange(0, np.float32(LIMIT).view(np.int32) + 1, 3, dtype=np.int32)
    x = bits.view(np.float32)
    exact = np.tanh(x.astype(np.float64)).astype(np.float32)
    beyond = np.arange(np.float32(LIMIT).view(np.int32), np.float32(LIMIT + 1).view(np.int32))
    beyond = beyond.astype(np.int32).view(np.float32)
    for name, multiply_add in [("with FMA", fused), ("without FMA", unfused)]:
        y = evaluate(x, p, q, multiply_add)
        ulps = np.abs(y.view(np.int32).astype(np.int64) - exact.view(np.int32).astype(np.int64))
        saturating = beyond[evaluate_unclamped(beyond, p, q, multiply_add) >= 1.0]
        print(f"f32 evaluation {name}: at most {ulps.max()} ulp from the correctly rounded "
              f"tanh (at x = {x[np.argmax(ulps)]}); largest value {y.max()!r} (the kernels "
              f"clamp the result to [-1, 1]); reaches 1 from x = {saturating[0]!r}")


if __name__ == "__main__":
    main()
