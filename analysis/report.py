"""`polarref analyze`: errors of PolarQuant against integer baselines on real keys, with figures.

    polarref analyze [--keys FILE] [--out DIR] [--bits r2t2 r3t3 ...] [--group-size 128] [--seed 0]
    python -m analysis.report ...          (the same)

For every bit configuration r{a}t{b} it quantizes the keys three ways at
(nearly) equal bits per element, parameters included:

- PolarQuant paper mode (the golden model, `polarref.encode/decode`);
- per-channel integer, KIVI-style (per channel, per group of G tokens);
- per-token integer (per token, over the d channels);

and measures, per layer: key errors, radius/angle errors in units of the
polar bin step, per-pair errors by pair index j, score errors for the file's
real queries under a causal mask, attention KL and top-k overlap, and the
attention output error with full-precision values. Then an outlier analysis
of the keys themselves. Output: PNG figures and `report.md` in --out.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import polarref
from polarref import data as pdata
from polarref.cli import parse_bits, positive_int
from polarref.golden import split_pairs, to_polar

from . import baselines, metrics

DEFAULT_BITS = ("r2t2", "r3t3", "r4t4", "r2t4", "r4t2")
SWEEP_POLAR = ("r2t2", "r3t3", "r4t4")   # plus every configuration asked for
SWEEP_INT = (2, 3, 4, 5)
# Histogram of errors in units of the polar step: bins of 0.05 centred on multiples of 0.05, so the
# group extremes, whose error is exactly +-0.5 step, fall in one bin whatever their rounding.
STEP_BINS = np.linspace(-1.525, 1.525, 62)
DEFAULT_LAST_QUERIES = 256


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polarref analyze",
        description="PolarQuant vs integer key quantization at equal bits: error distributions, "
                    "attention errors, outlier analysis. Writes PNG figures and report.md.")
    parser.add_argument("--keys", type=Path, default=None,
                        help="a .npz capture (keys/queries/values, (layers, tokens, heads, d)) or a .npy "
                             "of keys; default: the bundled SmolLM2 sample")
    parser.add_argument("--out", type=Path, default=Path("polarref-analysis"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--bits", type=parse_bits, nargs="+", default=None, metavar="rAtB",
                        help=f"bit configurations (default: {' '.join(DEFAULT_BITS)})")
    parser.add_argument("--group-size", type=positive_int(2), default=128,
                        help="tokens per quantization group G (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for stand-in queries/values when the file has none (default: %(default)s)")
    parser.add_argument("--last-queries", type=positive_int(1), default=DEFAULT_LAST_QUERIES,
                        help="score the queries of the last N tokens, each against keys 0..itself "
                             "(default: %(default)s)")
    parser.add_argument("--pairing", choices=("half", "interleaved"), default="half",
                        help="RoPE pair layout of the keys (default: %(default)s, the capture's layout)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------
@dataclass
class Input:
    keys: np.ndarray          # (layers, H_kv, L, d) float64
    queries: np.ndarray       # (layers, H_q, L, d) float64
    values: np.ndarray        # (layers, H_kv, L, d) float64
    layer_ids: list
    source: str
    notes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)


class InputError(ValueError):
    """Bad command-line input; the message names the argument."""


def load_input(path, seed) -> Input:
    try:
        arrays = pdata.load_keys_file(path)
    except FileNotFoundError as error:
        raise InputError(f"argument --keys: {error}") from None
    except (ValueError, OSError) as error:
        raise InputError(f"argument --keys: cannot read {str(path)!r}: {error}") from None
    keys = pdata.as_heads(arrays["keys"])                       # (layers, H_kv, L, d)
    n_layers, h_kv, length, d = keys.shape
    if d % 2 or d < 2:
        raise InputError(f"argument --keys: head dim d={d} must be even")
    if not np.isfinite(keys).all():
        raise InputError("argument --keys: keys contain NaN/Inf")
    rng = np.random.default_rng(seed)
    notes = []
    queries = arrays.get("queries")
    if queries is not None:
        queries = pdata.as_heads(queries)
        if queries.shape[0] != n_layers or queries.shape[2:] != (length, d) or queries.shape[1] % h_kv:
            raise InputError(f"argument --keys: queries {queries.shape} (layers, H_q, L, d) do not fit "
                             f"keys {keys.shape}")
    else:
        # Stand-in queries: Gaussian with each channel scaled like that channel of the keys.
        scale = metrics.channel_rms(keys)[:, :, None, :]
        queries = rng.standard_normal(keys.shape) * scale
        notes.append(f"the file has no queries: score and attention metrics use seeded Gaussian stand-in "
                     f"queries (seed {seed}) with each channel's RMS equal to the keys'")
    values = arrays.get("values")
    if values is not None:
        values = pdata.as_heads(values)
        if values.shape != keys.shape:
            raise InputError(f"argument --keys: values {values.shape} do not match keys {keys.shape}")
    else:
        values = rng.standard_normal(keys.shape)
        notes.append(f"the file has no values: attention outputs use seeded N(0, 1) stand-in values (seed {seed})")
    layer_ids = list(range(n_layers))
    if "layers" in arrays and np.shape(arrays["layers"]) == (n_layers,):
        layer_ids = [int(v) for v in arrays["layers"]]
    meta = {k: arrays[k].item() for k in ("model_name", "model_file", "rope_layout", "storage_dtype",
                                         "rope_base", "n_model_layers")
            if k in arrays and np.ndim(arrays[k]) == 0}
    source = str(path) if path is not None else f"bundled sample {pdata.SAMPLE.name}"
    return Input(keys, queries, values, layer_ids, source, notes, meta)


# --------------------------------------------------------------------------
# Methods at equal bits
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    kind: str            # "polar", "per_channel", "per_token"
    bits: tuple          # (r_bits, t_bits) for polar, (b,) for integers
    bpe: float           # bits per element, parameters included

    @property
    def label(self) -> str:
        if self.kind == "polar":
            return f"polar r{self.bits[0]}t{self.bits[1]}"
        return f"int{self.bits[0]} {'per-channel' if self.kind == 'per_channel' else 'per-token'}"


def polar_method(r_bits, t_bits, group_size):
    return Method("polar", (r_bits, t_bits),
                  baselines.bits_per_element("polar", r_bits=r_bits, t_bits=t_bits, group_size=group_size))


def int_method(kind, bits, group_size, head_dim):
    return Method(kind, (bits,), baselines.bits_per_element(kind, bits=bits, group_size=group_size,
                                                            head_dim=head_dim))


def matched_methods(configs, group_size, head_dim):
    """{config name: (polar, per-channel, per-token)} with the integers nearest in bits per element."""
    out = {}
    for r_bits, t_bits in configs:
        polar = polar_method(r_bits, t_bits, group_size)
        ch = baselines.matching_int_bits(polar.bpe, 2 * baselines.PARAM_BITS / group_size)
        tok = baselines.matching_int_bits(polar.bpe, 2 * baselines.PARAM_BITS / head_dim)
        out[f"r{r_bits}t{t_bits}"] = (polar, int_method("per_channel", ch, group_size, head_dim),
                                      int_method("per_token", tok, group_size, head_dim))
    return out


def quantize(method: Method, keys, group_size, pairing):
    """keys (H_kv, L, d) -> (keys_hat (H_kv, L, d) float64, PolarCode or None)."""
    if method.kind == "polar":
        code = polarref.encode(keys, r_bits=method.bits[0], t_bits=method.bits[1], group_size=group_size,
                               pairing=pairing)
        return polarref.decode(code), code
    length = keys.shape[-2]
    lq = (length // group_size) * group_size
    if method.kind == "per_channel":
        return baselines.quantize_per_channel(keys, method.bits[0], group_size), None
    # Per-token needs no residual window; the same trailing tokens stay exact anyway, so that all
    # three methods quantize the same tokens and their attention errors compare.
    head = baselines.quantize_per_token(keys[..., :lq, :], method.bits[0])
    return np.concatenate([head, keys[..., lq:, :]], axis=-2), None


# --------------------------------------------------------------------------
# Per-layer evaluation
# --------------------------------------------------------------------------
@dataclass
class Reference:
    """What every method of one layer is compared with."""
    keys: np.ndarray        # (H_kv, L, d)
    q: np.ndarray           # (H_kv, M, N, d): the last N tokens' queries, grouped by the KV head they read
    values: np.ndarray      # (H_kv, L, d)
    qpos: np.ndarray        # (N,) token index of each query
    mask: np.ndarray        # (N, L) causal
    scores: np.ndarray      # (H_kv, M, N, L)
    spread: np.ndarray      # (H_kv, M, N)
    log_p: np.ndarray       # (H_kv, M, N, L): log softmax(scores / sqrt(d)), -inf where masked
    out: np.ndarray         # (H_kv, M, N, d)
    lq: int                 # quantized tokens
    r: np.ndarray           # (H_kv, Lq, P)
    phi: np.ndarray         # (H_kv, Lq, P)


def batched_scores(q, keys):
    """q (H_kv, M, N, d), keys (H_kv, L, d) -> q . k (H_kv, M, N, L), one matmul per KV head."""
    h_kv, m, n, d = q.shape
    kt = np.ascontiguousarray(np.swapaxes(keys, -1, -2))                  # (H_kv, d, L)
    return (q.reshape(h_kv, m * n, d) @ kt).reshape(h_kv, m, n, keys.shape[-2])


def attend(weights, values):
    """weights (H_kv, M, N, L), values (H_kv, L, d) -> outputs (H_kv, M, N, d)."""
    h_kv, m, n, length = weights.shape
    return (weights.reshape(h_kv, m * n, length) @ values).reshape(h_kv, m, n, values.shape[-1])


def make_reference(keys, queries, values, n_last, group_size, pairing) -> Reference:
    h_kv, length, d = keys.shape
    h_q = queries.shape[0]
    n = min(n_last, length)
    qpos = np.arange(length - n, length)
    q = queries[:, qpos, :].reshape(h_kv, h_q // h_kv, n, d)
    mask = metrics.causal_mask(qpos, length)
    scores = batched_scores(q, keys)                                   # (H_kv, M, N, L)
    log_p = metrics.log_softmax(scores / np.sqrt(d), mask)
    with np.errstate(under="ignore"):
        out = attend(np.exp(log_p), values)
    lq = (length // group_size) * group_size
    r, phi = to_polar(*split_pairs(keys[..., :lq, :], pairing))
    return Reference(keys, q, values, qpos, mask, scores, metrics.score_spread(scores, mask), log_p, out,
                     lq, r, phi)


def step_units(keys_hat, ref: Reference, code, pairing):
    """Radius and angle errors of keys_hat in units of the polar bin steps of `code`: (H_kv, Lq, P) each."""
    r_hat, phi_hat = to_polar(*split_pairs(keys_hat[..., :ref.lq, :], pairing))
    g = code.group_size
    r_step = np.repeat(code.r_step, g, axis=-2)
    phi_step = np.repeat(code.phi_step, g, axis=-2)
    return (metrics.step_units_error(r_hat, ref.r, r_step),
            metrics.step_units_error(phi_hat, ref.phi, phi_step, period=2 * np.pi))


def evaluate(keys_hat, ref: Reference, pairing, polar_code=None) -> dict:
    """All per-layer metrics of one reconstruction against the reference."""
    d = keys_hat.shape[-1]
    lq = ref.lq
    k, k_hat = ref.keys[..., :lq, :], keys_hat[..., :lq, :]
    x, y = split_pairs(k, pairing)
    x_hat, y_hat = split_pairs(k_hat, pairing)
    radius_rms = np.sqrt(np.mean(x**2 + y**2, axis=-2, keepdims=True))              # (H_kv, 1, P)
    pair_tok = metrics.pair_error(x_hat, y_hat, x, y) / np.where(radius_rms > 0, radius_rms, 1.0)

    s_hat = batched_scores(ref.q, keys_hat)                                       # (H_kv, M, N, L)
    log_q = metrics.log_softmax(s_hat / np.sqrt(d), ref.mask)
    with np.errstate(under="ignore"):
        o_hat = attend(np.exp(log_q), ref.values)

    # Contribution of pair j to the score error, RMS over visible keys, in units of the spread:
    # sum_{i<=t} (qx dx_i + qy dy_i)^2 = qx^2 Sxx(t) + 2 qx qy Sxy(t) + qy^2 Syy(t), cumulative sums.
    dx, dy = split_pairs(keys_hat - ref.keys, pairing)                            # (H_kv, L, P)
    sxx, sxy, syy = (np.cumsum(a, axis=-2)[:, ref.qpos][:, None] for a in (dx * dx, dx * dy, dy * dy))
    qx, qy = split_pairs(ref.q, pairing)                                          # (H_kv, M, N, P)
    count = (ref.qpos + 1)[None, None, :, None]
    spread2 = np.where(ref.spread > 0, ref.spread, np.nan)[..., None] ** 2
    per_pair = (qx * qx * sxx + 2 * qx * qy * sxy + qy * qy * syy) / count / spread2

    result = {
        "key_num2": float(np.sum((k_hat - k) ** 2)),
        "key_den2": float(np.sum(k**2)),
        "key_token": metrics.relative_error(k_hat, k, axis=-1).ravel(),            # (H_kv * Lq,)
        "pair_rel": metrics.pair_relative_error(x_hat, y_hat, x, y),               # (H_kv, P)
        "pair_token": pair_tok.ravel(),
        "score_err": metrics.score_error(s_hat, ref.scores, ref.mask).ravel(),    # (H_kv * M * N,)
        "kl": metrics.kl_from_log_weights(ref.log_p, log_q, ref.mask).ravel(),
        "topk": metrics.topk_overlap(ref.scores, s_hat, metrics.TOP_K, ref.mask).ravel(),
        "out_err": metrics.relative_error(o_hat, ref.out, axis=-1).ravel(),
        "score_pair2": np.nanmean(per_pair.reshape(-1, per_pair.shape[-1]), axis=0),  # (P,)
    }
    if polar_code is not None:
        r_err, phi_err = step_units(keys_hat, ref, polar_code, pairing)
        for name, err in (("r_step", r_err), ("phi_step", phi_err)):
            err = err[np.isfinite(err)]
            result[name + "_hist"] = np.histogram(np.clip(err, STEP_BINS[0], STEP_BINS[-1]), STEP_BINS)[0]
            result[name + "_beyond"] = np.array([np.sum(np.abs(err) > 0.5 + 1e-9), err.size])
    return result


def merge(acc: dict, layer: dict):
    for name, value in layer.items():
        acc.setdefault(name, []).append(value)


def summarize(acc: dict) -> dict:
    """Per-method totals over layers: the numbers of the tables."""
    cat = {k: np.concatenate([np.ravel(v) for v in acc[k]]) for k in
           ("key_token", "pair_token", "score_err", "kl", "topk", "out_err")}
    s = {
        "key_rel": float(np.sqrt(np.sum(acc["key_num2"]) / np.sum(acc["key_den2"]))),
        "key_token_p99": float(np.percentile(cat["key_token"], 99)),
        "pair_rel": float(np.mean(np.stack(acc["pair_rel"]))),
        "pair_rel_by_j": np.mean(np.stack(acc["pair_rel"]), axis=(0, 1)),       # (P,)
        "score_err": float(np.nanmean(cat["score_err"])),
        "score_err_p99": float(np.nanpercentile(cat["score_err"], 99)),
        "kl": float(np.mean(cat["kl"])),
        "kl_median": float(np.median(cat["kl"])),
        "kl_p99": float(np.percentile(cat["kl"], 99)),
        "topk": float(np.mean(cat["topk"])),
        "out_err": float(np.mean(cat["out_err"])),
        "out_err_p99": float(np.percentile(cat["out_err"], 99)),
        "score_by_j": np.sqrt(np.mean(np.stack(acc["score_pair2"]), axis=0)),   # (P,)
        "dist": cat,
    }
    for name in ("r_step", "phi_step"):
        if name + "_hist" in acc:
            s[name + "_hist"] = np.sum(acc[name + "_hist"], axis=0)
            beyond = np.sum(acc[name + "_beyond"], axis=0)
            s[name + "_beyond"] = float(beyond[0] / max(beyond[1], 1))
    return s


# --------------------------------------------------------------------------
# Outliers
# --------------------------------------------------------------------------
def pair_channels(j, d, pairing):
    return (j, j + d // 2) if pairing == "half" else (2 * j, 2 * j + 1)


def outlier_analysis(keys, pairing) -> dict:
    """keys (layers, H_kv, L, d): channel RMS, outlier flags, kurtosis of channels, radii and angles."""
    d = keys.shape[-1]
    p = d // 2
    rms = metrics.channel_rms(keys)                                     # (layers, H_kv, d)
    ratio = rms / np.median(rms, axis=-1, keepdims=True)
    flags = metrics.outlier_channels(keys)                             # (layers, H_kv, d)
    x, y = split_pairs(keys, pairing)                                  # (layers, H_kv, L, P)
    r, phi = to_polar(x, y)
    ch_kurt = metrics.kurtosis(keys, axis=-2)                          # (layers, H_kv, d)
    cx, cy = pair_channels(np.arange(p), d, pairing)
    return {
        "rms": rms, "ratio": ratio, "flags": flags,
        "channel_kurtosis": ch_kurt,
        "pair_channel_kurtosis": np.maximum(ch_kurt[..., cx], ch_kurt[..., cy]),   # (layers, H_kv, P)
        "pair_outlier": flags[..., cx] | flags[..., cy],
        "radius_kurtosis": metrics.kurtosis(r, axis=-2),
        "angle_kurtosis": metrics.kurtosis(phi, axis=-2),
    }


def angle_wrap(keys, group_size, pairing, pair_outlier) -> dict:
    """Per (layer, head, group, pair): linear angle range (max - min) and circular range (shortest arc).

    A group straddles 0/2*pi when its linear range exceeds pi while its
    circular range is under pi / 2: PolarQuant's angle step is then at least
    twice what a circular range would give.
    """
    lq = (keys.shape[-2] // group_size) * group_size
    _, phi = to_polar(*split_pairs(keys[..., :lq, :], pairing))           # (layers, H_kv, Lq, P)
    phi = phi.reshape(*phi.shape[:-2], lq // group_size, group_size, phi.shape[-1])
    linear = phi.max(axis=-2) - phi.min(axis=-2)                           # (layers, H_kv, n, P)
    circular = metrics.circular_range(phi, axis=-2)
    straddle = (linear > np.pi) & (circular < np.pi / 2)
    outlier = np.broadcast_to(pair_outlier[:, :, None, :], straddle.shape)
    return {"linear": linear, "circular": circular, "straddle": straddle, "outlier": outlier}


def pick_scatter_pairs(out: dict, d, pairing):
    """(layer index, head, outlier pair j, normal pair j): the strongest outlier and a typical pair beside it."""
    ratio = out["ratio"]
    pair_ratio = np.maximum(*(ratio[..., c] for c in pair_channels(np.arange(d // 2), d, pairing)))
    li, h, j_out = np.unravel_index(np.argmax(pair_ratio), pair_ratio.shape)
    typical = np.abs(np.log(pair_ratio[li, h]))      # a normal pair: both channels nearest the median
    typical[j_out] = np.inf
    return int(li), int(h), int(j_out), int(np.argmin(typical))


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------
FIGURE_TEXT = {
    "step_errors.png": "Radius and angle errors in units of the PolarQuant bin step: PolarQuant stays inside "
                       "+-0.5 step by construction (top), while the integer baselines at the same bits, "
                       "measured in the r4t4 polar steps, spread wider in angle and radius (bottom).",
    "key_errors.png": "Distribution over tokens of the relative key reconstruction error and over "
                      "(token, pair) of the per-pair vector error (relative to the pair's RMS radius), "
                      "PolarQuant against the integer baselines at equal bits.",
    "attention_errors.png": "Score error (in units of each query's score spread), attention KL divergence, "
                            "top-8 overlap and attention-output error for the captured queries under a causal "
                            "mask, per bit configuration and method at equal bits.",
    "error_by_pair.png": "Key error (RMS pair error over the pair's RMS radius, left) and each pair's contribution "
                         "to the attention-score error (right) by RoPE pair index j (j = 0 rotates fastest), for "
                         "PolarQuant and the per-channel and per-token integer baselines at equal bits per element.",
    "bits_tradeoff.png": "Key error, score error and KL against the exact bits per element (parameters "
                         "included) of every method and bit width, so comparisons at unequal bits can be "
                         "read off the curves.",
    "channel_profile.png": "RMS of every key channel per layer and KV head, relative to that head's median "
                           "channel, with the outlier channels (RMS > 3x median) marked.",
    "outlier_scatter.png": "One quantization group of keys of an outlier RoPE pair and of a normal pair, in "
                           "Cartesian (x, y) and polar (phi, r) form, with the r4t4 PolarQuant bins and "
                           "reconstruction points drawn over them and the int4 per-channel (KIVI-style) lattice of "
                           "the same group for comparison.",
    "kurtosis.png": "Kurtosis of each pair's channels (the larger of its two) against the kurtosis of its "
                    "radius and of its angle, outlier pairs ringed.",
}


DEFINITIONS = (
    ("- **bits/elem**: bits per key element of the quantized tokens, parameters included. PolarQuant "
     "r{a}t{b}: (a + b)/2 + 4 fp16 parameters per pair and group = (a + b)/2 + 64/(2G), codes packed "
     "without padding (the authors' code stores one byte per pair, i.e. 4 + 64/(2G)). Per-channel "
     "int b: b + 2 fp16 (scale, zero) per channel and group = b + 32/G. Per-token int b: b + 32/d."),
    ("- **equal bits**: integers have whole bit widths, so each configuration is compared with the "
     "integer width whose total bits/elem is nearest to PolarQuant's (ties go to the wider integer, "
     "never favouring PolarQuant); the exact bits of each are in the table, and "
     "`bits_tradeoff.png` shows every width."),
    ("- **integer quantizers**: min/max asymmetric, scale = (max - min)/(2^b - 1), round to nearest "
     "(KIVI's rule); per channel over groups of G tokens, or per token over the d channels."),
    ("- **key rel err**: ||K_hat - K||_F / ||K||_F over all quantized tokens, heads and layers; "
     "**p99 (token)**: 99th percentile of the per-token ||k_hat - k|| / ||k||."),
    ("- **pair err**: for each layer, head and pair j, RMS over tokens of ||(x, y)_hat - (x, y)|| "
     "divided by the pair's RMS radius; mean over layers, heads and pairs."),
    ("- **radius / angle error in steps**: (r_hat - r)/r_step and (phi_hat - phi)/phi_step (the angle "
     "difference taken the short way round), with the PolarQuant steps of that group and pair."),
    ("- **score err**: per query, RMS over its visible keys of (q.k_hat - q.k) divided by the standard "
     "deviation of its reference scores q.k over those keys; mean over queries, heads, layers."),
    ("- **attention KL**: KL(p || p_hat) of softmax(q.k/sqrt(d)) over the visible keys, per query; "
     f"**top-{metrics.TOP_K} overlap**: |top-{metrics.TOP_K}(p) & top-{metrics.TOP_K}(p_hat)| / {metrics.TOP_K}."),
    "- **output rel err**: ||p_hat V - p V|| / ||p V|| per query, values in full precision.",
    ("- **score error by pair**: the part of q.(k_hat - k) that pair j contributes, "
     "q_x dx_j + q_y dy_j, RMS over visible keys and queries, in units of the score spread."),
)


def fmt(v, digits=3):
    if not np.isfinite(v):
        return "nan"
    if v != 0 and (abs(v) < 10 ** -(digits) or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.{digits}f}" if abs(v) < 1 else f"{v:.{max(digits - 1, 1)}f}"


def write_report(path, args, inp: Input, matched, summaries, outliers, scatter, timing, check):
    n_layers, h_kv, length, d = inp.keys.shape
    h_q = inp.queries.shape[1]
    g = args.group_size
    lq = (length // g) * g
    n_last = min(args.last_queries, length)
    lines = ["# PolarQuant key-cache analysis", ""]
    lines += [
        f"- keys: {inp.source}" + (f" ({inp.meta['model_name']}, {inp.meta.get('model_file', '')})"
                                   if "model_name" in inp.meta else ""),
        (f"- shapes: {n_layers} layers (model layers {inp.layer_ids}), {h_kv} KV heads, {h_q} query heads, "
         f"{length} tokens, head dim {d}; pairing `{args.pairing}`"),
        (f"- group size G = {g}: {lq} tokens quantized; the trailing L mod G = {length - lq} tokens stay in full "
         f"precision in every method (PolarQuant's and KIVI's residual window)"),
        (f"- queries: the last {n_last} tokens' queries, each scored against keys 0..itself (causal), "
         f"softmax(q.k / sqrt({d})); values in full precision (PolarQuant paper mode)"),
        f"- seed {args.seed}; run time {timing:.1f} s;"
        f" command: `polarref analyze {' '.join(args.argv)}`".rstrip(),
    ]
    lines += [f"- note: {n}" for n in inp.notes]
    lines += ["", "## Summary at equal bits per element", "",
              ("Each cell: PolarQuant / per-channel int (KIVI-style) / per-token int. Lower is better except "
               "top-8 overlap."), "",
              ("| config | bits/elem | key rel err | score err / spread | attention KL (nats) | top-8 overlap "
               "| output rel err |"),
              "|---|---|---|---|---|---|---|"]
    for name, methods in matched.items():
        cells = []
        for key, digits in (("key_rel", 3), ("score_err", 3), ("kl", 4), ("topk", 3), ("out_err", 3)):
            cells.append(" / ".join(fmt(summaries[m.label][key], digits) for m in methods))
        bits = " / ".join(f"{m.bpe:.3g}" for m in methods)
        ints = f"int{methods[1].bits[0]}, int{methods[2].bits[0]}"
        lines.append(f"| {name} ({ints}) | {bits} | " + " | ".join(cells) + " |")
    lines += ["", verdict(matched, summaries), ""]

    lines += ["## All methods", "",
              ("| method | bits/elem | key rel err | key err p99 (token) | pair err | score err | score err p99 "
               "| KL mean | KL median | KL p99 | top-8 | output err | output err p99 |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, s in sorted(summaries.items(), key=lambda kv: (kv[1]["bpe"], kv[0])):
        lines.append(
            f"| {label} | {s['bpe']:.3f} | {fmt(s['key_rel'])} | {fmt(s['key_token_p99'])} | {fmt(s['pair_rel'])} "
            f"| {fmt(s['score_err'])} | {fmt(s['score_err_p99'])} | {fmt(s['kl'], 4)} | {fmt(s['kl_median'], 4)} "
            f"| {fmt(s['kl_p99'], 4)} | {fmt(s['topk'])} | {fmt(s['out_err'])} | {fmt(s['out_err_p99'])} |")

    lines += ["", "## Definitions", "", *DEFINITIONS]

    lines += ["", "## Outliers", "",
              (f"Criterion: a channel is an outlier when its RMS over all {length} tokens exceeds "
               f"{metrics.OUTLIER_FACTOR:g}x the median channel RMS of the same layer and KV head."), "",
              "| layer | head | outlier channels (pair j) | max RMS / median |", "|---|---|---|---|"]
    flags = outliers["flags"]
    for li in range(n_layers):
        for h in range(h_kv):
            chans = np.flatnonzero(flags[li, h])
            listed = ", ".join(f"{c} ({c % (d // 2) if args.pairing == 'half' else c // 2})" for c in chans)
            lines.append(f"| {inp.layer_ids[li]} | {h} | {listed or '-'} | {outliers['ratio'][li, h].max():.1f} |")
    po = outliers["pair_outlier"]
    kurt = {k: outliers[k] for k in ("pair_channel_kurtosis", "radius_kurtosis", "angle_kurtosis")}
    counts = f"{int(flags.sum())} outlier channels in {n_layers * h_kv} layer-heads; " \
             f"{int(po.sum())} of {po.size} pairs contain one."
    lines += ["", counts, "",
              "Median Pearson kurtosis (3 = Gaussian, 1.8 = uniform) over pairs:", "",
              "| pairs | channel (larger of the two) | radius | angle |", "|---|---|---|---|"]
    for name, sel in (("outlier pairs", po), ("other pairs", ~po)):
        if sel.any():
            vals = [fmt(float(np.nanmedian(kurt[k][sel])), 2) for k in kurt]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
    lines += wrap_lines(outliers["wrap"], inp.layer_ids)
    li, h, j_out, j_norm = scatter
    where = f"Scatter plot: layer {inp.layer_ids[li]}, KV head {h}, outlier pair j = {j_out} and normal " \
            f"pair j = {j_norm}, the last full group of {g} tokens (tokens {lq - g}..{lq - 1})."
    lines += ["", where]

    lines += ["", "## Figures", ""]
    for name, text in FIGURE_TEXT.items():
        lines += [f"![{name}]({name})", "", f"**{name}**: {text}", ""]
    agreement = f"Table-based scoring (`polarref.scores`) agrees with decode-then-dot for the last query of " \
                f"every layer at every PolarQuant configuration to {check:.1e} of max |q.k| (the metrics " \
                f"above use decode-then-dot)."
    lines += ["## Check", "", agreement, ""]
    Path(path).write_text("\n".join(lines))


def wrap_lines(wrap, layer_ids) -> list:
    st, out = wrap["straddle"], wrap["outlier"]
    text = ("Angle ranges straddling 0/2 pi (the spec's known weak spot): a group of one pair straddles when "
            "its angle range max - min exceeds pi while the shortest arc holding all its angles is under pi/2. "
            f"Outlier pairs: {int(st[out].sum())} of {int(out.sum())} groups; other pairs: "
            f"{int(st[~out].sum())} of {int((~out).sum())} groups.")
    lines = ["", text]
    if st.any():
        ratio = wrap["linear"][st] / np.maximum(wrap["circular"][st], 1e-12)
        lines[-1] += (f" In the straddling groups PolarQuant's angle step is {np.median(ratio):.0f}x (median) what "
                      f"a circular angle range would give.")
    cells = sorted({(int(a), int(b), int(c)) for a, b, _, c in np.argwhere(st & out)})
    if cells:
        listed = ", ".join(f"layer {layer_ids[a]} head {b} pair {c}" for a, b, c in cells[:12])
        lines[-1] += f" Straddling outlier pairs: {listed}" + (" and more." if len(cells) > 12 else ".")
    return lines


def verdict(matched, summaries) -> str:
    """One sentence on who wins at equal bits, counted, not asserted."""
    parts = []
    for idx, name in ((1, "per-channel"), (2, "per-token")):
        for key, what in (("key_rel", "key error"), ("kl", "attention KL")):
            wins = sum(summaries[m[0].label][key] < summaries[m[idx].label][key] for m in matched.values())
            parts.append(f"{what} vs {name} int in {wins} of {len(matched)}")
    return "PolarQuant is lower in " + "; ".join(parts) + " configurations."


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def run(args) -> int:
    from tqdm import tqdm

    from . import figures

    start = time.perf_counter()
    inp = load_input(args.keys, args.seed)
    n_layers, _, length, d = inp.keys.shape
    g = args.group_size
    if length < g:
        raise InputError(f"argument --group-size: G={g} is larger than the {length} tokens in --keys "
                         f"({inp.source}); nothing would be quantized")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"argument --out: cannot create folder {str(args.out)!r}: {error}") from None
    configs = list(dict.fromkeys(args.bits or [parse_bits(b) for b in DEFAULT_BITS]))
    matched = matched_methods(configs, g, d)
    methods = {}
    for triple in matched.values():
        for m in triple:
            methods[m.label] = m
    for b in SWEEP_POLAR:
        m = polar_method(*parse_bits(b), g)
        methods.setdefault(m.label, m)
    for kind in ("per_channel", "per_token"):
        for b in SWEEP_INT:
            m = int_method(kind, b, g, d)
            methods.setdefault(m.label, m)
    # Baselines matched to a config are also measured in that config's polar steps.
    step_owner = {}
    for polar, ch, tok in matched.values():
        for m in (polar, ch, tok):
            step_owner.setdefault(m.label, polar.label)

    acc = {label: {} for label in methods}
    check = 0.0
    for li in tqdm(range(n_layers), desc="layers", unit="layer", disable=args.quiet, file=sys.stderr):
        ref = make_reference(inp.keys[li], inp.queries[li], inp.values[li], args.last_queries, g, args.pairing)
        codes, recon = {}, {}
        for label, m in methods.items():
            recon[label], code = quantize(m, inp.keys[li], g, args.pairing)
            if code is not None:
                codes[label] = code
                q_last = inp.queries[li][:, -1, :]                         # (H_q, d)
                table = polarref.scores(q_last, code)
                dense = polarref.dense_scores(q_last, recon[label])
                check = max(check, float(np.abs(table - dense).max() / np.abs(dense).max()))
        for label, m in methods.items():
            owner = step_owner.get(label)
            merge(acc[label], evaluate(recon[label], ref, args.pairing, codes.get(owner) if owner else None))
    summaries = {}
    for label, m in methods.items():
        summaries[label] = summarize(acc[label])
        summaries[label]["bpe"] = m.bpe
        summaries[label]["method"] = m

    outliers = outlier_analysis(inp.keys, args.pairing)
    scatter = pick_scatter_pairs(outliers, d, args.pairing)
    outliers["wrap"] = angle_wrap(inp.keys, g, args.pairing, outliers["pair_outlier"])
    figures.draw_all(args.out, inp=inp, matched=matched, summaries=summaries, outliers=outliers,
                     scatter=scatter, group_size=g, pairing=args.pairing, step_bins=STEP_BINS)
    elapsed = time.perf_counter() - start
    write_report(args.out / "report.md", args, inp, matched, summaries, outliers, scatter, elapsed, check)
    print_summary(matched, summaries, args.out)
    return 0


def print_summary(matched, summaries, out):
    print(f"{'method':26} {'bits/elem':>9} {'key err':>8} {'score err':>9} {'KL':>8} {'top-8':>6} {'out err':>8}")
    for name, triple in matched.items():
        for m in triple:
            s = summaries[m.label]
            print(f"{name + ': ' + m.label:26} {m.bpe:9.3f} {s['key_rel']:8.4f} {s['score_err']:9.4f} "
                  f"{s['kl']:8.5f} {s['topk']:6.3f} {s['out_err']:8.4f}")
    print(f"wrote {out / 'report.md'} and {len(FIGURE_TEXT)} figures in {out}/")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:           # `polarref analyze -- --out DIR` passes the separator through
        argv = argv[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:      # argparse already printed the error (or the help)
        return int(exit_.code or 0)
    args.argv = argv
    try:
        return run(args)
    except InputError as error:
        print(f"polarref analyze: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
