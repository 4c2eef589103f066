"""CPU benchmark of the Numba backend (cpu_kernels): workload W-CPU.

    python -m benchmarks.cpu [--json PATH] [--repeats N] [--length L] [--golden-heads K] [--no-slice]

W-CPU: 8 KV heads, 4 query heads per KV head (H_q = 32), head dim 128,
L = 32768 tokens, G = 128, r4t4, batch 1, float32 keys and queries (keys
with outlier channels, as real keys have). One run:

1. validates first: numba encode against golden encode on a slice (codes may
   differ only inside the boundary band of polarref.tolerances, and the
   count is printed); numba scores and the dense float32 matmul against the
   float64 references on the slice, within the float32 bound
   (polarref.verify.golden_score_tolerance, <= 1 passes);
2. times, after a warm-up call that compiles (or loads the Numba cache):
   numba scores (every kernel version that applies); numba encode; the dense
   baseline, NumPy float32 `queries_kv @ keys_kv.T` per KV head (its 4
   queries stacked); golden scores and golden encode on --golden-heads KV
   heads (default all 8: no scaling) and, unless --no-slice, also on one KV
   head scaled linearly x8. The two golden figures differ: golden's float64
   intermediates of one head fit the caches, those of eight do not, so the
   scaled slice flatters golden; the ratios are given against both;
3. prints medians over --repeats, bytes read and GB/s, the ratios, which BLAS
   and how many threads ran, and the machine's load average (other processes
   share this 2-core machine and slow everything they overlap).

Bytes read: polar scoring reads the codes as PolarCode stores them, rho and
theta one byte each per pair and token (the paper's packed index would be one
byte), plus four float64 parameters per group and pair; dense reads the
float32 keys. Both write their scores (polar float64, as golden; dense
float32): not counted.
"""
from __future__ import annotations

import argparse
import sys

import numba
import numpy as np

from polarref import golden, verify
from polarref import tolerances as tol
from polarref.code import PolarCode
from polarref.strategies import Config, make_keys

import cpu_kernels

from . import common

SEED = 20250601
H_KV, M, D, G, R_BITS, T_BITS = 8, 4, 128, 128, 4, 4
LENGTH = 32768
TARGETS = dict(scores_vs_dense=1.5, scores_vs_golden=100.0, encode_vs_golden=30.0)


def workload(length: int, seed: int = SEED):
    """keys (H_kv, L, d) float32 with outlier channels; queries (H_kv * M, d) float32."""
    keys = make_keys(seed, (H_KV, length, D), "outlier_channels", 0, G).astype(np.float32)
    queries = np.random.default_rng(seed + 1).standard_normal((H_KV * M, D)).astype(np.float32)
    return keys, queries


def code_slice(code: PolarCode, heads: int) -> PolarCode:
    """The first `heads` KV heads of a code of keys (H_kv, L, d)."""
    arrays = [np.asarray(getattr(code, a))[:heads] for a in
              ("rho", "theta", "r_min", "r_step", "phi_min", "phi_step", "residual")]
    return PolarCode(*arrays, code.r_bits, code.t_bits, code.group_size, code.pairing)


def dense_scores_f32(queries, keys):
    """The baseline: per KV head h, queries[h*M:(h+1)*M] @ keys[h].T in float32 -> (H_q, L)."""
    out = np.empty((keys.shape[0] * M, keys.shape[1]), np.float32)
    for h in range(keys.shape[0]):
        np.matmul(queries[h * M:(h + 1) * M], keys[h].T, out=out[h * M:(h + 1) * M])
    return out


def validate(keys, queries, code, heads):
    """Check numba encode / scores and the dense baseline on `heads` KV heads against golden."""
    cfg = Config(R_BITS, T_BITS, G, "half")
    eps = tol.eps_of(cpu_kernels.WORKING_DTYPE)
    k, q = keys[:heads], queries[:heads * M]
    ref = golden.encode(k, **cfg.kwargs())
    mine = code_slice(code, heads)
    r, phi = verify.polar_values(k, cfg)
    # codes: equal except inside the boundary band (codes_agree raises otherwise)
    band = verify.codes_agree("rho", mine.rho, ref.rho, r, ref.r_min, ref.r_step, R_BITS, eps).band
    band += verify.codes_agree("theta", mine.theta, ref.theta, phi, ref.phi_min, ref.phi_step, T_BITS, eps).band
    n_codes = 2 * ref.rho.size
    # scores of the golden code: numba vs golden table scores, within the float32 bound
    want = golden.scores(q, ref)
    got = cpu_kernels.scores(q, ref)
    bound = verify.golden_score_tolerance(q, ref, eps)
    worst = verify.ratio(np.abs(got - want), bound)
    # dense float32 against float64 dense: the same kind of bound for a plain dot product
    dense_want = golden.dense_scores(q, k)
    dense_got = dense_scores_f32(q, k)
    abs_dot = (np.abs(q.astype(np.float64)).reshape(heads, M, D) @
               np.swapaxes(np.abs(k.astype(np.float64)), -1, -2)).reshape(heads * M, -1)
    dense_worst = verify.ratio(np.abs(dense_got - dense_want), tol.dot_bound(abs_dot, D, tol.EPS32))
    checks = dict(
        heads_checked=heads,
        codes_checked=n_codes, codes_differing_in_band=band, codes_differing_fraction=band / n_codes,
        scores_rel_max_error=common.relative_max_error(got, want), scores_worst_error_over_bound=worst,
        dense_rel_max_error=common.relative_max_error(dense_got, dense_want),
        dense_worst_error_over_bound=dense_worst)
    ok = worst <= 1.0 and dense_worst <= 1.0 and band / n_codes < 1e-4
    return ok, checks


def polar_bytes(code: PolarCode) -> int:
    """Bytes the scoring kernel reads: rho + theta (1 B each per pair-token) + 4 float64 params."""
    return code.rho.size + code.theta.size + 4 * 8 * code.r_min.size


def parse(argv):
    argv = list(argv)
    if argv[:1] == ["--"]:          # `polarref bench -- --repeats 5` passes the separator on
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="polarref bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median)")
    parser.add_argument("--golden-repeats", type=int, default=3, help="timed calls of the golden model")
    parser.add_argument("--length", type=int, default=LENGTH, help="tokens L (default 32768)")
    parser.add_argument("--golden-heads", type=int, default=H_KV,
                        help="KV heads golden is timed on, scaled linearly to 8 (default 8: the whole workload)")
    parser.add_argument("--no-slice", action="store_true",
                        help="skip the extra golden timing on one KV head scaled x8")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    show = not args.no_progress
    heads = max(1, min(args.golden_heads, H_KV))
    scale = H_KV / heads
    keys, queries = workload(args.length)
    blas = common.blas_info()
    machine = common.machine_info()
    print(f"W-CPU: H_kv={H_KV}, H_q={H_KV * M}, d={D}, L={args.length}, G={G}, r{R_BITS}t{T_BITS}, "
          f"float32 keys and queries, batch 1")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load average "
          f"{machine.get('load_average_1_5_15min')}")
    print(f"dense baseline BLAS: {common.blas_summary(blas)}")

    steps = ["compile + encode", "validate", "numba scores", "dense", "numba encode",
             "golden", "golden slice"]
    bar = common.progress(range(len(steps)), "benchmark", show)
    bar_iter = iter(bar)

    def step(name):
        next(bar_iter, None)
        if hasattr(bar, "set_description"):
            bar.set_description(name)

    step(steps[0])
    code = cpu_kernels.encode(keys, R_BITS, T_BITS, G)            # compiles (or loads the cache)
    layer = numba.threading_layer()                                # known once a parallel kernel ran
    print(f"numba {numba.__version__}: {numba.get_num_threads()} threads, threading layer {layer}; "
          f"AVX-512 kernel available: {cpu_kernels.HAS_AVX512}")
    step(steps[1])
    ok, checks = validate(keys, queries, code, heads)
    rows, versions = [], {}

    step(steps[2])
    n_polar = polar_bytes(code)
    best = cpu_kernels.scores_version(code)
    for version in sorted(cpu_kernels.SCORES_KERNELS):
        if cpu_kernels.scores_version(code, version) != version:
            continue
        t = common.median_time(lambda: cpu_kernels.scores(queries, code, version=version), args.repeats)
        versions[version] = t
        note = "default" if version == best else "older version"
        rows.append(common.Row(f"numba scores, kernel {version}", t, n_polar, note))
    numba_scores = versions[best]

    step(steps[3])
    dense = common.median_time(lambda: dense_scores_f32(queries, keys), args.repeats)
    rows.append(common.Row("dense f32 q @ K^T per KV head", dense, keys.nbytes, "NumPy matmul (BLAS)"))

    step(steps[4])
    enc = common.median_time(lambda: cpu_kernels.encode(keys, R_BITS, T_BITS, G), max(3, args.repeats // 4))
    rows.append(common.Row("numba encode", enc, keys.nbytes, "reads float32 keys"))

    def golden_rows(n_heads, label):
        factor = H_KV / n_heads
        note = "whole workload" if n_heads == H_KV else f"timed on {n_heads} KV head(s), x{factor:g}"
        sub_code, sub_q, sub_keys = code_slice(code, n_heads), queries[:n_heads * M], keys[:n_heads]
        t_scores = common.median_time(lambda: golden.scores(sub_q, sub_code), args.golden_repeats)
        t_encode = common.median_time(lambda: golden.encode(sub_keys, R_BITS, T_BITS, G), args.golden_repeats)
        return (common.Row(f"golden scores{label}", t_scores.scaled(factor, note), n_polar),
                common.Row(f"golden encode{label}", t_encode.scaled(factor, note), keys.nbytes))

    step(steps[5])
    full_scores, full_encode = golden_rows(heads, "")
    rows += [full_scores, full_encode]
    step(steps[6])
    sliced = None
    if not args.no_slice and heads != 1:
        sliced = golden_rows(1, ", 1-head slice")
        rows += list(sliced)
    if hasattr(bar, "close"):
        bar.close()

    print()
    print("validation (before timing): "
          f"codes differing {checks['codes_differing_in_band']} of {checks['codes_checked']} "
          f"(all inside the boundary band); scores rel. max error {checks['scores_rel_max_error']:.2e}, "
          f"worst error/bound {checks['scores_worst_error_over_bound']:.3f}; dense f32 rel. max error "
          f"{checks['dense_rel_max_error']:.2e}, worst error/bound {checks['dense_worst_error_over_bound']:.3f}"
          f" -> {'ok' if ok else 'FAILED'}")
    print()
    common.print_table(rows)
    ratios = dict(scores_vs_dense=dense.ms / numba_scores.ms,
                  scores_vs_golden=full_scores.timing.ms / numba_scores.ms,
                  encode_vs_golden=full_encode.timing.ms / enc.ms)
    slice_ratios = {}
    if sliced:
        slice_ratios = dict(scores_vs_golden=sliced[0].timing.ms / numba_scores.ms,
                            encode_vs_golden=sliced[1].timing.ms / enc.ms)
    print()
    how = "golden on the whole workload" if heads == H_KV else f"golden on {heads} KV head(s) x{scale:g}"
    for name, value in ratios.items():
        target = TARGETS[name]
        extra = f"   (against golden's 1-head slice x8: {slice_ratios[name]:.1f}x)" if name in slice_ratios else ""
        against = "" if name == "scores_vs_dense" else f" [{how}]"
        print(f"{name.replace('_', ' '):<20} {value:8.1f}x   target >= {target:g}x: "
              f"{'met' if value >= target else 'NOT met'}{against}{extra}")
    print(f"load average after: {common.machine_info().get('load_average_1_5_15min')}")
    if args.json:
        common.write_json(args.json, dict(
            workload=dict(h_kv=H_KV, h_q=H_KV * M, d=D, length=args.length, group_size=G,
                          r_bits=R_BITS, t_bits=T_BITS, dtype="float32", seed=SEED),
            machine=machine, numba=dict(version=numba.__version__, threads=numba.get_num_threads(),
                                        layer=layer,
                                        avx512_kernel=cpu_kernels.HAS_AVX512, default_kernel=best),
            blas=blas, validation=dict(ok=ok, **checks), rows=[r.as_dict() for r in rows],
            ratios=ratios, ratios_against_golden_slice_x8=slice_ratios, targets=TARGETS))
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
