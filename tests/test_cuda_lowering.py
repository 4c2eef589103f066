"""Every GPU kernel lowers to valid LLVM IR for the real CUDA target, checked without a GPU.

The simulator runs the kernels' Python bodies and accepts code the GPU compiler
rejects; cuda_kernels.lowering types and lowers each kernel for compute
capability 9.0 and runs LLVM's verifier, in a process without the simulator.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


SHARDS = 4      # processes sharing the cases, so that pytest-xdist spreads them over its workers


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_kernel_lowers_and_verifies(shard):
    """Cases shard, shard + SHARDS, ... (together: all of them, at least 50)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-m", "cuda_kernels.lowering", "--shard", f"{shard}/{SHARDS}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ok, mine, total = (int(n) for n in re.search(r"(\d+) of (\d+) kernels.*; (\d+) cases in all",
                                                 run.stdout).groups())
    assert total >= 50, run.stdout
    assert ok == mine == len(range(shard, total, SHARDS)), run.stdout
