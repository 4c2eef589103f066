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
