"""Every Numba scoring kernel version against the golden model, on shapes that select it.

The property suite runs whichever kernel `cpu_kernels.scores` picks for the
drawn shapes; kernel 4 (AVX-512) needs P and G multiples of 16 and bits <= 4,
which random shapes rarely give. Here each version runs on purpose.
"""
import numpy as np
import pytest

import cpu_kernels
from polarref import golden, tolerances as tol
from polarref.verify import golden_score_tolerance

SHAPES = [  # (H_kv, M query heads per KV head, L, P, G, r_bits, t_bits)
    (2, 4, 160, 16, 16, 4, 4),     # kernel 4 applies (with a residual of 0 tokens: 160 = 10 G)
    (3, 5, 300, 32, 32, 3, 4),     # kernel 4 with M = 5 (two blocks of 4 heads) and a residual tail
    (2, 3, 150, 7, 16, 5, 3),      # P not a multiple of 16, r_bits > 4: kernel 3 only
]


def kernel4_shape(shape):
    _, _, _, p, g, r_bits, t_bits = shape
    return p % 16 == 0 and g % 16 == 0 and max(r_bits, t_bits) <= 4


CASES = [(version, shape) for shape in SHAPES for version in (1, 2, 3, 4)
         if version < 4 or kernel4_shape(shape)]


@pytest.mark.parametrize("version, shape", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"v{v}")
def test_scoring_kernel_matches_golden(version, shape):
    h_kv, m, length, p, g, r_bits, t_bits = shape
    rng = np.random.default_rng(sum(shape) + version)
    keys = rng.standard_normal((h_kv, length, 2 * p))
    keys[..., 3] *= 20.0                                     # an outlier channel
    queries = rng.standard_normal((h_kv * m, 2 * p))
    code = golden.encode(keys, r_bits=r_bits, t_bits=t_bits, group_size=g)
    if version == 4 and not cpu_kernels.HAS_AVX512:
        pytest.skip("this CPU has no AVX-512: kernel 4 cannot run here (kernels 1-3 are tested)")
    assert cpu_kernels.scores_version(code, version) == version
    got = cpu_kernels.scores(queries, code, version=version)
    want = golden.scores(queries, code)
    bound = golden_score_tolerance(queries, code, tol.EPS32)
    assert got.shape == want.shape
    assert (np.abs(got - want) <= bound).all(), (np.abs(got - want) / bound).max()


def test_kernel4_is_the_default_where_it_applies():
    code = golden.encode(np.ones((1, 32, 32)), group_size=16)
    assert cpu_kernels.scores_version(code) == (4 if cpu_kernels.HAS_AVX512 else 3)
    code5 = golden.encode(np.ones((1, 32, 32)), r_bits=5, t_bits=3, group_size=16)
    assert cpu_kernels.scores_version(code5) == 3
