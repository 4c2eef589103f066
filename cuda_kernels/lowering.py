"""Lower every GPU kernel to LLVM IR and verify it, without a GPU.

    python -m cuda_kernels.lowering        (NUMBA_ENABLE_CUDASIM must be unset)
    python -m cuda_kernels.lowering --shard I/N     (only cases I, I + N, I + 2 N, ...)

CI has no GPU: there the kernels run in the CUDA simulator, which executes
the Python bodies and accepts code that the GPU compiler rejects. Two such
bugs reached the GPU before this check existed: a local array whose shape was
an expression (`cuda.local.array(2 * TC, ...)`, a typing error on the GPU
only) and a vector load typed from numba's storage of float16 arrays (i16, so
an `fpext` of an integer: invalid IR). This module runs numba's CUDA front end
(typing and lowering for compute capability 9.0) on each kernel factory's
kernel, with the configurations the launchers pick for W-GPU and for small
test shapes and every key dtype, and hands the IR to LLVM's verifier.

Not covered: NVVM's own checks, PTX generation and ptxas (they need the CUDA
toolkit), and anything about speed. `scripts/gpu_run.sh` runs the real thing.

    python -m cuda_kernels.lowering --sass DIR [PATTERN]

goes on to machine code where a CUDA toolkit is installed (no GPU needed): NVVM
(CUDA_HOME), NVRTC (numba-cuda asks it for the supported architectures; PyPI:
nvidia-cuda-nvrtc), `ptxas` and `cuobjdump` (or `nvdisasm`; PyPI: nvidia-cuda-cuobjdump)
on PATH. For each case whose
name matches the regular expression PATTERN it writes DIR/<case>.ptx and .sass
and prints registers, spills and the instruction count, so a kernel change can
be counted before it is timed on a GPU. The local ptxas may be newer than the
GPU machine's; counts are close, not identical.
"""
from __future__ import annotations

import sys

import numpy as np


def _cases():
    """(name, kernel, argument stand-ins): NumPy arrays type exactly like device arrays."""
    from . import kernels as K
    from . import launch as L

    u8, f32, i32 = (np.zeros(4, t) for t in (np.uint8, np.float32, np.int32))
    params = (f32, f32, f32, f32)
    key_dtypes = (np.float16, np.float32, np.float64)

    for dt in key_dtypes:
        keys = np.zeros(4, dt)
        for pairing in ("half", "interleaved"):
            for split in (True, False):
                for n_pairs, g, fast_root in ((64, 128, False), (4, 16, True)):   # W-GPU: the default
                    cfg = dict(L.encode_config(n_pairs, g, rows=True), fast_root=fast_root)
                    yield (f"encode v2 {np.dtype(dt).name} {pairing} split={split} P={n_pairs} G={g} "
                           f"fast_root={fast_root}", L.encode_kernel_for(cfg, 4, 4, pairing, split, n_pairs),
                           (keys, 1, 1, 1, u8, u8, u8, *params, i32))
        cfg = dict(L.encode_config(64, 128, rows=True), exact=False)     # groups the warps do not divide
        yield (f"encode v2 {np.dtype(dt).name} not exact", L.encode_kernel_for(cfg, 4, 4, "half", False),
               (keys, 1, 1, 1, u8, u8, u8, *params, i32))
        for split in (True, False):          # v1 reads both pairings through strides: one kernel each
            kern = L.encode_kernel_for(L.encode_config(3, 16, rows=False), 3, 5, "half", split)
            yield (f"encode v1 {np.dtype(dt).name} split={split} P=3", kern,
                   (keys, 1, 1, 1, 1, 1, u8, u8, u8, *params, i32))

    for table in ("float32", "float16"):
        for n_pairs, t_bits, heads, ptr in ((64, 4, 4, 0), (6, 3, 3, 0), (64, 4, 4, 4), (5, 2, 2, 1)):
            cfg = L.scores_config(n_pairs, 4, t_bits, 128, heads, table, ptr)
            yield (f"scores {table} {cfg}", K.scores_kernel(**cfg),
                   (u8, *params, f32, 1, 1, 1, 1, 1, f32, 1, np.uint32(0)))
    for n_pairs, t_bits, n_groups, bhs, ptr in ((64, 4, 1024, 64, 0), (16, 2, 2, 1, 4), (32, 5, 4, 2, 0)):
        # the launcher's defaults for 4 heads (v2.5: 2 token slots) and 8 heads (1 slot), v2.2, and
        # 4 heads with each lane's index bytes contiguous (v2.8, before interleave)
        for variant in (dict(n_heads=4), {}, dict(lean=False), dict(n_heads=4, interleave=False)):
            cfg = L.mma_config(n_pairs, 4, t_bits, 16 if n_pairs < 64 else 128, n_groups, bhs, ptr, **variant)
            yield (f"scores mma {cfg}", L.mma_kernel_for(cfg),
                   (u8, *params, f32, 1, 1, 1, 1, f32, 1, i32, np.uint32(0), 1))
    # 7 angle bits: beyond the prmt lookup (PRMT_LOOKUP_MAX_T_BITS), the shift-and-mask one
    cfg = L.mma_config(16, 1, 7, 16, 2, 1, 0, n_heads=4)
    yield (f"scores mma {cfg}", L.mma_kernel_for(cfg), (u8, *params, f32, 1, 1, 1, 1, f32, 1, i32, np.uint32(0), 1))

    for dt in key_dtypes:
        res3 = np.zeros((1, 1, 2), dt)
        yield f"residual scores {np.dtype(dt).name}", K.residual_scores_kernel(), (f32, res3, 1, 1, f32, 1)
        yield f"copy3d {np.dtype(dt).name}", K.copy3d_kernel(), (res3[:, :, ::2], np.zeros((1, 1, 1), dt))
        yield f"nonfinite {np.dtype(dt).name}", K.nonfinite_kernel(), (res3, np.zeros(2, np.int64))
    yield "decode", K.decode_kernel(4), (u8, *params, 1, 1, 1, 1, np.zeros((1, 1, 2), np.float32))
    yield "pack", K.pack_kernel(4), (u8, u8, u8)


def check_all(verbose: bool = False, shard: tuple[int, int] = (0, 1)) -> list[str]:
    """Lower and verify every case (shard (i, n): those whose position is i mod n, so that n processes
    share the work); return the names of those that fail (with the reason)."""
    import llvmlite.binding as llvm
    from numba import typeof, types
    from numba.cuda import compiler

    from . import kernels as K

    if K.SIM:
        raise RuntimeError("cuda_kernels.lowering needs the real CUDA target: unset NUMBA_ENABLE_CUDASIM")
    failures = []
    count = total = 0
    for position, (name, kern, args) in enumerate(_cases()):
        total += 1
        if position % shard[1] != shard[0]:
            continue
        count += 1
        sig = tuple(typeof(a) for a in args)
        try:
            cres = compiler.compile_cuda(kern.py_func, types.void, sig, cc=(9, 0))
            text = cres.library.get_llvm_str()         # the kernel's module, then any linked ones
            for part in text.split("; ModuleID")[1:] if "; ModuleID" in text else [text]:
                llvm.parse_assembly("; ModuleID" + part).verify()
        except Exception as error:  # any failure is the finding; keep going to report them all
            failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
            continue
        if verbose:
            print(f"ok   {name}", flush=True)
    print(f"{count - len(failures)} of {count} kernels lowered to LLVM IR and verified "
          f"(shard {shard[0]} of {shard[1]}; {total} cases in all)", flush=True)
    return failures


def sass_opcodes(sass: str):
    """Counter of the opcodes (without modifiers, predicates skipped) of cuobjdump/nvdisasm SASS text."""
    import collections
    import re

    return collections.Counter(m.split(".")[0] for m in re.findall(
        r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass))


def write_sass(folder: str, pattern: str = "") -> int:
    """PTX, ptxas report and SASS of every case matching pattern (see the module docstring)."""
    import os
    import re
    import shutil
    import subprocess

    from numba import cuda, typeof

    ptxas = shutil.which("ptxas")
    dump = shutil.which("cuobjdump") or shutil.which("nvdisasm")
    if not (ptxas and dump):
        raise RuntimeError(f"--sass needs ptxas and cuobjdump (or nvdisasm) on PATH; found {ptxas}, {dump}")
    os.makedirs(folder, exist_ok=True)
    done = 0
    for name, kern, args in _cases():
        if not re.search(pattern, name):
            continue
        stem = os.path.join(folder, re.sub(r"[^A-Za-z0-9=.-]+", "_", name).strip("_"))
        bounds = getattr(kern, "targetoptions", {}).get("launch_bounds")
        ptx, _ = cuda.compile_ptx(kern.py_func, tuple(typeof(a) for a in args), cc=(9, 0),
                                  launch_bounds=bounds)
        with open(stem + ".ptx", "w") as f:
            f.write(ptx)
        cap = getattr(kern, "targetoptions", {}).get("max_registers")      # as numba passes it to ptxas
        report = subprocess.run([ptxas, "-arch=sm_90", "-v", *([f"-maxrregcount={cap}"] if cap else []),
                                 "-o", stem + ".cubin", stem + ".ptx"],
                                capture_output=True, text=True, check=True).stderr
        flag = "-sass" if dump.endswith("cuobjdump") else "-c"
        sass = subprocess.run([dump, flag, stem + ".cubin"], capture_output=True, text=True, check=True).stdout
        with open(stem + ".sass", "w") as f:
            f.write(sass)
        ops = sass_opcodes(sass)
        regs = re.findall(r"Used (\d+) registers", report)
        spills = re.findall(r"(\d+) bytes spill stores", report)
        print(f"{name}: {regs[-1] if regs else '?'} registers, spill stores {spills[-1] if spills else '?'} B, "
              f"{sum(ops.values())} instructions", flush=True)
        print("  " + ", ".join(f"{k} {v}" for k, v in ops.most_common(24)), flush=True)
        done += 1
    return done


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--sass"] and len(argv) >= 2:
        n = write_sass(argv[1], argv[2] if len(argv) > 2 else "")
        print(f"{n} kernels compiled to SASS in {argv[1]}")
        return 0 if n else 1
    shard = (0, 1)
    if "--shard" in argv:
        spec = argv[argv.index("--shard") + 1] if argv.index("--shard") + 1 < len(argv) else ""
        i, _, n = spec.partition("/")
        if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
            raise SystemExit(f"--shard takes I/N with 0 <= I < N, got {spec!r}")
        shard = (int(i), int(n))
    failures = check_all(verbose="-v" in argv, shard=shard)
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
