"""The CUDA simulator itself, where the suite depends on it behaving like a GPU.

Its shared arrays are found by the source line that declares them; cuda_kernels makes that
lookup atomic (kernels._lock_simulator_shared_arrays). Without the lock, two of the Python
threads that run one block could each get an array of their own, and a reduction through
shared memory would silently lose values.
"""
import sys
import threading

import numpy as np
import pytest


def _arrays_seen_by(n_threads):
    """How many distinct arrays n_threads threads get for one shared-array declaration of a
    fresh block, all asking at once."""
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    block = FakeCUDAShared(0)
    got = [None] * n_threads
    start = threading.Barrier(n_threads)

    def thread(i):
        start.wait()
        got[i] = block.array(16, np.float32)        # one line: one shared array

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len({id(a) for a in got})


def test_threads_of_a_block_get_one_shared_array(request):
    """200 blocks of 32 threads asking at a 1 us GIL switch interval: every block's threads share
    one array (the simulator's own lookup gave some threads arrays of their own in about 1 block
    in 10 under these conditions)."""
    if request.config.getoption("--gpu"):
        pytest.skip("the simulator is not in use on a real GPU")
    import cuda_kernels  # noqa: F401  (installs the lock)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        split = sum(_arrays_seen_by(32) > 1 for _ in range(200))
    finally:
        sys.setswitchinterval(old)
    assert split == 0, f"{split} of 200 blocks had threads with arrays of their own"
