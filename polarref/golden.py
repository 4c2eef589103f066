"""The golden model of PolarQuant, paper mode, in plain float64 NumPy.

Read it with the paper (Wu et al., NeurIPS 2025) and `shared/polarquant-spec.md`
beside it. Shapes are written on every array: `...` are leading batch/head
axes, L tokens, d head dim, P = d // 2 pairs, G the group size,
n = L // G full groups, Lq = n * G quantized tokens, B = 2**bits bins.

    code = encode(keys)                  # keys (..., L, d)
    keys_hat = decode(code)              # (..., L, d)
    s = scores(queries, code)            # queries (..., H_q, d) -> (..., H_q, L)

Decisions beyond the authors' code (they are the contract here):
- a group whose radius (or angle) range is zero gets code 0 in every token
  and its step is 0, so it reconstructs that exact value;
- L < G quantizes nothing: every token is residual;
- phi = atan2(y, x) is taken into [0, 2*pi); an angle that rounds up to 2*pi
  is stored as 0 (the same direction).
"""
from __future__ import annotations

import numpy as np

from .checks import check_code, check_config, check_keys, check_queries, split_heads
from .code import PolarCode

TWO_PI = 2.0 * np.pi
WORKING_DTYPE = np.float64  # the precision this backend computes in (tolerances follow it)


class _float_errors:
    """Raise on overflow and invalid operations instead of warning, naming the step.

    Underflow to subnormals or zero is ordinary rounding of tiny keys and
    stays silent. Finite inputs overflow float64 only when they are near
    1e154 (products) or 1e308 (sums); then the caller learns which step.
    """

    def __init__(self, what):
        self.what = what
        self.state = np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")

    def __enter__(self):
        self.state.__enter__()

    def __exit__(self, kind, error, trace):
        self.state.__exit__(kind, error, trace)
        if kind is FloatingPointError:
            raise OverflowError(f"{self.what}: float64 {error}; inputs too large in magnitude") from error
        return False


def _finite(result, what):
    """BLAS does not honour np.errstate: check a matmul's result by hand."""
    if not np.isfinite(result).all():
        raise OverflowError(f"{what}: float64 overflow; inputs too large in magnitude")
    return result


# --------------------------------------------------------------------------
# Pairing: which two dimensions of a key form one 2-D pair
# --------------------------------------------------------------------------
def split_pairs(keys, pairing="half"):
    """keys (..., d) -> x, y (..., P): the two coordinates of every pair.

    "half": pair j is (k[j], k[j + d/2]) - the rotate_half RoPE layout
    (Llama/Qwen/Mistral in Hugging Face). "interleaved": pair j is
    (k[2j], k[2j+1]) - the GPT-J / original Meta layout.
    """
    p = keys.shape[-1] // 2
    if pairing == "half":
        return keys[..., :p], keys[..., p:]
    return keys[..., 0::2], keys[..., 1::2]


def merge_pairs(x, y, pairing="half"):
    """x, y (..., P) -> keys (..., 2P): the inverse of split_pairs."""
    if pairing == "half":
        return np.concatenate([x, y], axis=-1)
    return np.stack([x, y], axis=-1).reshape(*x.shape[:-1], 2 * x.shape[-1])


def to_polar(x, y):
    """Cartesian pairs -> radius r >= 0 and angle phi in [0, 2*pi), same shapes."""
    r = np.hypot(x, y)
    phi = np.arctan2(y, x) + 0.0  # + 0.0 turns -0.0 into 0.0
    phi = np.where(phi < 0.0, phi + TWO_PI, phi)
    return r, np.where(phi >= TWO_PI, 0.0, phi)  # -tiny + 2*pi can round to 2*pi


# --------------------------------------------------------------------------
# Group-wise uniform quantization of one quantity (radius or angle)
# --------------------------------------------------------------------------
def group_range(values, group_size, bits):
    """values (..., Lq, P) -> lo, step (..., n, P): range start and bin width per group.

    step = (max - min) / 2**bits, so the B bins tile [min, max] exactly.
    """
    n = values.shape[-2] // group_size                       # explicit: -1 fails on empty batches
    grouped = values.reshape(*values.shape[:-2], n, group_size, values.shape[-1])
    lo = grouped.min(axis=-2)
    hi = grouped.max(axis=-2)
    return lo, (hi - lo) / 2.0**bits


def quantize(values, lo, step, bits):
    """values (..., Lq, P), lo/step (..., n, P) -> codes uint8 (..., Lq, P).

    code = clip(floor((v - lo) / step), 0, 2**bits - 1); the group maximum
    falls on the upper edge and is clipped into the top bin. A group with
    step 0 (zero range) gets code 0.
    """
    group_size = values.shape[-2] // max(lo.shape[-2], 1)
    lo_t = np.repeat(lo, group_size, axis=-2)      # (..., Lq, P): each group's value per token
    step_t = np.repeat(step, group_size, axis=-2)
    safe = np.where(step_t > 0.0, step_t, 1.0)
    with np.errstate(over="ignore"):  # a step that underflowed makes huge ratios: clipped below
        position = (values - lo_t) / safe
    codes = np.clip(np.floor(position), 0, 2**bits - 1)
    return np.where(step_t > 0.0, codes, 0).astype(np.uint8)


def bin_centers(lo, step, codes):
    """lo/step (..., n, P), codes (..., Lq, P) -> lo + (code + 0.5) * step, per token."""
    group_size = codes.shape[-2] // max(lo.shape[-2], 1)
    lo_t = np.repeat(lo, group_size, axis=-2)
    step_t = np.repeat(step, group_size, axis=-2)
    return lo_t + (codes + 0.5) * step_t


# --------------------------------------------------------------------------
# Encode and decode
# --------------------------------------------------------------------------
def encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half") -> PolarCode:
    """keys (..., L, d) real floats -> PolarCode (see PolarCode for the shapes)."""
    r_bits, t_bits, group_size, pairing = check_config(r_bits, t_bits, group_size, pairing)
    keys_in = check_keys(keys)
    keys = keys_in.astype(np.float64)
    lq = (keys.shape[-2] // group_size) * group_size
    with _float_errors("encode"):
        x, y = split_pairs(keys[..., :lq, :], pairing)      # (..., Lq, P) each
        r, phi = to_polar(x, y)                               # (..., Lq, P)
        r_min, r_step = group_range(r, group_size, r_bits)        # (..., n, P)
        phi_min, phi_step = group_range(phi, group_size, t_bits)  # (..., n, P)
        rho = quantize(r, r_min, r_step, r_bits)              # (..., Lq, P) uint8
        theta = quantize(phi, phi_min, phi_step, t_bits)      # (..., Lq, P) uint8
    residual = keys_in[..., lq:, :].copy()                    # (..., L - Lq, d), verbatim
    return PolarCode(rho, theta, r_min, r_step, phi_min, phi_step, residual,
                     r_bits, t_bits, group_size, pairing)


def decode(code: PolarCode):
    """PolarCode -> keys_hat (..., L, d) float64: bin midpoints, then the residual."""
    check_code(code)
    with _float_errors("decode"):
        r_hat = bin_centers(code.r_min, code.r_step, code.rho)          # (..., Lq, P)
        phi_hat = bin_centers(code.phi_min, code.phi_step, code.theta)  # (..., Lq, P)
        quantized = merge_pairs(r_hat * np.cos(phi_hat), r_hat * np.sin(phi_hat), code.pairing)
    return np.concatenate([quantized, code.residual.astype(np.float64)], axis=-2)


# --------------------------------------------------------------------------
# Table-based scoring
# --------------------------------------------------------------------------
def _with_head_axis(code: PolarCode):
    """The code's arrays with an explicit H_kv axis (keys (L, d) are one KV head)."""
    arrays = [code.rho, code.theta, code.r_min, code.r_step, code.phi_min, code.phi_step,
              code.residual]
    if not code.batch_shape:
        arrays = [a[None] for a in arrays]
    return arrays


def radius_table(code: PolarCode):
    """R (..., H_kv, n, P, 2**r_bits): R[..., g, j, s] = r_min + (s + 0.5) * r_step."""
    s = np.arange(2**code.r_bits) + 0.5                                  # (B_r,)
    _, _, r_min, r_step, _, _, _ = _with_head_axis(code)
    return r_min[..., None] + s * r_step[..., None]


def angle_table(queries, code: PolarCode):
    """A (..., H_kv, H_q // H_kv, n, P, 2**t_bits) for queries (..., H_q, d).

    A[..., h, m, g, j, t] = qx[j] * cos(phi_hat) + qy[j] * sin(phi_hat) with
    phi_hat = phi_min + (t + 0.5) * phi_step of group g, pair j, and (qx, qy)
    pair j of query head h * (H_q // H_kv) + m, which reads KV head h.
    """
    queries = check_queries(queries).astype(np.float64)
    outer, h_kv, h_q, _ = split_heads(queries.shape, code.batch_shape, code.head_dim)
    queries = queries.reshape(*outer, h_kv, h_q // h_kv, code.head_dim)  # (..., H_kv, M, d)
    qx, qy = split_pairs(queries, code.pairing)                          # (..., H_kv, M, P)
    t = np.arange(2**code.t_bits) + 0.5                                  # (B_t,)
    _, _, _, _, phi_min, phi_step, _ = _with_head_axis(code)
    phi_hat = phi_min[..., None] + t * phi_step[..., None]               # (..., H_kv, n, P, B_t)
    phi_hat = phi_hat[..., None, :, :, :]                                # (..., H_kv, 1, n, P, B_t)
    return qx[..., None, :, None] * np.cos(phi_hat) + qy[..., None, :, None] * np.sin(phi_hat)


def scores(queries, code: PolarCode):
    """Table-based q . k_hat for queries (..., H_q, d) -> (..., H_q, L) float64.

    Per group: gather R[j, rho_ij] and A[j, theta_ij] for every token i and
    pair j, multiply, sum over j. Then the residual tokens by plain dot
    products. Query head h reads KV head h // (H_q // H_kv).
    """
    check_code(code)
    queries = check_queries(queries)
    outer, h_kv, h_q, squeeze = split_heads(queries.shape, code.batch_shape, code.head_dim)
    g = code.group_size
    rho, theta, *_, residual = _with_head_axis(code)      # (..., H_kv, Lq, P), (..., H_kv, L-Lq, d)
    n, p = rho.shape[-2] // g, code.n_pairs
    with _float_errors("scores"):
        table_r = radius_table(code)                        # (..., H_kv, n, P, B_r)
        table_a = angle_table(queries, code)                # (..., H_kv, M, n, P, B_t)
        rho = rho.reshape(*rho.shape[:-2], n, g, p)         # (..., H_kv, n, G, P)
        theta = theta.reshape(*theta.shape[:-2], n, g, p)
        # Gather: token i of group g reads R[g, j, rho_ij] and A[g, j, theta_ij].
        r_sel = np.take_along_axis(table_r[..., :, None, :, :], rho[..., None].astype(np.intp), axis=-1)
        a_sel = np.take_along_axis(table_a[..., :, None, :, :],
                                   theta[..., None, :, :, :, None].astype(np.intp), axis=-1)
        # r_sel (..., H_kv, n, G, P, 1), a_sel (..., H_kv, M, n, G, P, 1): sum over pairs j
        quantized = (r_sel[..., None, :, :, :, 0] * a_sel[..., 0]).sum(axis=-1)  # (..., H_kv, M, n, G)
        quantized = quantized.reshape(*outer, h_q, n * g)
        q64 = queries.astype(np.float64).reshape(*outer, h_kv, h_q // h_kv, code.head_dim)
        tail = q64 @ np.swapaxes(residual.astype(np.float64), -1, -2)  # (..., H_kv, M, L - Lq)
        tail = _finite(tail, "scores (residual tokens)")
        result = np.concatenate([quantized, tail.reshape(*outer, h_q, code.n_tokens - n * g)], axis=-1)
    return result[..., 0, :] if squeeze else result


def dense_scores(queries, keys):
    """Plain float64 q . k: queries (..., H_q, d), keys (..., H_kv, L, d) -> (..., H_q, L)."""
    queries = check_queries(queries)
    keys = check_keys(keys)
    outer, h_kv, h_q, squeeze = split_heads(queries.shape, keys.shape[:-2], keys.shape[-1])
    length, d = keys.shape[-2:]
    keys = keys.astype(np.float64).reshape(*outer, h_kv, length, d)          # (..., H_kv, L, d)
    q = queries.astype(np.float64).reshape(*outer, h_kv, h_q // h_kv, d)     # (..., H_kv, M, d)
    result = _finite(q @ np.swapaxes(keys, -1, -2), "dense_scores")          # (..., H_kv, M, L)
    result = result.reshape(*outer, h_q, length)
    return result[..., 0, :] if squeeze else result
