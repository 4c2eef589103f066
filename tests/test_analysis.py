"""Tests for the analysis package: metrics and baselines on inputs with known answers, and one smoke run.

The figures are not judged here (look at them); the smoke test only checks
that `polarref analyze` writes report.md, the PNGs and one summary row per
bit configuration.
"""
from __future__ import annotations

import numpy as np
import pytest

from analysis import baselines, metrics, report

EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------
def test_kl_of_identical_distributions_is_zero():
    p = np.array([[0.1, 0.2, 0.7], [0.25, 0.25, 0.5]])
    assert np.array_equal(metrics.kl_divergence(p, p), [0.0, 0.0])


def test_kl_of_known_two_point_distributions():
    # KL((1/2, 1/2) || (9/10, 1/10)) = 1/2 ln(5/9) + 1/2 ln 5 = 1/2 ln(25/9)
    assert metrics.kl_divergence([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.5 * np.log(25 / 9), rel=1e-14)
    # A point mass against a fair coin: ln 2; zero-probability terms of p count 0.
    assert metrics.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2), rel=1e-14)
    # q = 0 where p > 0: infinite.
    assert metrics.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_kl_from_logits_matches_softmax_then_kl_and_ignores_masked_keys():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 6)) * 3
    mask = np.tril(np.ones((4, 6), dtype=bool), k=2)          # query t sees keys 0..t+2
    d = 16
    got = metrics.kl_from_logits(a, b, mask, d)
    for t in range(4):
        n = mask[t].sum()
        p = np.exp(a[t, :n] / 4) / np.exp(a[t, :n] / 4).sum()
        q = np.exp(b[t, :n] / 4) / np.exp(b[t, :n] / 4).sum()
        assert got[t] == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-12)
    weights = metrics.attention_weights(a, mask, d)
    assert np.allclose(weights.sum(axis=-1), 1.0) and np.all(weights[~mask] == 0)


def test_topk_overlap_of_known_rankings():
    ref = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert metrics.topk_overlap(ref, ref, k=3) == 1.0
    assert metrics.topk_overlap(ref, np.array([5.0, 4.0, 1.0, 2.0, 3.0]), k=3) == pytest.approx(2 / 3)
    assert metrics.topk_overlap(ref, -ref, k=2) == 0.0
    # With a mask only the two visible keys compete: k shrinks to 2 and both agree.
    mask = np.array([False, False, False, True, True])
    assert metrics.topk_overlap(ref, -ref, k=3, mask=mask) == 1.0


def test_relative_error_and_step_units():
    exact = np.array([3.0, 4.0])
    assert metrics.relative_error(1.1 * exact, exact) == pytest.approx(0.1, rel=1e-14)
    assert metrics.relative_error([0.0], [0.0]) == 0.0
    assert metrics.relative_error([1.0], [0.0]) == np.inf
    # The angle error goes the short way round: 0.1 vs 2 pi - 0.1 is 0.2 rad, one step of 0.2.
    assert metrics.step_units_error(0.1, 2 * np.pi - 0.1, 0.2, period=2 * np.pi) == pytest.approx(1.0)
    assert np.isnan(metrics.step_units_error(1.0, 0.5, 0.0))


def test_kurtosis_of_known_distributions():
    assert metrics.kurtosis(np.array([-1.0, 1.0])) == pytest.approx(1.0)          # two-point: 1
    assert metrics.kurtosis(np.array([-1.0, 0.0, 0.0, 1.0])) == pytest.approx(2.0)  # m4 / m2^2 = 0.5 / 0.25
    # The uniform distribution on a fine grid: 1.8 (9/5), up to O(1/n^2) grid effects.
    assert metrics.kurtosis(np.linspace(-1, 1, 100_001)) == pytest.approx(1.8, rel=1e-6)
    assert np.isnan(metrics.kurtosis(np.ones(5)))


def test_circular_range_of_angles_straddling_zero():
    angles = np.array([0.1, 2 * np.pi - 0.1, 0.05])
    assert metrics.circular_range(angles) == pytest.approx(0.2)
    assert metrics.circular_range(np.array([1.0, 2.0, 1.5])) == pytest.approx(1.0)


def test_score_error_in_units_of_the_spread():
    ref = np.array([[0.0, 2.0, 4.0, 100.0]])                 # the last key is masked out
    mask = np.array([[True, True, True, False]])
    spread = np.sqrt(8 / 3)                                   # std of 0, 2, 4
    assert metrics.score_error(ref + 0.5, ref, mask)[0] == pytest.approx(0.5 / spread)


def test_outlier_criterion_flags_a_planted_channel():
    rng = np.random.default_rng(1)
    keys = rng.standard_normal((2, 256, 16))
    keys[1, :, 5] *= 10.0
    flags = metrics.outlier_channels(keys)
    assert not flags[0].any()
    assert np.flatnonzero(flags[1]).tolist() == [5]


# --------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------
def test_integer_quantization_of_a_ramp():
    # Values on the 16 levels of [0, 15]: codes are the values, reconstruction exact.
    ramp = np.arange(16.0)
    codes, recon, step = baselines.quantize_uniform(ramp, 0.0, 15.0, 4)
    assert codes.tolist() == list(range(16)) and np.array_equal(recon, ramp) and step[0] == 1.0
    # Off-level values: error at most step / 2, plus float64 rounding of (v - lo) / step and lo + code * step:
    # a few ulps of the step and of the largest magnitude involved (3).
    fine = np.linspace(-2.0, 3.0, 1001)
    for bits in (1, 2, 3, 5):
        for rounding in ("nearest", "midpoint"):
            codes, recon, step = baselines.quantize_uniform(fine, -2.0, 3.0, bits, rounding)
            assert codes.min() == 0 and codes.max() == 2**bits - 1
            assert np.abs(recon - fine).max() <= step[0] / 2 * (1 + 8 * EPS) + 8 * EPS * 3
    # The midpoint rule's bins are narrower: 5 / 2**b against 5 / (2**b - 1).
    assert baselines.quantize_uniform(fine, -2.0, 3.0, 2, "midpoint")[2][0] == pytest.approx(5 / 4)


def test_per_channel_groups_and_residual_and_per_token():
    keys = np.zeros((1, 10, 4))
    keys[0, :, 0] = np.arange(10.0)                           # a ramp along tokens in channel 0
    keys[0, :, 1] = 7.0                                       # a constant channel: zero range, exact
    hat = baselines.quantize_per_channel(keys, 2, group_size=4)
    # Group 0 (tokens 0..3) of channel 0 has levels 0, 1, 2, 3: exact; the trailing 10 mod 4 tokens verbatim.
    assert np.array_equal(hat[0, :4, 0], [0.0, 1.0, 2.0, 3.0])
    assert np.array_equal(hat[0, 8:], keys[0, 8:])
    assert np.array_equal(hat[0, :, 1], keys[0, :, 1])
    token = np.array([[0.0, 1.0, 2.0, 3.0, 1.4]])             # per token: levels 0..3, 1.4 -> 1
    assert np.array_equal(baselines.quantize_per_token(token, 2), [[0.0, 1.0, 2.0, 3.0, 1.0]])


def test_bits_per_element_formulas_and_matching():
    assert baselines.bits_per_element("polar", r_bits=4, t_bits=4, group_size=128) == 4.25
    assert baselines.bits_per_element("polar", r_bits=2, t_bits=4, group_size=32) == 3 + 1.0
    assert baselines.bits_per_element("per_channel", bits=4, group_size=128) == 4.25
    assert baselines.bits_per_element("per_token", bits=4, head_dim=64) == 4.5
    assert baselines.matching_int_bits(4.25, 0.25) == 4
    assert baselines.matching_int_bits(4.25, 0.5) == 4                    # 4.5 is nearer than 3.5
    assert baselines.matching_int_bits(2.75, 0.25) == 3                   # a tie goes to the wider integer
    with pytest.raises(ValueError, match="method"):
        baselines.bits_per_element("fp8", bits=8)
    with pytest.raises(ValueError, match="bits"):
        baselines.quantize_per_token(np.ones((2, 4)), 0)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def write_tiny_capture(path, layers=2, tokens=40, h_kv=2, h_q=4, d=16, seed=0):
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((layers, tokens, h_kv, d)).astype(np.float32)
    keys[..., 3] *= 8.0                                       # an outlier channel
    np.savez(path, keys=keys, values=rng.standard_normal(keys.shape).astype(np.float32),
             queries=rng.standard_normal((layers, tokens, h_q, d)).astype(np.float32),
             layers=np.array([0, 5]), model_name=np.array("tiny synthetic"), rope_base=np.array(10000.0))


def test_smoke_report_on_a_tiny_capture(tmp_path, capsys):
    keys = tmp_path / "tiny.npz"
    write_tiny_capture(keys)
    out = tmp_path / "out"
    code = report.main(["--keys", str(keys), "--out", str(out), "--group-size", "16", "--last-queries", "8",
                        "--bits", "r2t2", "r4t4", "r3t2", "--quiet"])
    assert code == 0
    text = (out / "report.md").read_text()
    for name in report.FIGURE_TEXT:
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "outlier_scatter.png").exists() and (out / "error_by_pair.png").exists()
    summary = text.split("## Summary")[1].split("## All methods")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| r")]
    assert [row.split()[1] for row in rows] == ["r2t2", "r4t4", "r3t2"]


def test_bad_input_names_the_argument(tmp_path, capsys):
    assert report.main(["--keys", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "--keys" in capsys.readouterr().err
    assert report.main(["--bits", "r4x4"]) == 2
    assert "--bits" in capsys.readouterr().err
    assert report.main(["--bits", "r5t4"]) == 2                # r + t > 8
    assert "--bits" in capsys.readouterr().err
    keys = tmp_path / "tiny.npz"
    write_tiny_capture(keys, tokens=20)
    assert report.main(["--keys", str(keys), "--out", str(tmp_path / "o"), "--group-size", "32"]) == 2
    assert "--group-size" in capsys.readouterr().err
