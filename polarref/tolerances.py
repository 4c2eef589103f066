"""Every tolerance the project uses, derived here and nowhere else.

Notation: eps is the unit roundoff of the arithmetic being judged
(`np.finfo(dtype).eps`: 2.2e-16 for float64, 1.2e-7 for float32, 9.8e-4 for
float16), b the bits of a code, B = 2**b its bin count, P = d // 2 pairs.

The rounding model is the usual one: each elementary operation (+, *, /,
hypot, atan2, cos, sin, float conversion) is off by at most a couple of eps
relative to its result. Where a quantity is a *difference* (v - lo) its error
is relative to the operands, not to the result; that is why the bounds below
carry a "scale" (the largest operand) and not the value itself. Each bound is
first-order and then doubled: MARGIN covers second-order terms and operation
counts we rounded down, never a guess at an observed error.
"""
from __future__ import annotations

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
EPS16 = float(np.finfo(np.float16).eps)
TINY64 = float(np.finfo(np.float64).smallest_subnormal)
TINY32 = float(np.finfo(np.float32).smallest_subnormal)
TINY16 = float(np.finfo(np.float16).smallest_subnormal)
MARGIN = 2.0

# Ulps of error carried by a computed radius or angle before it is binned:
# 0.5 from rounding the key to the working precision (x and y), 2 from
# hypot/atan2, 1 from the wrap-around phi + 2*pi. Rounded up to 4.
VALUE_ULPS = 4.0


def eps_of(dtype) -> float:
    """Unit roundoff of a floating dtype."""
    return float(np.finfo(np.dtype(dtype)).eps)


def tiny_of(eps) -> float:
    """Smallest subnormal of the precision an error of eps belongs to (the coarsest of float16,
    float32, float64 whose unit roundoff is at most eps; eps may be a multiple of it): the
    absolute error floor of an operation there, where rounding error stops shrinking with the value."""
    for dtype in (np.float16, np.float32, np.float64):
        if float(np.finfo(dtype).eps) <= eps:
            return float(np.finfo(dtype).smallest_subnormal)
    return TINY64


def value_scale(lo, step, bits):
    """The largest value a group can hold: |lo| + B * step (= its max), per group and pair."""
    return np.abs(lo) + 2.0**bits * step


def boundary_band(lo, step, bits, eps):
    """Half-width, in bins, of the band around each bin boundary where codes may differ.

    A code is floor(u), u = (v - lo) / step. A working precision eps
    perturbs v, lo and hi = lo + B*step by VALUE_ULPS * eps * scale each, so
    (v - lo) moves by 2 * VALUE_ULPS * eps * scale and step = (hi - lo) / B by
    a relative 2 * VALUE_ULPS * eps * scale / (B * step), which moves u (at
    most B) by the same absolute amount in bins. In bins, that is
    4 * VALUE_ULPS * eps * scale / step; doubled by MARGIN. Below the normal
    range an operation errs by up to the smallest subnormal (tiny_of(eps)),
    not eps times its value, so eps * scale becomes eps * scale + tiny: it
    matters only for keys near the subnormals (float32: about 1e-38 and below).
    A group with zero step is inside the band entirely (any rounding can open
    its range). Shapes: lo, step (..., n, P) -> band (..., n, P).
    """
    scale = value_scale(lo, step, bits)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        band = MARGIN * 4.0 * VALUE_ULPS * (eps * scale + tiny_of(eps)) / step
    return np.where(step > 0.0, band, np.inf)


def range_bounds(lo, step, bits, eps):
    """Bounds on |lo_hat - lo| and |step_hat - step| of a group's range computed at precision eps.

    lo and hi are computed values, each off by VALUE_ULPS roundings of size
    eps * scale (or tiny_of(eps) below the normal range); step = (hi - lo) / B
    carries both ends' errors over B. Doubled by MARGIN.
    """
    lo_bound = MARGIN * VALUE_ULPS * (eps * value_scale(lo, step, bits) + tiny_of(eps))
    return lo_bound, 2.0 * lo_bound / 2.0**bits


def positions(values, lo, step):
    """u = (v - lo) / step per token, from per-group lo/step (..., n, P), values (..., Lq, P)."""
    group = values.shape[-2] // max(lo.shape[-2], 1)
    lo_t = np.repeat(lo, group, axis=-2)
    step_t = np.repeat(step, group, axis=-2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(step_t > 0.0, (values - lo_t) / np.where(step_t > 0, step_t, 1.0), 0.0)


def near_boundary(values, lo, step, bits, eps):
    """True where a value lies within the boundary band of an inner bin edge (1..B-1).

    values (..., Lq, P); lo, step (..., n, P) from the float64 reference.
    The outer edges 0 and B cannot flip a code: codes are clipped there.
    """
    group = values.shape[-2] // max(lo.shape[-2], 1)
    band = np.repeat(boundary_band(lo, step, bits, eps), group, axis=-2)
    u = positions(values, lo, step)
    edge = np.clip(np.rint(u), 1, 2**bits - 1)
    return np.abs(u - edge) <= band


def half_step_slack(lo, step, bits, eps=EPS64):
    """Slack on |v_hat - v| <= step / 2 for a reconstructed bin midpoint.

    v_hat = lo + (c + 0.5) * step costs 2 roundings of size eps * scale,
    v itself (hypot / atan2 / wrap) VALUE_ULPS more; doubled. A positive
    range under 2**bits smallest subnormals has step 0 (underflow) and
    reconstructs lo, off by at most the range: that adds B * TINY64.
    """
    return MARGIN * (2.0 + VALUE_ULPS) * eps * value_scale(lo, step, bits) + 2.0**bits * TINY64


def score_bound(query_weight, radius_scale, angle_scale, n_pairs, eps):
    """Bound on |s - s_ref| for a table score sum_j R_j * A_j done at precision eps.

    query_weight (..., P) = |qx_j| + |qy_j|, radius_scale (..., P) >= every
    R_j the table can hold (|r_min| + B_r * r_step), angle_scale (..., P) >=
    every phi_hat (|phi_min| + B_t * phi_step). Per pair the term R * A is
    off by: 3 eps * R_scale * w (r_hat = r_min + (s+.5) * step, rounded),
    (2 * angle_scale + 2) eps * R * w (phi_hat rounded relative to its scale,
    then cos/sin, then the A products and sum) and 1 eps for the product;
    the sum over P terms adds P eps of the sum of |terms| (Higham's gamma_P).
    Returns eps * sum_j R_scale_j * w_j * (P + 6 + 2 * angle_scale_j), doubled.
    """
    per_pair = radius_scale * query_weight * (n_pairs + 6.0 + 2.0 * angle_scale)
    return MARGIN * eps * per_pair.sum(axis=-1)


def table_entry_bound(query_weight, radius_scale, table_eps):
    """Extra error of a table score whose angle-table entries are stored at precision table_eps.

    An entry A = qx cos(phi) + qy sin(phi) has |A| <= w = |qx| + |qy|;
    storing it rounds it by at most table_eps * w (round to nearest is
    table_eps / 2: the factor 2 is spare). The radius multiplies it by at most
    radius_scale, and the pairs add up. Arithmetic after the lookup is covered
    by score_bound at the working precision. Doubled.
    """
    return MARGIN * table_eps * (radius_scale * query_weight).sum(axis=-1)


def dot_bound(abs_dot, length, eps):
    """Bound on a plain dot product of `length` terms done at precision eps.

    abs_dot = sum |q_i| |k_i|: inputs rounded to the working precision (1 eps),
    products (1 eps), sum (length eps): (length + 2) eps |q|.|k|, doubled.
    """
    return MARGIN * (length + 2.0) * eps * abs_dot


def decode_bound(radius_scale, r_hat, angle_scale, eps):
    """Bound on each coordinate of a decoded pair at precision eps (per token and pair).

    r_hat off by 3 eps * radius_scale; phi_hat off by 2 eps * angle_scale,
    which moves r cos(phi) by r_hat times that; cos/sin and the product 2 eps
    of r_hat. Doubled.
    """
    return MARGIN * eps * (3.0 * radius_scale + r_hat * (2.0 * angle_scale + 2.0))


def float16_key_bound(query_weight, radius_scale, n_pairs, r_bits, key_dtype):
    """Extra error of a score whose keys and queries are rounded to key_dtype (float16) before
    their products are summed in float32 (tensor cores: cuda_kernels.mma).

    With e = eps of key_dtype (twice its unit roundoff: the usual spare
    factor 2) and t its smallest subnormal (an absolute error that covers a
    rounding where values are subnormal), per pair (R = radius_scale,
    w = |qx| + |qy|, rho < 2**r_bits the radius code):
      r_hat = fl(rho * fl(step) + fl(r_min + step/2)): 3 e R, plus rho * t/2 when
        step is subnormal and t for c and the fma: 3 e R + (2**r_bits + 2) t;
      (cos, sin) rounded: e + t each; k = fl(r_hat * (cos, sin)): e R + t. So each
        key coordinate is off by 5 e R + (2**r_bits + 3 + R) t, which q weighs by w;
      each query coordinate is off by e |q| + t, which |k| <= R weighs: e R w + 2 t R;
      the float32 sums: a tensor core adds a k-step's 16 products and the
        accumulator after aligning them to the largest exponent and truncating
        (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor
        cores", PeerJ Comput. Sci. 2021), so each addend may lose 1 float32 eps
        of the largest: at most 17 eps32 of a step's sum of |terms|. We allow
        2 eps32 per addition, 2 (2P + 1) eps32 R w, which covers that for P >= 4.
    Returns sum_j [(6 e + 2 (2P + 1) eps32) R_j w_j + t ((2**r_bits + 3 + R_j) w_j + 2 R_j)],
    doubled.
    """
    e, t = eps_of(key_dtype), float(np.finfo(np.dtype(key_dtype)).smallest_subnormal)
    rw = radius_scale * query_weight
    per_pair = ((6.0 * e + 2.0 * (2.0 * n_pairs + 1.0) * EPS32) * rw
                + t * ((2.0**r_bits + 3.0 + radius_scale) * query_weight + 2.0 * radius_scale))
    return MARGIN * per_pair.sum(axis=-1)
