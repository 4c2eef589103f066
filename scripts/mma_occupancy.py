"""Registers, local memory and resident blocks a SM of the W-GPU tensor-core kernel variants.

Usage (on the GPU machine, as gpu_run.sh sets PYTHONPATH):
    python3 scripts/mma_occupancy.py [--q-heads N] [LABEL ...]
LABEL: benchmarks.gpu scoring variants with table "mma" (default: "mma default" and every other one);
--q-heads: the workload's query heads (default W-GPU's 32; 64 gives 8 a KV head, the 1-slot kernel).
"""
import sys

import numpy as np
from numba import cuda

from benchmarks import gpu as B
from cuda_kernels import launch as CL
from cuda_kernels import mma as MMA


def main(labels):
    variants = {name: over for name, table, over in B.scores_variants() if table == "mma"}
    unknown = [name for name in labels if name not in variants]
    if unknown:
        sys.exit(f"mma_occupancy: unknown mma variants {unknown}; known: {list(variants)}")
    u8, f32 = cuda.device_array(64, np.uint8), cuda.device_array(64, np.float32)
    flags = cuda.device_array(1, np.int32)
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    for name in labels or ["mma default", *[v for v in variants if v != "mma default"]]:
        cfg = CL.mma_config(B.P, B.R_BITS, B.T_BITS, B.G, 131072 // B.G, 8 * B.H_KV, 0, B.M, **variants[name])
        kern = CL.mma_kernel_for(cfg)
        args = [u8, f32, f32, f32, f32, f32, 1, 1, 1, 1, f32, 2, flags, MMA.radius_magic(B.T_BITS), 1]
        compiled = kern.compile(tuple(kern.typeof_pyval(a) for a in args))
        threads = 32 * MMA.mma_warps(B.G, cfg.get("warps", 0), cfg["slots"])
        blocks = compiled.max_cooperative_grid_blocks(threads)
        print(f"{name:18s} registers {compiled.regs_per_thread:3d}  local {compiled.local_mem_per_thread:4d} B"
              f"  threads {threads}  blocks a SM {blocks // sms}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--q-heads"]:
        B.set_query_heads(int(args[1]))
        args = args[2:]
    main(args)
