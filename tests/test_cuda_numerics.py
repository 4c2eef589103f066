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


# sqrt.approx.ftz.f32 (one MUFU.SQRT): the bound the radius from float16 keys relies on. The PTX
# ISA gives none that we could cite, so it is measured: test_hardware_sqrt_approx_error (GPU only)
# runs every float32 the kernels can pass it and fails if the hardware ever exceeds this.
SQRT_REL_ERR = 2.0 ** -22.9
# the claim for that radius, within tolerances.VALUE_ULPS: the sum's rounding (2**-24 relative)
# halves under the root, the root adds SQRT_REL_ERR; in ulps of r (at least 2**-24 relative)
# that is 2**24 * (2**-25 + 2**-22.9) = 2.64, and the model's double rounding of the sum adds
# up to half an ulp of it (a quarter after the root): 2.9 at worst, measured 2.86
R_NARROW_ULPS = 3.0


def _float16_pairs(n=200_000):
    """x, y: float16 keys as float32, every sign, subnormals, zeros and the largest finite."""
    rng = np.random.default_rng(17)
    v = rng.integers(0, 0x10000, size=(2, n), dtype=np.uint32).astype(np.uint16).view(np.float16)
    v = v[:, np.all(np.isfinite(v), axis=0)]
    edge = np.float16([0.0, -0.0, 2**-24, -2**-24, 65504, -65504, 1.0, 6e-5])
    x = np.concatenate([v[0], np.repeat(edge, edge.size)])
    y = np.concatenate([v[1], np.tile(edge, edge.size)])
    return x.astype(np.float32), y.astype(np.float32)


def _narrow_radius_model(x, y, rel):
    """kernels.polar32's radius for float16 keys: sqrt.approx(fma(x, x, y*y)), the root off by rel.
    x*x and y*y are exact in float32; their sum is rounded to float64 and then to float32, which
    differs from FFMA's one rounding only where the first lands on a float32 halfway point (then by
    one ulp of the sum)."""
    s = (x.astype(np.float64) ** 2 + y.astype(np.float64) ** 2).astype(np.float32)
    return (np.sqrt(s.astype(np.float64)) * (1.0 + rel)).astype(np.float32)


@pytest.mark.parametrize("rel", [-SQRT_REL_ERR, 0.0, SQRT_REL_ERR])
def test_narrow_radius_is_within_its_ulps(rel):
    """r = sqrt.approx(fma(x, x, y*y)) from float16 keys stays within R_NARROW_ULPS of hypot(x, y)
    (the sum rounds once, 2**-25 relative after the root; the root adds SQRT_REL_ERR)."""
    from polarref.tolerances import VALUE_ULPS

    x, y = _float16_pairs()
    exact = np.hypot(x.astype(np.float64), y.astype(np.float64))
    got = _narrow_radius_model(x, y, rel).astype(np.float64)
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    err = np.abs(got - exact) / ulp
    assert R_NARROW_ULPS <= VALUE_ULPS
    assert err.max() <= R_NARROW_ULPS, (x[np.argmax(err)], y[np.argmax(err)], err.max())
    assert np.all(got[exact == 0] == 0.0)


@pytest.mark.parametrize("rel", [-SQRT_REL_ERR, SQRT_REL_ERR])
def test_the_model_is_the_kernels_narrow_radius(monkeypatch, rel):
    """kernels.polar32 (float16 keys) in the simulator, its sqrt stand-in made as wrong as the
    hardware may be, returns the radius _narrow_radius_model returns (up to the model's double
    rounding of the sum, one ulp at most and rare)."""
    from cuda_kernels import kernels as K

    if not K.SIM:
        pytest.skip("calls the device function's Python body: simulator only")
    monkeypatch.setattr(K, "sqrt_approx", lambda s: np.float32(np.sqrt(np.float64(s)) * (1.0 + rel)))
    x, y = (v[:3000] for v in _float16_pairs())
    got = np.array([K.polar32(a, b, True)[0] for a, b in zip(x, y)], dtype=np.float32)
    want = _narrow_radius_model(x, y, rel)
    diff = np.abs(got.view(np.int32) - want.view(np.int32))
    assert diff.max() <= 1 and np.mean(diff) < 1e-3


def test_hardware_sqrt_approx_error():
    """Every float32 in [2**-48, 2**34) (the sums of squares of float16 keys, and 0) through the
    GPU's sqrt.approx.ftz.f32: the worst relative error is at most SQRT_REL_ERR."""
    import math

    from cuda_kernels import kernels as K

    if K.SIM:
        pytest.skip("measures the GPU's sqrt.approx: real GPU only (pytest --gpu)")
    from numba import cuda, float64, uint32

    lo = int(np.float32(2.0**-48).view(np.uint32))
    n = int(np.float32(2.0**34).view(np.uint32)) - lo

    @cuda.jit
    def worst(lo, n, out):
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        m = 0.0
        while i < n:
            s = K.f32_bits(uint32(lo + i))
            exact = math.sqrt(float64(s))
            m = max(m, abs(float64(K.sqrt_approx(s)) - exact) / exact)
            i += step
        cuda.atomic.max(out, 0, m)

    out = cuda.to_device(np.zeros(1, np.float64))
    worst[132 * 8, 256](lo, n, out)
    measured = float(out.copy_to_host()[0])
    print(f"sqrt.approx.ftz.f32 on {n} inputs: worst relative error {measured:.3e} = 2**{math.log2(measured):.2f}")
    assert 0.0 < measured <= SQRT_REL_ERR

    @cuda.jit
    def root_of_zero(out):
        out[0] = K.sqrt_approx(K.fma(out[0], out[0], out[0] * out[0]))

    zero = cuda.to_device(np.zeros(1, np.float32))
    root_of_zero[1, 1](zero)
    assert zero.copy_to_host()[0].view(np.uint32) == 0          # +0, as the golden model's hypot


def _narrow_groups(rng, n_groups=300, size=32):
    """Groups of float32 values as float16 keys give them: radii and angles of random float16
    pairs, and groups only a few ulps wide far from 0 (lo / step up to about 2**26)."""
    from cuda_kernels import kernels as K

    groups = []
    x, y = _float16_pairs(n_groups * size // 2)
    polar = np.array([K.polar32(a, b, True) for a, b in zip(x, y)], dtype=np.float32)
    for quantity in (polar[:, 0], polar[:, 1]):
        groups += list(quantity[: (quantity.size // size) * size].reshape(-1, size))
    for _ in range(n_groups):
        base = np.float32(rng.uniform(1e-3, 2 * np.pi))
        ulps = rng.integers(0, rng.choice([2, 4, 7, 64, 1 << 20]), size).astype(np.int64)
        groups.append((base.view(np.int32) + ulps).astype(np.int32).view(np.float32))
    return groups


def test_narrow_codes_pin_the_end_bins_and_stay_in_the_band():
    """kernels.bin_scale_narrow and bin_code_narrow (float16 keys' codes: floor((v - lo) * inv), inv
    = 1/step shrunk by 2**-22, no clip): a group's min in bin 0, its max in the top bin, every code
    <= top, and against floor((v - lo) / step) in float64 only codes in the boundary band differ,
    by one. Groups a few ulps wide far from 0 included: there an FMA with a rounded -lo / step
    (e31a737) put the max bins away from the top."""
    from cuda_kernels import kernels as K
    from polarref import tolerances as T
    from polarref import verify

    if not K.SIM:
        pytest.skip("calls the device functions' Python bodies: simulator only")
    rng = np.random.default_rng(23)
    for k, v in enumerate(_narrow_groups(rng)):
        bits = int(rng.integers(1, 8))
        lo, hi = v.min(), v.max()
        step = np.float32((hi - lo) * np.float32(2.0**-bits))        # as the kernel computes it
        inv = K.bin_scale_narrow(step)
        got = np.array([K.bin_code_narrow(a, lo, inv) for a in v], dtype=np.int64)
        top = 2**bits - 1
        assert got.max() <= top
        if step > 0:
            assert got[v == lo].max() == 0 and got[v == hi].min() == top, (k, bits, lo, hi, got)
        lo64 = np.array([[float(lo)]])
        step64 = np.array([[float(hi - lo) * 2.0**-bits]])
        want = np.clip(np.floor((v.astype(np.float64) - float(lo)) / max(step64[0, 0], 1e-300)), 0, top)
        want = np.where(step64[0, 0] > 0, want, 0).astype(np.int64)
        verify.codes_agree(f"group {k}", got[:, None], want[:, None], v.astype(np.float64)[:, None],
                           lo64, step64, bits, T.EPS32)
