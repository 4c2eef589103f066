"""The CUDA backend on chosen, non-degenerate shapes, besides the few drawn examples.

Under the simulator the property suite runs only a handful of Hypothesis
examples (each CUDA thread is a Python thread), and small drawn shapes are
often degenerate (L < G, G = 1). These cases make sure full groups with real
ranges, several pairs, both pairings, GQA and every precision of keys are
compared with the golden model on every run, simulator or GPU.
"""
import numpy as np
import pytest

from polarref import verify
from polarref.backends import load_backend
from polarref.strategies import Case, Config, make_keys

CASES = [  # (H_kv, M, L, P, G, r_bits, t_bits, pairing, distribution, dtype)
    (2, 4, 70, 8, 32, 4, 4, "half", "outlier_channels", np.float64),
    (1, 3, 64, 4, 16, 3, 5, "interleaved", "straddle_zero_angle", np.float32),
    (3, 2, 40, 6, 16, 2, 2, "half", "gaussian", np.float16),
    (1, 1, 128, 2, 128, 1, 7, "half", "repeated_values", np.float64),
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
