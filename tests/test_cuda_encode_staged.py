"""Encode v3 (`encode_staged_kernel`): keys staged by cp.async a step ahead, blocks that loop
over units, the group range by shared-memory atomics.

Its codes and parameters must be bitwise those of encode v2 (same polar form, same extremes,
same binning constants) and match the golden model. The cases make blocks loop over several
units (so the double buffers and the three rotating sets of range words are reused) and cross
units of different groups, KV heads and pair tiles. In the simulator a cp.async lands only when
its thread waits for it (kernels.cp_async16), so a read before its wait gets stale data there too.
"""
import numpy as np
import pytest

from polarref.strategies import make_keys
from tests.test_cuda_shapes import _edge_keys, _launch_and_check

SHAPES = {   # (BH, L, P, G, key dtype): P a multiple of 64
    "fp16 G32 3 heads residual 6": (3, 70, 64, 32, np.float16),
    "fp16 G16 2 tiles": (2, 48, 128, 16, np.float16),
    "fp32 G32 2 heads": (2, 96, 64, 32, np.float32),
    "fp64 G16": (1, 64, 64, 16, np.float64),
}


def _encode(keys_h, g, pairing, config):
    """launch_encode's outputs as host arrays: packed index, rho, theta, the 4 parameters, flags."""
    from numba import cuda

    from cuda_kernels import launch as CL

    bh, length, d = keys_h.shape
    p, n = d // 2, length // g
    outs = [cuda.device_array(bh * n * g * p, np.uint8) for _ in range(3)]
    params = [cuda.device_array(bh * n * p, np.float32) for _ in range(4)]
    flags = cuda.to_device(np.zeros(1, np.int32))
    CL.launch_encode(cuda.to_device(keys_h), 4, 4, g, pairing, *outs, *params, flags, config=config)
    return [a.copy_to_host() for a in outs + params + [flags]]


def _staged(g, dtype, blocks=0):
    from cuda_kernels import launch as CL

    cfg = CL.staged_config(64, g, np.dtype(dtype).itemsize, blocks)
    assert cfg is not None and cfg["kind"] == "staged"
    return cfg


@pytest.mark.parametrize("blocks", [1, 2, 0], ids=["1 block", "2 blocks", "launcher's grid"])
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_staged_encode_matches_golden_and_v2_bitwise(shape, pairing, blocks):
    bh, length, p, g, dtype = SHAPES[shape]
    keys_h = (make_keys(7, (bh, length, 2 * p), "outlier_channels", 0, g) * 3.0).astype(dtype)
    cfg = _staged(g, dtype, blocks)
    _launch_and_check(keys_h, g, pairing, cfg)
    got = _encode(keys_h, g, pairing, cfg)
    want = _encode(keys_h, g, pairing, dict(kind="rows", warps=4, tokens_per_warp=g // 4, exact=True))
    names = ("index", "rho", "theta", "r_min", "r_step", "phi_min", "phi_step", "flags")
    for name, a, b in zip(names, got, want):
        assert np.array_equal(a, b), f"{name}: {int(np.sum(a != b))} of {a.size} differ from encode v2"


def _wide_edge_keys(kind):
    """_edge_keys (P = 8) spread to P = 64: its x columns first, its y columns at P; gaussian between."""
    small = _edge_keys(kind)
    wide = make_keys(3, (1, small.shape[1], 128), "gaussian", 0, 32).astype(small.dtype)
    wide[..., :8] = small[..., :8]
    wide[..., 64:72] = small[..., 8:16]
    return wide


@pytest.mark.parametrize("kind", ["float32 subnormals", "angles next to 2*pi", "float16 angles next to 2*pi"])
def test_staged_encode_edge_values_match_golden(kind):
    keys = _wide_edge_keys(kind)
    _launch_and_check(keys, 32, "half", _staged(32, keys.dtype, 1))


def test_staged_config_says_where_it_cannot_run():
    from cuda_kernels import launch as CL

    assert CL.staged_config(32, 32, 2) is None                  # P not a multiple of 64
    assert CL.staged_config(96, 32, 2) is None
    assert CL.staged_config(64, 2, 2) is None                   # float16 stages 4 tokens a warp a step
    assert CL.staged_config(64, 1024, 4) is None                # more than 8 tokens a warp
    assert CL.staged_config(64, 32, 3) is None                  # no such key dtype
    for itemsize in (2, 4, 8):
        cfg = CL.staged_config(64, 32, itemsize)
        tps = 8 // itemsize
        tc = 32 // cfg["warps"]
        assert tc * cfg["warps"] == 32 and tc % tps == 0 and tps <= tc <= 8


def test_staged_encode_refuses_what_it_cannot_run():
    """A staged config forced on keys it cannot take (P = 8; keys 4 bytes into a buffer) is an
    error that names the sizes and addresses, not a silent wrong answer."""
    from numba import cuda

    from cuda_kernels import launch as CL

    cfg = dict(kind="staged", warps=4, blocks=0)
    out = [cuda.device_array(n, t) for n, t in ((2048, np.uint8),) * 3 + ((64, np.float32),) * 4
           + ((1, np.int32),)]
    with pytest.raises(ValueError, match="encode v3 needs P a multiple of 64.*got d = 16"):
        CL.launch_encode(cuda.to_device(np.ones((1, 32, 16), np.float32)), 4, 4, 32, "half", *out, config=cfg)
    buf = cuda.to_device(np.ones(1 + 32 * 128, np.float32))
    view = buf[1:].reshape(1, 32, 128)
    with pytest.raises(ValueError, match="keys aligned to 16 bytes"):
        CL.launch_encode(view, 4, 4, 32, "half", *out, config=cfg)
