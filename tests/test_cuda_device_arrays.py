"""The CUDA backend on device-resident inputs: results stay on the device and equal the host path.

Covers what the host-array suite cannot reach: the device-side NaN/Inf count
(nonfinite kernel) and the strided-view copy (copy3d kernel). Numba device
arrays stand for torch/cupy tensors here (all go through __cuda_array_interface__).
"""
import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")

import cuda_kernels  # noqa: E402

RNG = np.random.default_rng(5)
KEYS = RNG.standard_normal((2, 48, 8)).astype(np.float32)
QUERIES = RNG.standard_normal((4, 8)).astype(np.float32)


def test_device_inputs_give_device_results_equal_to_the_host_path():
    code = cuda_kernels.encode(cuda.to_device(KEYS), group_size=16)
    scores = cuda_kernels.scores(cuda.to_device(QUERIES), code)
    decoded = cuda_kernels.decode(code)
    assert cuda_kernels.is_device_array(scores) and cuda_kernels.is_device_array(decoded)
    host_code = cuda_kernels.encode(KEYS, group_size=16)
    assert np.array_equal(code.rho.copy_to_host(), host_code.rho)
    assert np.array_equal(scores.copy_to_host(), np.asarray(cuda_kernels.scores(QUERIES, host_code)))
    assert np.array_equal(decoded.copy_to_host(), np.asarray(cuda_kernels.decode(host_code)))


def test_strided_device_view_is_read_like_its_host_copy():
    view = cuda.to_device(KEYS)[:, 5:37, :]                  # not contiguous: heads 48 rows apart
    code = cuda_kernels.encode(view, group_size=16)
    host_code = cuda_kernels.encode(np.ascontiguousarray(KEYS[:, 5:37, :]), group_size=16)
    assert np.array_equal(code.theta.copy_to_host(), host_code.theta)
    assert np.array_equal(code.r_min.copy_to_host(), host_code.r_min)


@pytest.mark.parametrize("value, words", [(np.nan, ["keys", "NaN", "(1, 3, 5)"]), (np.inf, ["keys", "(1, 3, 5)"])])
def test_nonfinite_device_keys_are_named(value, words):
    keys = KEYS.copy()
    keys[1, 3, 5] = value
    with pytest.raises(ValueError) as info:
        cuda_kernels.encode(cuda.to_device(keys), group_size=16)
    assert all(word in str(info.value) for word in words), str(info.value)
