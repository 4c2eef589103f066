"""Error metrics of a quantized key cache, as pure NumPy functions.

Every function takes arrays and returns arrays or floats; nothing here reads
files, draws or prints. Shapes are written on every argument: `...` are
leading axes (layers, heads, queries), L tokens, d head dim, P = d // 2 pairs.

Conventions (the report states them too):
- attention uses the 1/sqrt(d) scaling and a causal mask: a query at token t
  sees keys 0..t;
- KL divergence is KL(p_ref || p_quant) in nats, the information lost when the
  quantized attention stands in for the reference one;
- kurtosis is Pearson's m4 / m2**2 (3 for a Gaussian, 1.8 for a uniform
  distribution, 1 for a symmetric two-point distribution), not the excess.
"""
from __future__ import annotations

import numpy as np

OUTLIER_FACTOR = 3.0   # a channel is an outlier when its RMS > 3 x the median channel RMS of its head
TOP_K = 8              # top-k overlap of attention weights looks at the 8 largest


# --------------------------------------------------------------------------
# Plain error measures
# --------------------------------------------------------------------------
def relative_error(approx, exact, axis=None):
    """||approx - exact|| / ||exact|| (Frobenius over `axis`, all axes by default).

    Where ||exact|| is 0 the result is 0 if approx equals exact there, else inf.
    """
    approx = np.asarray(approx, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    num = np.sqrt(np.sum((approx - exact) ** 2, axis=axis))
    den = np.sqrt(np.sum(exact**2, axis=axis))
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, np.where(num > 0, np.inf, 0.0))


def step_units_error(approx, exact, step, period=None):
    """(approx - exact) / step where step > 0, NaN where step == 0 (same shapes).

    With `period` (2*pi for angles) the difference is first wrapped into
    [-period/2, period/2): an angle error is the shorter way round the circle.
    A bin-midpoint quantizer gives values in [-0.5, 0.5].
    """
    diff = np.asarray(approx, dtype=np.float64) - np.asarray(exact, dtype=np.float64)
    if period is not None:
        diff = (diff + period / 2) % period - period / 2
    step = np.broadcast_to(np.asarray(step, dtype=np.float64), diff.shape)
    safe = np.where(step > 0, step, 1.0)
    return np.where(step > 0, diff / safe, np.nan)


def kurtosis(values, axis=-1):
    """Pearson kurtosis m4 / m2**2 along `axis` (NaN where the values are constant)."""
    values = np.asarray(values, dtype=np.float64)
    centred = values - values.mean(axis=axis, keepdims=True)
    m2 = np.mean(centred**2, axis=axis)
    m4 = np.mean(centred**4, axis=axis)
    safe = np.where(m2 > 0, m2, 1.0)
    return np.where(m2 > 0, m4 / safe**2, np.nan)


# --------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------
def causal_mask(query_positions, n_keys):
    """query_positions (N,) ints -> bool (N, n_keys): key i visible to the query at t iff i <= t."""
    return np.arange(n_keys)[None, :] <= np.asarray(query_positions)[:, None]


def log_softmax(logits, mask):
    """logits (..., L), mask bool broadcastable to (..., L) -> log weights, -inf where masked."""
    logits = np.where(mask, logits, -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    with np.errstate(under="ignore"):
        total = np.exp(shifted).sum(axis=-1, keepdims=True)
    return shifted - np.log(total)


def attention_weights(scores, mask, head_dim):
    """scores (..., L) raw q.k, mask (..., L) -> softmax(scores / sqrt(d)) over visible keys."""
    with np.errstate(under="ignore"):
        return np.exp(log_softmax(scores / np.sqrt(head_dim), mask))


def kl_divergence(p, q, axis=-1):
    """KL(p || q) = sum p log(p / q) along `axis`, in nats; terms with p == 0 count 0.

    p, q: probability vectors (each sums to 1 along `axis`). Where p > 0 and
    q == 0 the result is inf.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    positive = p > 0
    with np.errstate(divide="ignore"):
        ratio = np.log(np.where(positive, p, 1.0)) - np.log(np.where(positive, q, 1.0))
    return np.sum(np.where(positive, p * ratio, 0.0), axis=axis)


def kl_from_log_weights(log_p, log_q, mask):
    """KL(p || q) from log weights (..., L) (-inf where masked), summing only the visible entries."""
    mask = np.broadcast_to(mask, log_p.shape)
    with np.errstate(under="ignore"):
        p = np.exp(log_p)
    diff = np.where(mask, log_p, 0.0) - np.where(mask, log_q, 0.0)
    return np.maximum(np.sum(np.where(mask, p * diff, 0.0), axis=-1), 0.0)  # >= 0 up to rounding


def kl_from_logits(logits_ref, logits_hat, mask, head_dim):
    """KL(softmax ref || softmax hat) for raw scores (..., L) under `mask`, computed in log space."""
    return kl_from_log_weights(log_softmax(logits_ref / np.sqrt(head_dim), mask),
                               log_softmax(logits_hat / np.sqrt(head_dim), mask), mask)


def topk_overlap(ref, approx, k=TOP_K, mask=None):
    """|top-k(ref) & top-k(approx)| / k along the last axis, (..., L) -> (...).

    With `mask`, only visible entries compete, and k shrinks to the number of
    visible entries where there are fewer. Among exactly tied values the
    choice is arbitrary (the same rule for both rankings).
    """
    ref = np.asarray(ref, dtype=np.float64)
    approx = np.asarray(approx, dtype=np.float64)
    n = ref.shape[-1]
    if mask is None:
        mask = np.ones(ref.shape, dtype=bool)
    mask = np.broadcast_to(mask, ref.shape)
    k_eff = np.minimum(k, mask.sum(axis=-1))                                   # (...)
    kk = min(k, n)

    def chosen(values):
        """bool (..., L): the kk largest visible entries (masked ones sort last and are dropped)."""
        keyed = np.where(mask, -values, np.inf)
        top = np.argpartition(keyed, kk - 1, axis=-1)[..., :kk]
        picked = np.zeros(values.shape, dtype=bool)
        np.put_along_axis(picked, top, True, axis=-1)
        return picked & mask

    both = np.sum(chosen(ref) & chosen(approx), axis=-1)
    return np.where(k_eff > 0, both / np.maximum(k_eff, 1), 1.0)


def score_spread(scores_ref, mask):
    """Standard deviation over the visible keys of each query's scores: (..., L) -> (...)."""
    mask = np.broadcast_to(mask, scores_ref.shape)
    count = mask.sum(axis=-1)
    mean = np.where(mask, scores_ref, 0.0).sum(axis=-1) / count
    return np.sqrt(np.where(mask, (scores_ref - mean[..., None]) ** 2, 0.0).sum(axis=-1) / count)


def score_error(scores_hat, scores_ref, mask):
    """RMS over visible keys of (s_hat - s_ref), in units of the spread (std) of s_ref.

    scores (..., L), mask broadcastable -> (...). The spread is that query's
    own standard deviation of reference scores over its visible keys, so the
    error reads against how far apart the scores it has to rank are. A query
    whose scores have no spread (one visible key) gets NaN.
    """
    mask = np.broadcast_to(mask, scores_ref.shape)
    count = mask.sum(axis=-1)
    spread = score_spread(scores_ref, mask)
    rms = np.sqrt(np.where(mask, (scores_hat - scores_ref) ** 2, 0.0).sum(axis=-1) / count)
    safe = np.where(spread > 0, spread, 1.0)
    return np.where(spread > 0, rms / safe, np.nan)


def circular_range(angles, axis=-1):
    """Length of the shortest arc that holds all `angles` (radians, in [0, 2*pi)) along `axis`.

    It is 2*pi minus the largest gap between neighbouring angles round the
    circle. Angles just either side of 0 have a linear range (max - min) near
    2*pi but a small circular range.
    """
    ordered = np.sort(np.asarray(angles, dtype=np.float64), axis=axis)
    gaps = np.diff(ordered, axis=axis)
    wrap = 2 * np.pi - (np.max(ordered, axis=axis) - np.min(ordered, axis=axis))
    largest = np.maximum(np.max(gaps, axis=axis, initial=0.0), wrap)
    return 2 * np.pi - largest


# --------------------------------------------------------------------------
# Channels and outliers
# --------------------------------------------------------------------------
def channel_rms(keys, axis=-2):
    """keys (..., L, d) -> RMS over tokens per channel (..., d)."""
    return np.sqrt(np.mean(np.asarray(keys, dtype=np.float64) ** 2, axis=axis))


def outlier_channels(keys, factor=OUTLIER_FACTOR):
    """keys (..., L, d) -> bool (..., d): channel RMS over tokens > factor x the median channel RMS.

    The median is taken over the d channels of the same leading index (one
    layer and head), so the criterion adapts to each head's scale.
    """
    rms = channel_rms(keys)                                    # (..., d)
    return rms > factor * np.median(rms, axis=-1, keepdims=True)


def pair_error(x_hat, y_hat, x, y):
    """Per-pair vector error ||(x_hat, y_hat) - (x, y)||, all (..., L, P) -> (..., L, P)."""
    return np.hypot(np.asarray(x_hat) - x, np.asarray(y_hat) - y)


def pair_relative_error(x_hat, y_hat, x, y, axis=-2):
    """RMS over tokens of the pair error / RMS radius of that pair: (..., L, P) -> (..., P)."""
    err = np.sqrt(np.mean(pair_error(x_hat, y_hat, x, y) ** 2, axis=axis))
    radius = np.sqrt(np.mean(np.asarray(x) ** 2 + np.asarray(y) ** 2, axis=axis))
    safe = np.where(radius > 0, radius, 1.0)
    return np.where(radius > 0, err / safe, np.where(err > 0, np.inf, 0.0))
