"""The CUDA backend on chosen, non-degenerate shapes, besides the few drawn examples.

Under the simulator the property suite runs only a handful of Hypothesis
examples (each CUDA thread is a Python thread), and small drawn shapes are
often degenerate (L < G, G = 1). These cases make sure full groups with real
ranges, several pairs, both pairings, GQA and every precision of keys are
compared with the golden model on every run, simulator or GPU.
"""
import numpy as np
import pytest

import polarref
from polarref import tolerances as T
from polarref import verify
from polarref.golden import split_pairs, to_polar
from polarref.backends import load_backend
from polarref.strategies import Case, Config, make_keys

CASES = [  # (H_kv, M, L, P, G, r_bits, t_bits, pairing, distribution, dtype)
    (2, 4, 70, 8, 32, 4, 4, "half", "outlier_channels", np.float64),
    (1, 3, 64, 4, 16, 3, 5, "interleaved", "straddle_zero_angle", np.float32),
    (3, 2, 40, 6, 16, 2, 2, "half", "gaussian", np.float16),
    (1, 1, 128, 2, 128, 1, 7, "half", "repeated_values", np.float64),
    (2, 2, 48, 5, 16, 4, 4, "half", "gaussian", np.float16),        # P odd: encode v1 (tile kernel)
]
CHECKS = ("matches_golden_codes", "matches_golden_decode", "matches_golden_scores",
          "table_scores_match_decode", "extremes_in_end_bins")


@pytest.fixture(scope="module")
def cuda_backend():
    return load_backend("cuda")


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}G-r{c[5]}t{c[6]}-{c[7]}-{np.dtype(c[9]).name}")
def test_cuda_matches_golden_on_full_groups(cuda_backend, case, check):
    h_kv, m, length, p, g, r_bits, t_bits, pairing, distribution, dtype = case
    keys = make_keys(11, (h_kv, length, 2 * p), distribution, 0, g).astype(dtype)
    queries = np.random.default_rng(12).standard_normal((h_kv * m, 2 * p))
    example = Case(keys, queries, Config(r_bits, t_bits, g, pairing), f"fixed {distribution}")
    prop = {p_.name: p_ for p_ in verify.PROPERTIES}[check]
    outcome = prop.check(cuda_backend, example)          # raises AssertionError on a mismatch
    assert outcome.worst <= 1.0


ENCODE_CONFIGS = {   # every encode kernel and option, forced through launch_encode's config
    "v1 tile": dict(kind="tile", pairs_per_block=8, slots=2, tokens_per_thread=16),
    "v2 rows": dict(kind="rows", warps=4, tokens_per_warp=8),
    "v2 rows, fast root": dict(kind="rows", warps=4, tokens_per_warp=8, fast_root=True),
    "v2 rows, tokens beyond the group": dict(kind="rows", warps=3, tokens_per_warp=11),
    "v2 rows, 16 warps as on the GPU": dict(kind="rows", warps=16, tokens_per_warp=2, fast_root=True),
    "v2 rows, warps dividing the group (exact)": lambda g: dict(kind="rows", warps=4, tokens_per_warp=g // 4,
                                                                fast_root=True, exact=True),
    "v2 rows, IEEE sqrt, exact (the default)": lambda g: dict(kind="rows", warps=4, tokens_per_warp=g // 4,
                                                              fast_root=False, exact=True),
}


def encode_config(name, g):
    """ENCODE_CONFIGS[name] for group size g (the exact configuration depends on it)."""
    cfg = ENCODE_CONFIGS[name]
    return cfg(g) if callable(cfg) else cfg


def assert_matches_golden(keys_h, g, pairing, rho, theta, packed, params):
    """Codes (split and packed) outside the boundary band and r_min, r_step, phi_min, phi_step
    to rounding, as the property matches_golden_codes judges them (r4t4)."""
    ref = polarref.encode(keys_h, 4, 4, g, pairing)
    r, phi = to_polar(*split_pairs(keys_h.astype(np.float64), pairing))
    lq = ref.rho.shape[-2]
    r, phi = r[..., :lq, :], phi[..., :lq, :]                # the residual tokens have no codes
    for name, got, want, vals, lo, step in (
            ("rho", rho, ref.rho, r, ref.r_min, ref.r_step),
            ("theta", theta, ref.theta, phi, ref.phi_min, ref.phi_step),
            ("packed rho", packed >> 4, ref.rho, r, ref.r_min, ref.r_step),
            ("packed theta", packed & 15, ref.theta, phi, ref.phi_min, ref.phi_step)):
        verify.codes_agree(name, got, want, vals, lo, step, 4, T.EPS32)     # raises on a mismatch
    for k, got in enumerate(params):      # r_min, r_step, phi_min, phi_step
        lo, step = (ref.r_min, ref.r_step) if k < 2 else (ref.phi_min, ref.phi_step)
        slack = T.range_bounds(lo, step, 4, T.EPS32)[k % 2]                    # as matches_golden_codes
        assert np.all(np.abs(np.asarray(got, np.float64) - (lo, step)[k % 2]) <= slack)


ENCODE_SHAPES = {    # (BH, L, P, G, key dtype)
    "P8-G32-fp16": (2, 64, 8, 32, np.float16),
    "P66-G32-fp32-2tiles-6residual": (1, 70, 66, 32, np.float32),
    "P4-G16-fp64": (1, 48, 4, 16, np.float64),
}


def _launch_and_check(keys_h, g, pairing, config=None, index_offset=0):
    """launch_encode on device copies of keys_h (index viewed index_offset bytes into its buffer),
    then assert_matches_golden."""
    from numba import cuda

    from cuda_kernels import launch as CL

    bh, length, d = keys_h.shape
    p, lq = d // 2, (length // g) * g
    index = cuda.device_array(bh * lq * p + index_offset, np.uint8)[index_offset:]
    rho = cuda.device_array(bh * lq * p, np.uint8)
    theta = cuda.device_array(bh * lq * p, np.uint8)
    params = [cuda.device_array(bh * (length // g) * p, np.float32) for _ in range(4)]
    flags = cuda.to_device(np.zeros(1, np.int32))
    CL.launch_encode(cuda.to_device(keys_h), 4, 4, g, pairing, index, rho, theta, *params, flags, config=config)
    assert_matches_golden(keys_h, g, pairing, rho.copy_to_host().reshape(bh, lq, p),
                          theta.copy_to_host().reshape(bh, lq, p), index.copy_to_host().reshape(bh, lq, p),
                          [a.copy_to_host().reshape(bh, length // g, p) for a in params])
    assert int(flags.copy_to_host()[0]) == 0


@pytest.mark.parametrize("shape", list(ENCODE_SHAPES))
@pytest.mark.parametrize("pairing", ["half", "interleaved"])
@pytest.mark.parametrize("config", list(ENCODE_CONFIGS), ids=str)
def test_each_encode_kernel_matches_golden(config, pairing, shape):
    """Both encode kernels (and options) on the same inputs: codes outside the boundary band and
    the parameters equal the golden model's, whichever kernel the launcher would have picked;
    partial pair tiles, residual tokens and every key dtype included."""
    bh, length, p, g, dtype = ENCODE_SHAPES[shape]
    keys_h = (make_keys(5, (bh, length, 2 * p), "outlier_channels", 0, g) * 3.0).astype(dtype)
    _launch_and_check(keys_h, g, pairing, encode_config(config, g))


def test_encode_falls_back_to_v1_where_v2_cannot_run(monkeypatch):
    """Keys one element into a device buffer (no 2-element loads) or an index one byte into one
    (no 2-byte stores) take encode v1; aligned ones take v2. v2 is replaced by a stub that raises,
    so each path is seen, not inferred (the simulator's pointers are the host addresses of the
    arrays behind its device arrays, so the alignment is real there too)."""
    from numba import cuda

    import cuda_kernels.kernels as K
    from cuda_kernels import launch as CL

    keys_h = make_keys(6, (1, 64, 16), "gaussian", 0, 32).astype(np.float32)
    buf = cuda.to_device(np.concatenate([np.zeros(1, np.float32), keys_h.ravel()]))
    view = buf[1:].reshape(keys_h.shape)

    def v2_called(*args, **kwargs):
        raise RuntimeError("encode v2 was chosen")

    monkeypatch.setattr(K, "encode_rows_kernel", v2_called)
    with pytest.raises(RuntimeError, match="v2 was chosen"):
        CL.encode(cuda.to_device(keys_h), 4, 4, 32, "half")
    code = CL.encode(view, 4, 4, 32, "half")                # encode v1
    rho, theta = code.rho.copy_to_host(), code.theta.copy_to_host()
    assert_matches_golden(keys_h, 32, "half", rho, theta, (rho << 4) | theta,
                          [getattr(code, n).copy_to_host() for n in ("r_min", "r_step", "phi_min", "phi_step")])
    _launch_and_check(keys_h, 32, "half", index_offset=1)                   # encode v1


def _edge_keys(kind):
    keys = make_keys(9, (1, 32, 16), "gaussian", 0, 32).astype(np.float32)
    if kind == "float32 subnormals":        # steps under 2**-64: their inverses overflow float32
        return (keys * 1e-42).astype(np.float32)
    if kind == "float16 angles next to 2*pi":   # the narrow path's one-min wrap: |y| / x down to
        keys = keys.astype(np.float16)          # 2**-24 / 65504, far above 2**-51 (golden's wrap)
        keys[0, :, 0] = np.tile(np.float16([65504, 30000, 1000, 1, 0.5, 7, 60000, 2]), 4)
        keys[0, :, 8] = -np.tile(np.float16([2**-24, 2**-23, 3 * 2**-24, 2**-20, 1e-4, 2**-24, 0.0, 1]), 4)
        return keys
    if kind == "float16 ranges a few ulps wide":   # far from 0: lo / step near 2**26, where an
        keys = keys.astype(np.float16)             # FMA with a rounded -lo / step lost the end bins
        keys[0, :, 0] = 2047                       # pair 0: radii 2047 and 2047 + 3 ulps
        keys[0, :, 8] = np.tile(np.float16([0.0, 1.0625]), 16)
        keys[0, :, 1] = np.tile(np.float16([-2047, -2039]), 16)   # pair 1: angles near 5*pi/4,
        keys[0, :, 9] = np.tile(np.float16([-2046, -2038]), 16)   # 4 float32 ulps apart
        return keys
    x = np.abs(keys[0, :, 0]) + 0.5         # pair 0: angles just below 2*pi, where float32 rounds
    keys[0, :, 0] = x                       # up to its 2*pi and float64 does only below 4.4e-16
    keys[0, :, 8] = -x * np.tile([1e-8, 1e-7, 2e-7, 3e-7, 1e-20, 1e-17, 4e-16, 5e-16], 4)
    return keys


EDGE_KINDS = ["float32 subnormals", "angles next to 2*pi", "float16 angles next to 2*pi",
              "float16 ranges a few ulps wide"]


@pytest.mark.parametrize("kind", EDGE_KINDS)
@pytest.mark.parametrize("config", ["v1 tile", "v2 rows, fast root", "v2 rows, warps dividing the group (exact)",
                                    "v2 rows, IEEE sqrt, exact (the default)"])
def test_encode_edge_values_match_golden(config, kind):
    """Both encode kernels on keys where float32 differs most from the golden model's float64:
    subnormal keys (codes and steps must not overflow) and negative angles that round to 2*pi
    (the golden model wraps to 0 only what float64 rounds to 2*pi), from float32 and from
    float16 keys (whose kernels take the wrap as one min). For float16 keys the golden model never
    wraps, so there the case guards against wrong codes and parameters on tiny negative angles;
    float32's 2*pi in place of the float below it would still be within tolerance. Float16 groups
    whose range is a few ulps wide, far from 0: the group's min and max must land in bins 0 and
    top exactly (the band is wider than a bin there, so only the end bins pin the codes down)."""
    _launch_and_check(_edge_keys(kind), 32, "half", encode_config(config, 32))
    if kind == "float16 ranges a few ulps wide":
        from polarref.backends import load_backend

        code = load_backend("cuda").encode(_edge_keys(kind), 4, 4, 32, "half")
        for name in ("rho", "theta"):
            got = np.asarray(getattr(code, name))[0, :, :2]       # pairs 0 and 1, all 32 tokens
            assert np.array_equal(np.sort(np.unique(got, axis=0), axis=0), [[0, 0], [15, 15]]), (name, got[:4])


@pytest.mark.parametrize("config", [dict(kind="rows", warps=4, tokens_per_warp=7),
                                    dict(kind="rows", warps=4, tokens_per_warp=9, exact=True),
                                    dict(kind="rows", warps=64, tokens_per_warp=1)], ids=str)
def test_encode_refuses_a_config_that_does_not_fit_the_group(config):
    """A v2 configuration whose warps cover fewer tokens than a group would leave some without
    codes; an exact one that covers more, or one with more warps than the group has tokens (a warp
    with none would read and write the next group's), would read past the group: all errors."""
    from numba import cuda

    from cuda_kernels import launch as CL

    keys = cuda.to_device(np.ones((1, 32, 8), np.float32))
    out = [cuda.device_array(n, t) for n, t in ((128, np.uint8),) * 3 + ((4, np.float32),) * 4 + ((1, np.int32),)]
    with pytest.raises(ValueError, match="covers (28|36|64) tokens a group with (4|64) warps; group_size is 32"):
        CL.launch_encode(keys, 4, 4, 32, "half", *out, config=config)

