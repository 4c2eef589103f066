"""Numba CPU backend of PolarQuant: encode / decode / scores with the golden signatures.

    code = cpu_kernels.encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half")
    keys_hat = cpu_kernels.decode(code)          # (..., L, d) float64
    s = cpu_kernels.scores(queries, code)        # (..., H_q, L) float64

These are the launchers: they validate with `polarref.checks` (the same
errors as golden), flatten the leading axes into one head axis, allocate the
outputs and call the kernels in `cpu_kernels.kernels`. Encode and decode
compute in float64; scoring builds float32 tables and sums in float32
(WORKING_DTYPE, which the tests derive tolerances from). Where float32 could
under- or overflow (a group's largest possible score outside [1e-30, 1e30])
or an angle is out of the kernels' sincos range, the call goes to golden,
which also raises golden's OverflowError where float64 overflows.

Scoring runs kernel 4 (AVX-512) where it applies: the host has AVX-512 F/BW,
r_bits and t_bits <= 4, P and G multiples of 16; else kernel 3. Both run on
Numba's threads (numba.set_num_threads). The first call of each kernel
compiles it (seconds); `cache=True` keeps the machine code in __pycache__.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as _llvm

from polarref import golden
from polarref.checks import check_code, check_config, check_keys, check_queries, split_heads
from polarref.code import PolarCode

from . import kernels

WORKING_DTYPE = np.float32          # scoring precision
PRECISION = {"encode": np.float64, "decode": np.float64, "scores": np.float32}
FLOAT32_SAFE = (1e-30, 1e30)        # group score scales float32 tables hold to full precision
PAIRING_CODE = {"half": kernels.HALF, "interleaved": 1}
SCORES_KERNELS = {1: kernels.scores_kernel1, 2: kernels.scores_kernel2, 3: kernels.scores_kernel3,
                  4: kernels.scores_kernel4}
SCORES_VERSION = 4          # where it applies (AVX-512 host, small bits, P and G multiples of 16), else 3


def _host_has_avx512() -> bool:
    """True when Numba compiles for this host and the host has AVX-512 F and BW."""
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    features = _llvm.get_host_cpu_features()
    return bool(features.get("avx512f")) and bool(features.get("avx512bw"))


HAS_AVX512 = _host_has_avx512()


def _kernel4_applies(code: PolarCode) -> bool:
    small = code.r_bits <= kernels.SMALL_BITS and code.t_bits <= kernels.SMALL_BITS
    return HAS_AVX512 and small and code.n_pairs % 16 == 0 and code.group_size % 16 == 0


def scores_version(code: PolarCode, version=None) -> int:
    """The scoring kernel `scores` runs for this code: `version` if it applies, else the best that does."""
    version = version or SCORES_VERSION
    if version == 4 and not _kernel4_applies(code):
        version = 3
    return version

__all__ = ["encode", "decode", "scores", "WORKING_DTYPE", "PRECISION"]


def _heads(shape_lead):
    """Number of flattened heads for leading axes `shape_lead` (1 for keys (L, d))."""
    return int(np.prod(shape_lead, dtype=np.int64)) if shape_lead else 1


def _code_arrays(code: PolarCode):
    """The code's arrays flattened to (H, Lq, P) uint8 and (H, n, P) float64, contiguous."""
    p, lq = code.n_pairs, code.n_quantized
    h = _heads(code.batch_shape)
    n = lq // code.group_size

    def flat(a, rows, dtype):
        return np.ascontiguousarray(np.asarray(a).reshape(h, rows, p), dtype=dtype)

    return (flat(code.rho, lq, np.uint8), flat(code.theta, lq, np.uint8),
            flat(code.r_min, n, np.float64), flat(code.r_step, n, np.float64),
            flat(code.phi_min, n, np.float64), flat(code.phi_step, n, np.float64))


def _angles_in_range(phi_min, phi_step, t_bits):
    """True when every phi_hat lies where kernels._sincos is accurate."""
    if phi_min.size == 0:
        return True
    top = np.abs(phi_min) + 2.0**t_bits * np.abs(phi_step)
    return bool(top.max() <= kernels.SINCOS_MAX)


# --------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------
def encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half") -> PolarCode:
    """keys (..., L, d) real floats -> PolarCode, as polarref.golden.encode."""
    r_bits, t_bits, group_size, pairing = check_config(r_bits, t_bits, group_size, pairing)
    keys_in = check_keys(keys)
    *lead, length, d = keys_in.shape
    p, h = d // 2, _heads(lead)
    n = length // group_size
    lq = n * group_size
    work = keys_in if keys_in.dtype in (np.float32, np.float64) else keys_in.astype(np.float32)
    work = np.ascontiguousarray(work.reshape(h, length, d))       # (H, L, d)
    rho = np.empty((h, lq, p), np.uint8)
    theta = np.empty((h, lq, p), np.uint8)
    params = [np.empty((h, n, p)) for _ in range(4)]             # r_min, r_step, phi_min, phi_step
    overflow = np.zeros(h * n, np.bool_)
    if h * n:
        all_safe = work.dtype == np.float32      # float32 squares cannot under/overflow float64
        kernels.encode_kernel1(work, group_size, r_bits, t_bits, PAIRING_CODE[pairing], all_safe,
                               rho, theta, *params, overflow)
    if overflow.any():
        raise OverflowError("encode: float64 overflow encountered in hypot; inputs too large in magnitude")
    residual = keys_in[..., lq:, :].copy()                        # (..., L - Lq, d), verbatim
    rho = rho.reshape(*lead, lq, p)
    theta = theta.reshape(*lead, lq, p)
    r_min, r_step, phi_min, phi_step = (a.reshape(*lead, n, p) for a in params)
    return PolarCode(rho, theta, r_min, r_step, phi_min, phi_step, residual,
                     r_bits, t_bits, group_size, pairing)


# --------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------
def decode(code: PolarCode):
    """PolarCode -> keys_hat (..., L, d) float64, as polarref.golden.decode."""
    check_code(code)
    rho, theta, r_min, r_step, phi_min, phi_step = _code_arrays(code)
    if not _angles_in_range(phi_min, phi_step, code.t_bits):
        return golden.decode(code)
    h, lq, p = rho.shape
    residual = np.asarray(code.residual)
    out = np.empty((h, code.n_tokens, 2 * p))                     # (H, L, d)
    if rho.size:
        kernels.decode_kernel1(rho, theta, r_min, r_step, phi_min, phi_step,
                               code.r_bits, code.t_bits, PAIRING_CODE[code.pairing], out)
    if not np.isfinite(out[:, :lq]).all():
        return golden.decode(code)        # float64 overflow: golden raises the same error
    out[:, lq:] = residual.reshape(h, code.n_tokens - lq, 2 * p)
    return out.reshape(*code.batch_shape, code.n_tokens, 2 * p)


# --------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------
def _score_scale(r_min, r_step, r_bits, qx, qy):
    """Largest possible |score| per (head, group, query head): sum_j R_max_j * (|qx_j| + |qy_j|).

    r_min, r_step (H, n, P); qx, qy (H, M, P) -> (H, n, M).
    """
    with np.errstate(over="ignore"):      # inf is an answer here: it sends the call to golden
        r_top = np.abs(r_min) + 2.0**r_bits * r_step
        return r_top @ np.swapaxes(np.abs(qx) + np.abs(qy), -1, -2)


def scores(queries, code: PolarCode, version=None):
    """Table-based q . k_hat: queries (..., H_q, d) -> (..., H_q, L) float64, as golden.scores.

    `version` picks a scoring kernel (benchmarks only; default the fastest).
    """
    check_code(code)
    queries = check_queries(queries)
    outer, h_kv, h_q, squeeze = split_heads(queries.shape, code.batch_shape, code.head_dim)
    rho, theta, r_min, r_step, phi_min, phi_step = _code_arrays(code)
    h, lq, p = rho.shape
    m = h_q // h_kv
    if not _angles_in_range(phi_min, phi_step, code.t_bits):
        return golden.scores(queries, code)
    q = queries.astype(np.float64).reshape(h, m, 2 * p)             # (H, M, d) by KV head
    qx, qy = golden.split_pairs(q, code.pairing)                    # (H, M, P) each
    version = scores_version(code, version)
    kernel = SCORES_KERNELS[version]
    scale_qx, scale_qy = qx, qy
    if version >= 2:            # query heads in zero-padded blocks of 4
        blocks = -(-m // kernels.BLOCK)
        pad = ((0, 0), (0, blocks * kernels.BLOCK - m), (0, 0))
        qx, qy = np.pad(qx, pad), np.pad(qy, pad)                    # (H, 4 * blocks, P)
    if version == 3:            # (H, blocks, P, 4): a pair's 4 heads side by side
        qx, qy = (a.reshape(h, blocks, kernels.BLOCK, p).transpose(0, 1, 3, 2) for a in (qx, qy))
    if version == 4:            # (H, blocks, 4, P) float32
        qx, qy = (a.reshape(h, blocks, kernels.BLOCK, p).astype(np.float32) for a in (qx, qy))
    qx, qy = np.ascontiguousarray(qx), np.ascontiguousarray(qy)
    extra = (2 * numba.get_num_threads(),) if version == 4 else ()
    out = np.empty((h, m, code.n_tokens))                           # (H, M, L)
    if rho.size:
        scale = _score_scale(r_min, r_step, code.r_bits, scale_qx, scale_qy)
        lo, hi = FLOAT32_SAFE
        if not ((scale == 0.0) | ((scale > lo) & (scale < hi))).all():
            return golden.scores(queries, code)   # float32 could lose it: the float64 reference
        kernel(rho, theta, r_min, r_step, phi_min, phi_step, code.r_bits, code.t_bits, qx, qy, out, *extra)
    residual = np.asarray(code.residual)
    if residual.shape[-2]:
        res = residual.astype(np.float64).reshape(h, code.n_tokens - lq, 2 * p)    # (H, L - Lq, d)
        tail = q @ np.swapaxes(res, -1, -2)                          # (H, M, L - Lq)
        if not np.isfinite(tail).all():
            return golden.scores(queries, code)   # raises golden's OverflowError
        out[:, :, lq:] = tail
    result = out.reshape(*outer, h_q, code.n_tokens)
    return result[..., 0, :] if squeeze else result
