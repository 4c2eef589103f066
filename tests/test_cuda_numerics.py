"""Error claims of the GPU kernels' float32 building blocks, checked on models of the hardware.

The simulator's stand-ins for approximate hardware instructions are more
accurate than the hardware, so the kernels' error claims cannot be tested by
running them there as they are; the models below apply the worst error the
PTX ISA documents to every input and redo the kernel's float32 steps (an FFMA
is exact-then-rounded: float64 holds float32 products exactly). A second test
runs the kernel's own code in the simulator with that error injected, so the
model cannot drift from the code.
"""
import numpy as np
import pytest

from polarref.tolerances import TINY32

RSQRT_REL_ERR = 2.0 ** -22.9     # PTX ISA: rsqrt.approx.f32, max relative error over the positive range


def test_root_1p_is_within_half_an_ulp_and_a_hair_on_1_to_2():
    """kernels.root_1p: sqrt(s) for s in [1, 2) from rsqrt.approx and one Newton step,
    h = s * y, e = fma(-h, h, s), h + e * (y / 2), for every float32 s and rsqrt's error at
    -max, 0 and +max. The radius r = max(|x|, |y|) * root_1p(1 + a^2) then carries the
    same error budget as with the IEEE sqrt (tolerances.VALUE_ULPS)."""
    s = np.arange(np.float32(1.0).view(np.uint32), np.float32(2.0).view(np.uint32),
                  dtype=np.uint32).view(np.float32)
    exact = np.sqrt(s.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    for rel in (-RSQRT_REL_ERR, 0.0, RSQRT_REL_ERR):
        err_ulps = np.abs(_root_model(s, rel) - exact) / ulp
        assert err_ulps.max() <= 0.5 + 1e-6, (rel, err_ulps.max())


def _root_model(s, rel):
    """kernels.root_1p in NumPy float32 steps, rsqrt off by the relative error rel."""
    s64 = s.astype(np.float64)
    y = (1.0 / np.sqrt(s64) * (1.0 + rel)).astype(np.float32)
    h = (s64 * y).astype(np.float32)
    e = (s64 - h.astype(np.float64) * h).astype(np.float32)
    return (e.astype(np.float64) * (np.float32(0.5) * y) + h).astype(np.float32)


@pytest.mark.parametrize("rel", [-RSQRT_REL_ERR, RSQRT_REL_ERR])
def test_the_model_is_the_kernels_root_1p(monkeypatch, rel):
    """The simulator runs kernels.root_1p's Python body; with its rsqrt stand-in made as wrong as
    the hardware may be, it returns exactly what _root_model returns."""
    from cuda_kernels import kernels as K

    if not K.SIM:
        pytest.skip("calls the device function's Python body: simulator only")
    monkeypatch.setattr(K, "rsqrt_approx", lambda x: np.float32(1.0 / np.sqrt(np.float64(x)) * (1.0 + rel)))
    s = np.random.default_rng(3).uniform(1.0, 2.0, 4000).astype(np.float32)
    got = np.array([K.root_1p(v) for v in s], dtype=np.float32)
    np.testing.assert_array_equal(got, _root_model(s, rel))


RCP_REL_ERR = 2.0 ** -23         # PTX ISA: rcp.approx.f32, max 1 ulp (relative 2**-23 at worst)


def _ratio_inputs(narrow, n=3000):
    """(mn, mx) with 0 <= mn <= mx: float16 values when narrow, else float32 over its whole range
    (subnormals, the largest finite, and mn far below mx); zeros included."""
    rng = np.random.default_rng(11)
    if narrow:
        v = rng.choice(np.arange(0, 0x7C00, dtype=np.uint16), size=(2, n)).view(np.float16)
    else:
        v = rng.integers(0, 0x7F800000, size=(2, n), dtype=np.uint32).view(np.float32)
        v[:, :8] = np.array([[0, 1, 1, 0x7F7FFFFF, 3, 0x00800000, 0x007FFFFF, 1],
                             [0, 1, 0x7F7FFFFF, 0x7F7FFFFF, 0x1F800000, 0x00800000, 0x00800000, 7]],
                            dtype=np.uint32).view(np.float32)
    v = v.astype(np.float32)
    return np.minimum(v[0], v[1]), np.maximum(v[0], v[1])


@pytest.mark.parametrize("narrow", [True, False])
@pytest.mark.parametrize("rel", [-RCP_REL_ERR, 0.0, RCP_REL_ERR])
def test_ratio_is_within_one_ulp(monkeypatch, narrow, rel):
    """kernels.ratio (mn / mx for the polar form, no IEEE division): the flush-to-zero hardware
    reciprocal off by its worst error, the quotient and one residual correction stay within one
    float32 ulp of mn / mx (plus the smallest subnormal where the quotient is that small), over
    float16 inputs (narrow: no scaling) and all float32 ones (scaled into the reciprocal's
    normal range). mx = 0 gives 0."""
    from cuda_kernels import kernels as K

    if not K.SIM:
        pytest.skip("calls the device function's Python body: simulator only")
    exact_rcp = K.rcp_approx
    monkeypatch.setattr(K, "rcp_approx", lambda x: np.float32(exact_rcp(x) * (1.0 + rel)))
    mn, mx = _ratio_inputs(narrow)
    got = np.array([K.ratio(a, b, narrow) for a, b in zip(mn, mx)], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(mx > 0, mn.astype(np.float64) / mx, 0.0)
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    err = np.abs(got - want)
    worst = np.argmax(err / (ulp + TINY32))
    assert np.all(err <= ulp + TINY32), (mn[worst], mx[worst], got[worst], want[worst])
    assert np.all(got[mx == 0] == 0.0)
