"""Error claims of the GPU kernels' float32 building blocks, checked on models of the hardware.

The simulator's stand-ins for approximate hardware instructions are exact, so
the kernels' error claims cannot be tested there; the models below apply the
worst error the PTX ISA documents to every input and redo the kernel's
float32 steps (an FFMA is exact-then-rounded: float64 holds float32
products exactly).
"""
import numpy as np

RSQRT_REL_ERR = 2.0 ** -22.9     # PTX ISA: rsqrt.approx.f32, max relative error over the positive range


def test_root_1p_is_within_half_an_ulp_and_a_hair_on_1_to_2():
    """kernels.root_1p: sqrt(s) for s in [1, 2) from rsqrt.approx and one Newton step,
    h = s * y, e = fma(-h, h, s), h + e * (y / 2), for every float32 s and rsqrt's error at
    -max, 0 and +max. The radius r = max(|x|, |y|) * root_1p(1 + a^2) then carries the
    same error budget as with the IEEE sqrt (tolerances.VALUE_ULPS)."""
    s = np.arange(np.float32(1.0).view(np.uint32), np.float32(2.0).view(np.uint32),
                  dtype=np.uint32).view(np.float32)
    s64 = s.astype(np.float64)
    exact = np.sqrt(s64)
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    for rel in (-RSQRT_REL_ERR, 0.0, RSQRT_REL_ERR):
        y = (1.0 / exact * (1.0 + rel)).astype(np.float32)
        h = (s64 * y).astype(np.float32)
        e = (s64 - h.astype(np.float64) * h).astype(np.float32)
        root = (e.astype(np.float64) * (np.float32(0.5) * y) + h).astype(np.float32)
        err_ulps = np.abs(root - exact) / ulp
        assert err_ulps.max() <= 0.5 + 1e-6, (rel, err_ulps.max())
