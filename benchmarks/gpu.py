"""GPU benchmark of the numba.cuda backend: workload W-GPU on one GPU.

    python -m benchmarks.gpu [--json PATH] [--quick]

W-GPU: 32 query heads, 8 KV heads (M = 4 query heads per KV head), head
dim 128 (P = 64 pairs), G = 128, r4t4, L in {4096, 32768, 131072}, batch
in {8, 1}. One run prints, per case:

- cuda `scores` (quantized tokens, kernel only) for float32 tables (the
  default), float16 tables (option), the tensor-core path (table="mma":
  float16 keys decoded in registers, mma.sync) and a few launch configurations;
- torch float16 q @ k^T, one batched matmul over (batch, KV head) with the
  group's 4 query heads stacked: the dense baseline;
- index bytes (B * H_kv * L * P, one byte per pair) per second, and that as a
  share of the HBM copy bandwidth measured in this run (torch device-to-device
  copy, bytes read + written); and all the kernel's bytes (index, float32
  parameters, float32 scores written) the same way: its own memory roofline.
  At W-GPU they are 0.738 GB: about 0.17 ms at the H200's copy bandwidth
  (4.28 TB/s), which is also about a third of torch's time (0.51 ms), so 3x
  torch there means all of the copy bandwidth;
- encode (kernel only, packed index + float32 parameters, and with the split
  rho/theta the PolarCode interface keeps) against its roofline: read the
  float16/float32 keys, write index (+ rho, theta) and parameters.

Order of work: validate against the golden model on a slice first (one batch
and KV head, a few groups: golden on the whole 0.5 GB index is slow), then
time with CUDA events after warm-up; every figure is the median of several
samples, each sample the mean of back-to-back launches (launch overhead of
the Python dispatcher hidden behind the GPU queue). Scoring inputs are random
codes and parameters made on the host and copied once, not encoded keys.
Compilation and copies are never inside a timed region.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
from numba import cuda

import polarref
from polarref import tolerances as T
from polarref.code import PolarCode
from polarref.golden import split_pairs, to_polar
from polarref.verify import golden_score_tolerance

from cuda_kernels import launch as CL

SEED = 20250527
H_Q, H_KV, D, G, R_BITS, T_BITS = 32, 8, 128, 128, 4, 4
M = H_Q // H_KV
P = D // 2
CASES = [dict(batch=b, length=n) for b in (8, 1) for n in (4096, 32768, 131072)]
CHECK_GROUPS = 4           # golden check on this many groups of one batch and KV head
SAMPLES, REPEATS = 7, 10   # median of SAMPLES, each the mean over REPEATS launches


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
@cuda.jit
def _spin(microseconds):
    """Keep the GPU busy while the host queues the timed launches (one thread)."""
    for _ in range(microseconds):
        cuda.nanosleep(1000)


SPIN_US = 3000   # longer than the host needs to queue REPEATS launches (~60 us each)


def hold_gpu():
    """Queue a busy kernel so that launches queued next run back to back.

    Without it a short kernel is timed at the host's launch rate (numba's
    dispatcher needs tens of microseconds per launch), not at its own speed.
    """
    if not CL.SIM:
        _spin[1, 1](SPIN_US)


def event_times(run, new_event, synchronize, samples, repeats, warmup):
    """(median, min, max) ms of one run(): events around `repeats` back-to-back runs, `samples` times.

    new_event() makes a timing event with record(), synchronize() and
    elapsed_time(other): numba's cuda.event and torch.cuda.Event both do.
    """
    for _ in range(warmup):
        run()
    synchronize()
    times = []
    for _ in range(samples):
        start, stop = new_event(), new_event()
        hold_gpu()
        start.record()
        for _ in range(repeats):
            run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / repeats)
    return float(np.median(times)), float(np.min(times)), float(np.max(times))


def time_launches(launch, samples=None, repeats=None, warmup=3):
    """Median milliseconds of one launch: CUDA events around `repeats` launches."""
    samples, repeats = samples or SAMPLES, min(repeats or REPEATS, REPEATS)
    if CL.SIM:        # --smoke: the simulator's events time nothing (-1 ms); run once, report no time
        launch()
        return (float("nan"),) * 3
    return event_times(launch, cuda.event, cuda.synchronize, samples, repeats, warmup)


def torch_time(fn, samples=SAMPLES, repeats=REPEATS, warmup=3):
    import torch

    return event_times(fn, lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize,
                       samples, repeats, warmup)


def copy_bandwidth(nbytes=2 << 30):
    """HBM copy bandwidth in GB/s (bytes read + written), torch if present, else numba."""
    try:
        import torch

        src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
        dst = torch.empty_like(src)
        ms, _, _ = torch_time(lambda: dst.copy_(src), repeats=5)
        how = "torch device-to-device copy"
    except ImportError:
        src = cuda.to_device(np.ones(nbytes // 4, np.float32))
        dst = cuda.device_array_like(src)
        ms, _, _ = time_launches(lambda: dst.copy_to_device(src), repeats=5)
        how = "numba device-to-device copy"
    return 2 * nbytes / (ms * 1e-3) / 1e9, ms, how


# --------------------------------------------------------------------------
# Inputs and the golden check on a slice
# --------------------------------------------------------------------------
def random_code(rng, batch, length):
    """Flat device arrays of a random r4t4 code, plus the host copies of its params."""
    bhs, n = batch * H_KV, length // G
    index = rng.integers(0, 256, size=bhs * length * P, dtype=np.uint8)
    r_min = rng.uniform(0.0, 2.0, bhs * n * P).astype(np.float32)
    r_step = rng.uniform(0.0, 0.25, bhs * n * P).astype(np.float32)
    phi_min = rng.uniform(0.0, np.pi, bhs * n * P).astype(np.float32)
    phi_step = rng.uniform(0.0, np.pi / 2**T_BITS, bhs * n * P).astype(np.float32)
    queries = rng.standard_normal(bhs * M * D).astype(np.float32)
    host = dict(index=index, r_min=r_min, r_step=r_step, phi_min=phi_min, phi_step=phi_step, queries=queries)
    dev = {k: cuda.to_device(v) for k, v in host.items()}
    return host, dev


def slice_code(host, batch, length, bh=0, groups=CHECK_GROUPS):
    """Golden PolarCode (one KV head, `groups` groups) and its queries, from the random code."""
    n = length // G
    lq = groups * G
    idx = host["index"].reshape(batch * H_KV, length, P)[bh, :lq]
    params = [host[k].reshape(batch * H_KV, n, P)[bh, :groups].astype(np.float64)
              for k in ("r_min", "r_step", "phi_min", "phi_step")]
    code = PolarCode(idx >> T_BITS, idx & (2**T_BITS - 1), *params, np.zeros((0, D), np.float32),
                     R_BITS, T_BITS, G, "half")
    q = host["queries"].reshape(batch * H_KV, M, D)[bh]
    return code, q


def compare(name, got, want, tol):
    """Counts of elements over tolerance and non-finite mismatches; first few indices."""
    err = np.abs(got - want)
    over = ~(err <= tol)
    nonfinite = ~np.isfinite(got)
    first = [tuple(int(i) for i in ix) for ix in np.argwhere(over)[:3]]
    return dict(check=name, n=int(got.size), over_tolerance=int(over.sum()), nonfinite=int(nonfinite.sum()),
                first_bad=first, max_err_over_tol=float(np.max(err / np.maximum(tol, 1e-300))))


# --------------------------------------------------------------------------
# Scoring benchmark
# --------------------------------------------------------------------------
def set_query_heads(n):
    """Query heads of the workload (W-GPU: 32, so M = 4 a KV head)."""
    global H_Q, M
    H_Q, M = n, n // H_KV


def scores_variants():
    """(label, table, overrides): the default configuration and a few alternatives."""
    return [
        ("f32 default", "float32", {}),
        ("f16 default", "float16", {}),
        ("mma default", "mma", {}),
        ("mma v2.2", "mma", dict(lean=False)),
        ("mma r64", "mma", dict(max_registers=64)),    # since v2.4 caps a 128-register kernel: spills
        ("mma gpb1", "mma", dict(groups_per_block=1)),
        ("mma gpb4", "mma", dict(groups_per_block=4)),
        ("mma gpb8", "mma", dict(groups_per_block=8)),
        ("mma gpb16", "mma", dict(groups_per_block=16)),
        ("mma gpb32", "mma", dict(groups_per_block=32)),  # W-GPU's most, not balanced to the waves
        ("mma 4B loads", "mma", dict(wide_loads=False)),
        ("mma 4 warps", "mma", dict(slots=1, warps=4)),   # v2.3.1: 4 warps of 2 tiles of 16 tokens
        ("mma 8 warps", "mma", dict(slots=1, warps=8)),   # 8 warps of one tile: a group's k-steps 4 x shorter
        ("mma 1 slot", "mma", dict(slots=1)),           # v2.4: one token a row of A, 2 warps of 4 tiles
        ("mma s2 w1", "mma", dict(slots=2, warps=1)),   # v2.5 (2 tokens a row, 2 warps of 2 tiles) with 1 warp
        ("mma s2 w4", "mma", dict(slots=2, warps=4)),   # ... with 4 warps of 1 tile
        ("mma s2 8B", "mma", dict(slots=2, words_per_load=2)),   # ... with 8-byte index loads
        ("mma r112", "mma", dict(max_registers=112)),   # 9 blocks a SM (shared memory allows 9)
        ("mma r96", "mma", dict(max_registers=96)),     # 10 blocks a SM (v2.7 took 118 registers; v2.8 takes 96)
        ("mma r88", "mma", dict(max_registers=88)),     # 11 blocks a SM, no spill (ptxas 13.0)
        ("mma r80", "mma", dict(max_registers=80)),     # 12 blocks a SM, 60 bytes spilled (ptxas 13.0)
        ("mma shf lookup", "mma", dict(prmt_lookup=False)),   # v2.7: lookup address = shift + LOP3 a byte
        ("mma contiguous", "mma", dict(interleave=False)),   # v2.8: a lane's index bytes contiguous
        ("f32 nt128 tpt1", "float32", dict(threads=128, tokens_per_thread=1)),
        ("f32 nt32 tpt4", "float32", dict(threads=32, tokens_per_thread=4)),
        ("f32 regs64", "float32", dict(max_registers=64)),
        ("f32 regs80", "float32", dict(max_registers=80)),
        ("f16 regs64", "float16", dict(max_registers=64)),
    ]


def scores_launch(table, dev, out, flags, batch, length, **over):
    """(config, launch) of one scoring variant on the random code `dev`: launch() runs the kernel only."""
    bhs, n = batch * H_KV, length // G
    ptr = CL._pointer(dev["index"])
    args = (dev["index"], dev["r_min"], dev["r_step"], dev["phi_min"], dev["phi_step"], dev["queries"],
            G, "half", M, out, length, bhs, n)
    if table == "mma":
        cfg = CL.mma_config(P, R_BITS, T_BITS, G, n, bhs, ptr, M, **over)
        return cfg, lambda: CL.launch_mma_scores(*args, flags, cfg)
    cfg = CL.scores_config(P, R_BITS, T_BITS, G, M, table, ptr, **over)
    return cfg, lambda: CL.launch_scores(*args, cfg)


def bench_scores(case, rng, copy_gbs, variants, torch_ok):
    batch, length = case["batch"], case["length"]
    bhs, n = batch * H_KV, length // G
    host, dev = random_code(rng, batch, length)
    out = cuda.device_array(bhs * M * length, dtype=np.float32)
    index_bytes = bhs * length * P
    param_bytes = bhs * n * P * 16
    out_bytes = bhs * M * length * 4
    rows = []
    code, q = slice_code(host, batch, length)
    want = polarref.scores(q, code)                                       # (M, Lq) float64
    flags = cuda.to_device(np.zeros(1, np.int32))
    for label, table, over in variants:
        cfg, launch = scores_launch(table, dev, out, flags, batch, length, **over)
        poison = np.full(out.size, np.nan, np.float32)
        out.copy_to_device(poison)
        launch()
        cuda.synchronize()
        got_all = out.copy_to_host().reshape(bhs, M, length)
        unwritten = int(np.isnan(got_all).sum())
        got = got_all[0, :, :CHECK_GROUPS * G].astype(np.float64)
        table_eps = T.EPS16 if table == "float16" else None     # float16 entries, float32 sums
        key_dtype = np.float16 if table == "mma" else None     # float16 keys and queries, float32 sums
        chk = compare(label, got, want, golden_score_tolerance(q, code, T.EPS32, table_eps, key_dtype))
        chk["unwritten"] = unwritten
        chk["overflow_flag"] = int(flags.copy_to_host()[0])
        ok = chk["over_tolerance"] == 0 and chk["nonfinite"] == 0 and unwritten == 0 and not chk["overflow_flag"]
        ms, lo, hi = time_launches(launch) if ok else (float("nan"),) * 3
        index_gbs = index_bytes / (ms * 1e-3) / 1e9
        total_gbs = (index_bytes + param_bytes + out_bytes) / (ms * 1e-3) / 1e9
        rows.append(dict(case=case, variant=label, table=table, config=cfg, valid=ok, check=chk,
                         ms=ms, ms_min=lo, ms_max=hi, index_gbs=index_gbs, total_gbs=total_gbs,
                         index_share_of_copy=index_gbs / copy_gbs, total_share_of_copy=total_gbs / copy_gbs))
    dense = None
    if torch_ok:
        import torch

        gen = torch.Generator(device="cuda").manual_seed(SEED)
        keys = torch.randn(batch, H_KV, length, D, device="cuda", dtype=torch.float16, generator=gen)
        qt = torch.randn(batch, H_KV, M, D, device="cuda", dtype=torch.float16, generator=gen)
        kt = keys.transpose(-1, -2)
        res = torch.matmul(qt, kt)
        ref = (qt[0, 0].double() @ keys[0, 0, :4096].double().T)
        dense_err = float(((res[0, 0, :, :4096].double() - ref).abs().max() / ref.abs().max()).item())
        ms, lo, hi = torch_time(lambda: torch.matmul(qt, kt))
        kbytes = batch * H_KV * length * D * 2
        dense = dict(case=case, variant="torch fp16 q@k^T", ms=ms, ms_min=lo, ms_max=hi,
                     key_gbs=kbytes / (ms * 1e-3) / 1e9, rel_err_vs_f64=dense_err)
        del keys, qt, kt, res
        torch.cuda.empty_cache()
    return rows, dense


# --------------------------------------------------------------------------
# Encode benchmark
# --------------------------------------------------------------------------
ENCODE_VARIANTS = [  # (label, launch configuration; None = the launcher's default)
    ("default", None),
    ("v1 tile", dict(kind="tile", pairs_per_block=32, slots=8, tokens_per_thread=16)),
    ("v2 8 warps", dict(kind="rows", warps=8, tokens_per_warp=16, fast_root=False, exact=True)),
    ("v2 32 warps", dict(kind="rows", warps=32, tokens_per_warp=4, fast_root=False, exact=True)),
    ("v2 fast root", dict(kind="rows", warps=16, tokens_per_warp=8, fast_root=True, exact=True)),  # wide keys only
    ("v2 not exact", dict(kind="rows", warps=16, tokens_per_warp=8, fast_root=False, exact=False)),
]


def bench_encode(rng, batch, length, dtype, copy_gbs, split, config=None, label="default"):
    bhs, n = batch * H_KV, length // G
    keys_h = (rng.standard_normal((bhs, length, D)) * 2.0).astype(dtype)
    keys = cuda.to_device(keys_h)
    index = cuda.device_array(bhs * length * P, np.uint8)
    rho = cuda.device_array(bhs * length * P, np.uint8) if split else None
    theta = cuda.device_array(bhs * length * P, np.uint8) if split else None
    params = [cuda.device_array(bhs * n * P, np.float32) for _ in range(4)]
    flags = cuda.to_device(np.zeros(1, np.int32))

    def launch():
        CL.launch_encode(keys, R_BITS, T_BITS, G, "half", index, rho, theta, *params, flags, config=config)

    launch()
    cuda.synchronize()
    # golden check on one KV head, a few groups
    lq = CHECK_GROUPS * G
    ref = polarref.encode(keys_h[0, :lq], R_BITS, T_BITS, G, "half")
    idx = index.copy_to_host().reshape(bhs, length, P)[0, :lq]
    x, y = split_pairs(keys_h[0, :lq].astype(np.float64), "half")
    r, phi = to_polar(x, y)
    bad = 0
    for got, want, vals, lo, st, bits in ((idx >> T_BITS, ref.rho, r, ref.r_min, ref.r_step, R_BITS),
                                          (idx & 15, ref.theta, phi, ref.phi_min, ref.phi_step, T_BITS)):
        near = T.near_boundary(vals, lo, st, bits, T.EPS32)
        bad += int(((got != want) & ~near).sum())
    pmax = 0.0
    for p, want in zip(params, (ref.r_min, ref.r_step, ref.phi_min, ref.phi_step)):
        got = p.copy_to_host().reshape(bhs, n, P)[0, :CHECK_GROUPS].astype(np.float64)
        scale = np.abs(want) + 1e-30
        pmax = max(pmax, float(np.max(np.abs(got - want) / scale)))
    ok = bad == 0 and pmax < 64 * T.EPS32
    ms, lo, hi = time_launches(launch, repeats=5) if ok else (float("nan"),) * 3
    key_bytes = keys_h.nbytes
    write_bytes = bhs * length * P * (3 if split else 1) + bhs * n * P * 16
    roof_ms = (key_bytes + write_bytes) / (copy_gbs * 1e9) * 1e3
    return dict(batch=batch, length=length, dtype=np.dtype(dtype).name, split=split, variant=label, valid=ok,
                codes_out_of_band=bad, param_max_rel_err=pmax, ms=ms, ms_min=lo, ms_max=hi,
                bytes=key_bytes + write_bytes, gbs=(key_bytes + write_bytes) / (ms * 1e-3) / 1e9,
                roofline_ms=roof_ms, share_of_roofline=roof_ms / ms)


def profile(what, batch=8, length=131072, variant=""):
    """Two launches of one kernel (compile + warm, then the one a profiler reads); variant: a scoring
    variant's label (scores_variants) whose overrides to take."""
    rng = np.random.default_rng(SEED)
    bhs, n = batch * H_KV, length // G
    if what.startswith("scores"):
        _, dev = random_code(rng, batch, length)
        out = cuda.device_array(bhs * M * length, dtype=np.float32)
        flags = cuda.to_device(np.zeros(1, np.int32))
        table = {"scores32": "float32", "scores16": "float16", "scoresmma": "mma"}[what]
        over = {label: o for label, _, o in scores_variants()}[variant] if variant else {}   # checked in main
        _, launch = scores_launch(table, dev, out, flags, batch, length, **over)
        for _ in range(2):
            launch()
    else:
        keys = cuda.to_device((rng.standard_normal((bhs, length, D)) * 2.0).astype(np.float16))
        index = cuda.device_array(bhs * length * P, np.uint8)
        params = [cuda.device_array(bhs * n * P, np.float32) for _ in range(4)]
        flags = cuda.to_device(np.zeros(1, np.int32))
        for _ in range(2):
            CL.launch_encode(keys, R_BITS, T_BITS, G, "half", index, None, None, *params, flags)
    cuda.synchronize()
    return 0


def _write_sass(kern, name, folder, cfg):
    """One compiled kernel's SASS to folder/name.sass; print its opcode counts and registers."""
    import os

    from cuda_kernels.lowering import sass_opcodes

    os.makedirs(folder, exist_ok=True)
    for sass in kern.inspect_sass().values():
        with open(os.path.join(folder, f"{name}.sass"), "w") as f:
            f.write(sass)
        ops = sass_opcodes(sass)
        print(f"{name}, config {cfg}: {sum(ops.values())} SASS instructions "
              f"(local memory: LDL {ops['LDL']}, STL {ops['STL']})")
        print("  " + ", ".join(f"{k} {v}" for k, v in ops.most_common(40)))
        try:
            print("  registers:", kern.get_regs_per_thread())
        except Exception as error:  # pragma: no cover - informational
            print("  registers: n/a", error)


def dump_sass(folder, batch=1, length=4096):
    """SASS of the mma scoring kernel and of the encode kernels as compiled for W-GPU, with opcode counts."""
    rng = np.random.default_rng(SEED)
    bhs = batch * H_KV
    _, dev = random_code(rng, batch, length)
    out = cuda.device_array(bhs * M * length, dtype=np.float32)
    flags = cuda.to_device(np.zeros(1, np.int32))
    w_gpu = CL.mma_config(P, R_BITS, T_BITS, G, 131072 // G, 8 * H_KV, 0, M)     # W-GPU's groups a block
    cfg, launch = scores_launch("mma", dev, out, flags, batch, length, groups_per_block=w_gpu["groups_per_block"])
    launch()
    cuda.synchronize()
    _write_sass(CL.mma_kernel_for(cfg), "mma_scores", folder, cfg)

    keys = cuda.to_device((rng.standard_normal((bhs, length, D)) * 2.0).astype(np.float16))
    index = cuda.device_array(bhs * length * P, np.uint8)
    params = [cuda.device_array(bhs * (length // G) * P, np.float32) for _ in range(4)]
    for label, cfg in ENCODE_VARIANTS:
        cfg = cfg or CL.encode_config(P, G, rows=CL.rows_eligible(keys))
        CL.launch_encode(keys, R_BITS, T_BITS, G, "half", index, None, None, *params, flags, config=cfg)
        cuda.synchronize()
        _write_sass(CL.encode_kernel_for(cfg, R_BITS, T_BITS, "half", False, P), "encode_" + label.replace(" ", "_"), folder, cfg)
    return 0


# --------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(prog="polarref bench --gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--quick", action="store_true", help="only batch 8, L = 131072, default variants")
    ap.add_argument("--defaults", action="store_true",
                    help="every case, but only the default variants (float32, float16 tables, mma)")
    ap.add_argument("--sass", metavar="DIR", help="write the SASS of the mma scoring and the encode kernels to "
                    "DIR and print their instruction counts by opcode, then exit")
    ap.add_argument("--profile", choices=("scores32", "scores16", "scoresmma", "encode16"),
                    help="run one kernel twice on B=8, L=131072 and exit (for ncu --launch-skip 1)")
    ap.add_argument("--variant", metavar="LABEL", default="", help="with --profile: this scoring variant's overrides")
    ap.add_argument("--only", choices=("scores", "encode"), help="run only the scoring or only the encode part")
    ap.add_argument("--also", metavar="LABELS", default="",
                    help="comma-separated scoring variants to run besides the defaults (with --quick/--defaults)")
    ap.add_argument("--encode-also", metavar="LABELS", default="",
                    help="comma-separated encode variants to run on every encode case besides the default")
    ap.add_argument("--q-heads", type=int, default=H_Q, metavar="N",
                    help=f"query heads (default {H_Q}; a multiple of the {H_KV} KV heads: {8 * H_KV} gives 8 a "
                         f"KV head, the tensor-core kernel's one-slot layout)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, no torch: checks that this script runs (simulator allowed)")
    args = ap.parse_args(argv)
    if args.q_heads < H_KV or args.q_heads % H_KV:
        ap.error(f"--q-heads must be a positive multiple of the {H_KV} KV heads, got {args.q_heads}")
    set_query_heads(args.q_heads)
    if args.variant and not args.profile:
        ap.error("--variant only applies with --profile")
    known = [v[0] for v in scores_variants()]
    if args.variant and args.variant not in known:
        ap.error(f"--variant: unknown variant {args.variant!r}; known: {known}")
    if CL.SIM and not args.smoke:
        sys.exit("benchmarks.gpu needs a real GPU (NUMBA_ENABLE_CUDASIM is set); --smoke runs tiny sizes")
    if args.profile:
        return profile(args.profile, variant=args.variant)
    if args.sass:
        return dump_sass(args.sass)
    torch_ok = False
    if not args.smoke:
        try:
            import torch

            torch_ok = torch.cuda.is_available()
        except ImportError:
            pass
    info = dict(python=platform.python_version(), numpy=np.__version__,
                numba=__import__("numba").__version__, torch=(torch.__version__ if torch_ok else None),
                workload=dict(q_heads=H_Q, kv_heads=H_KV, head_dim=D, group_size=G, r_bits=R_BITS, t_bits=T_BITS))
    if not CL.SIM:
        dev = cuda.get_current_device()
        info.update(device=dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
                    cc=list(dev.compute_capability), sms=dev.MULTIPROCESSOR_COUNT)
    print("device:", info, flush=True)
    rng = np.random.default_rng(SEED)
    if args.smoke:
        copy_gbs, copy_ms, how = 1.0, float("nan"), "not measured (smoke)"
    else:
        copy_gbs, copy_ms, how = copy_bandwidth()
    print(f"HBM copy bandwidth: {copy_gbs:.0f} GB/s ({how}, 2 GiB, read + write, {copy_ms:.3f} ms)", flush=True)

    cases = [dict(batch=8, length=131072)] if args.quick else CASES
    also = {a.strip() for a in args.also.split(",") if a.strip()}
    unknown = also - set(known)
    if unknown:
        sys.exit(f"--also: unknown variants {sorted(unknown)}; known: {known}")
    variants = scores_variants()
    if args.quick or args.defaults:
        variants = variants[:3] + [v for v in variants[3:] if v[0] in also]
    if args.smoke:
        global SAMPLES, REPEATS
        SAMPLES, REPEATS = 1, 1
        cases, variants = [dict(batch=1, length=2 * G)], scores_variants()[:3]
    results = dict(info=info, copy_gbs=copy_gbs, scores=[], dense=[], encode=[])
    t0 = time.time()
    for case in ([] if args.only == "encode" else cases):
        rows, dense = bench_scores(case, rng, copy_gbs, variants, torch_ok)
        results["scores"] += rows
        if dense:
            results["dense"].append(dense)
        for r in rows:
            c = r["check"]
            print(f"B={case['batch']} L={case['length']:6d} {r['variant']:16s} "
                  f"{'ok ' if r['valid'] else 'BAD'} {r['ms']:.4f} ms  index {r['index_gbs']:6.0f} GB/s "
                  f"({100 * r['index_share_of_copy']:4.1f}% of copy)  all bytes {r['total_gbs']:6.0f} GB/s "
                  f"({100 * r['total_share_of_copy']:3.0f}%)  "
                  f"x{(dense['ms'] / r['ms']) if dense else float('nan'):.2f} vs torch  "
                  f"[check over-tol {c['over_tolerance']}, unwritten {c['unwritten']}, "
                  f"max err/tol {c['max_err_over_tol']:.3f}]", flush=True)
        if dense:
            print(f"B={case['batch']} L={case['length']:6d} torch fp16 q@k^T  {dense['ms']:.4f} ms  "
                  f"keys {dense['key_gbs']:6.0f} GB/s", flush=True)
    enc_cases = [(8, 32768, np.float16, False), (8, 32768, np.float16, True), (8, 32768, np.float32, False),
                 (8, 131072, np.float16, False)]
    if args.quick:
        enc_cases = enc_cases[:2]
    if args.smoke:
        enc_cases = [(1, 2 * G, np.float16, False), (1, 2 * G, np.float32, True)]
    if args.only == "scores":
        enc_cases = []
    enc_also = [a.strip() for a in args.encode_also.split(",") if a.strip()]
    enc_known = dict(ENCODE_VARIANTS[1:])
    if set(enc_also) - set(enc_known):
        sys.exit(f"--encode-also: unknown variants {sorted(set(enc_also) - set(enc_known))}; known: {sorted(enc_known)}")
    enc_runs = [(case, label, cfg) for case in enc_cases
                for label, cfg in [("default", None)] + [(a, enc_known[a]) for a in enc_also]]
    if not (args.defaults or args.smoke):         # launch configurations on the first case
        enc_runs[1:1] = [(enc_cases[0], label, cfg) for label, cfg in ENCODE_VARIANTS[1:]] if enc_cases else []
    for (batch, length, dtype, split), label, cfg in enc_runs:
        e = bench_encode(rng, batch, length, dtype, copy_gbs, split, cfg, label)
        results["encode"].append(e)
        print(f"encode {label:12s} B={batch} L={length} {e['dtype']} {'index+rho+theta' if split else 'index only'}: "
              f"{'ok ' if e['valid'] else 'BAD'} {e['ms']:.3f} ms, {e['gbs']:.0f} GB/s, roofline "
              f"{e['roofline_ms']:.3f} ms -> {100 * e['share_of_roofline']:.0f}% "
              f"[codes out of band {e['codes_out_of_band']}, param rel err {e['param_max_rel_err']:.1e}]",
              flush=True)
    results["seconds"] = time.time() - t0

    # summary table last (the run tool returns the tail of the output)
    print("\n=== summary (median ms; speed-up vs torch fp16 q@k^T; index GB/s as % of copy BW, and all bytes) ===")
    dense_by = {(d["case"]["batch"], d["case"]["length"]): d for d in results["dense"]}
    for r in results["scores"]:
        if r["variant"] not in ("f32 default", "f16 default", "mma default"):
            continue
        key = (r["case"]["batch"], r["case"]["length"])
        dn = dense_by.get(key)
        print(f"  B={key[0]} L={key[1]:6d} {r['variant']:12s} {r['ms']:.4f} ms "
              f"x{(dn['ms'] / r['ms']) if dn else float('nan'):.2f}  {100 * r['index_share_of_copy']:.0f}%"
              f" (all bytes {100 * r['total_share_of_copy']:.0f}%)"
              f"  (torch {dn['ms'] if dn else float('nan'):.4f} ms)")
    best = {}
    for r in results["scores"]:
        key = (r["case"]["batch"], r["case"]["length"])
        if r["valid"] and (key not in best or r["ms"] < best[key]["ms"]):
            best[key] = r
    for key, r in best.items():
        print(f"  best B={key[0]} L={key[1]:6d}: {r['variant']} {r['ms']:.4f} ms")
    for e in results["encode"]:
        print(f"  encode {e['variant']:12s} B={e['batch']} L={e['length']} {e['dtype']} split={e['split']}: "
              f"{e['ms']:.3f} ms "
              f"= {100 * e['share_of_roofline']:.0f}% of roofline")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
