"""Integer baselines for key quantization, and the bits each method spends per element.

Two min/max asymmetric uniform integer quantizers, as KV-cache papers use them:

- per channel (KIVI-style keys, Liu et al. 2024): for each channel and each
  group of G consecutive tokens, b-bit codes between that group's min and max;
- per token: for each token, b-bit codes between the min and max over its d
  channels.

Both keep `scale = (max - min) / (2**b - 1)` and `zero = min` (two fp16
parameters) and round to the nearest level, so min and max are represented
exactly and the error is at most scale / 2 ("nearest", what KIVI does). The
option `rounding="midpoint"` instead cuts [min, max] into 2**b equal bins and
returns bin midpoints, as PolarQuant does; its bins are narrower by
(2**b - 1) / 2**b and its error is at most (max - min) / 2**(b+1).

The trailing L mod G tokens of a per-channel quantizer stay in full
precision (KIVI's residual window, the same rule as PolarQuant's).
"""
from __future__ import annotations

import numpy as np

PARAM_BITS = 16   # fp16 parameters, as the authors of both methods store them
ROUNDINGS = ("nearest", "midpoint")


def _check(bits, rounding):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise ValueError(f"bits must be an integer >= 1, got bits={bits!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got rounding={rounding!r}")


def quantize_uniform(values, lo, hi, bits, rounding="nearest"):
    """values (...), lo/hi broadcastable -> (codes int, reconstruction float64, step).

    nearest:  step = (hi - lo) / (2**b - 1), code = round((v - lo) / step), v_hat = lo + code * step
    midpoint: step = (hi - lo) / 2**b, code = clip(floor((v - lo) / step), 0, 2**b - 1),
              v_hat = lo + (code + 0.5) * step
    A zero range (hi == lo) gives code 0 and reconstructs lo exactly.
    """
    _check(bits, rounding)
    values = np.asarray(values, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    levels = 2**bits
    step = (hi - lo) / (levels - 1 if rounding == "nearest" else levels)
    safe = np.where(step > 0, step, 1.0)
    position = (values - lo) / safe
    if rounding == "nearest":
        codes = np.clip(np.rint(position), 0, levels - 1)
        offset = 0.0
    else:
        codes = np.clip(np.floor(position), 0, levels - 1)
        offset = 0.5
    codes = np.where(step > 0, codes, 0).astype(np.int64)
    recon = np.where(step > 0, lo + (codes + offset) * step, lo)
    return codes, recon, np.broadcast_to(step, values.shape)


def quantize_per_channel(keys, bits, group_size, rounding="nearest"):
    """keys (..., L, d) -> keys_hat (..., L, d) float64, KIVI-style.

    Each channel of each group of `group_size` consecutive tokens gets its own
    min and max; the trailing L mod G tokens are returned unchanged.
    """
    keys = np.asarray(keys, dtype=np.float64)
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got group_size={group_size}")
    length, d = keys.shape[-2:]
    lq = (length // group_size) * group_size
    grouped = keys[..., :lq, :].reshape(*keys.shape[:-2], lq // group_size, group_size, d)
    lo = grouped.min(axis=-2, keepdims=True)                  # (..., n, 1, d)
    hi = grouped.max(axis=-2, keepdims=True)
    _, recon, _ = quantize_uniform(grouped, lo, hi, bits, rounding)
    return np.concatenate([recon.reshape(*keys.shape[:-2], lq, d), keys[..., lq:, :]], axis=-2)


def quantize_per_token(keys, bits, rounding="nearest"):
    """keys (..., L, d) -> keys_hat (..., L, d) float64: min and max over the d channels of each token."""
    keys = np.asarray(keys, dtype=np.float64)
    lo = keys.min(axis=-1, keepdims=True)                     # (..., L, 1)
    hi = keys.max(axis=-1, keepdims=True)
    _, recon, _ = quantize_uniform(keys, lo, hi, bits, rounding)
    return recon


# --------------------------------------------------------------------------
# Storage accounting: bits per key element, parameters included
# --------------------------------------------------------------------------
def bits_per_element(method, *, bits=None, r_bits=None, t_bits=None, group_size=None, head_dim=None,
                     param_bits=PARAM_BITS):
    """Bits per key element of the quantized tokens, parameter overhead included.

    polar       (r_bits + t_bits) / 2 + 4 * param_bits / (2 * group_size)
                (codes packed without padding; 4 parameters per pair and group)
    per_channel bits + 2 * param_bits / group_size   (scale, zero per channel and group)
    per_token   bits + 2 * param_bits / head_dim     (scale, zero per token)

    The polar count assumes sub-byte packing; the authors' code stores one
    byte per pair whatever the bits, i.e. 4 + 2 * param_bits / group_size.
    """
    if method == "polar":
        return (r_bits + t_bits) / 2 + 4 * param_bits / (2 * group_size)
    if method == "per_channel":
        return bits + 2 * param_bits / group_size
    if method == "per_token":
        return bits + 2 * param_bits / head_dim
    raise ValueError(f"method must be 'polar', 'per_channel' or 'per_token', got {method!r}")


def matching_int_bits(target, overhead, max_bits=8):
    """The integer width b whose total b + overhead is nearest to `target` bits per element.

    Ties go to the larger b: the baseline then never gets fewer bits than the
    method it is compared with.
    """
    candidates = np.arange(1, max_bits + 1)
    distance = np.abs(candidates + overhead - target)
    best = np.flatnonzero(np.isclose(distance, distance.min()))
    return int(candidates[best[-1]])
