"""The properties of PolarQuant paper mode, and a runner that checks any backend against them.

Each property is a function `check(backend, example) -> Outcome` that raises
AssertionError with a message when the backend breaks it. The test suite and
`polarref verify` run the same properties through `run_property`, which
draws examples with Hypothesis (strategies in `polarref.strategies`),
shrinks a failure to a small example, and reports:

    worst  the largest error seen divided by its tolerance (<= 1 passes)
    band   codes that differ from the reference, all inside the boundary
           band of a bin edge (codes outside the band must agree exactly)

A backend offering only some of encode / decode / scores is checked on the
properties it can run; the rest report "n/a". Where a property needs a code
and the backend has no encode, the golden encode makes it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings
from hypothesis import strategies as st

from . import golden
from . import tolerances as tol
from .strategies import NORMAL, Case, Config, Limits, cases, polar_groups

settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("slow", max_examples=10_000, deadline=None, database=None)


@dataclass
class Outcome:
    worst: float = 0.0   # max error / tolerance
    band: int = 0        # code mismatches inside the boundary band

    def merge(self, other: "Outcome") -> "Outcome":
        return Outcome(max(self.worst, other.worst), self.band + other.band)


@dataclass(frozen=True)
class Property:
    name: str
    needs: tuple          # backend operations used
    strategy: Callable    # Limits -> strategy of examples
    check: Callable       # (backend, example) -> Outcome
    doc: str = ""


PROPERTIES: list[Property] = []


def prop(name, needs, strategy):
    def register(check):
        PROPERTIES.append(Property(name, tuple(needs), strategy, check, (check.__doc__ or "").strip()))
        return check
    return register


# --------------------------------------------------------------------------
# Helpers shared by the checks
# --------------------------------------------------------------------------
def eps_of(backend, *operations) -> float:
    """eps of the precision the backend does these operations in (the coarsest of them).

    A backend says it per operation (PRECISION = {"encode": ..., ...}) or for
    all at once (WORKING_DTYPE); judging a float64 operation by float32 eps
    would hide a slip to float32.
    """
    precision = getattr(backend, "precision", {}) or {}
    default = getattr(backend, "working_dtype", np.float32)
    return max(tol.eps_of(precision.get(op, default)) for op in operations)


def table_eps_of(backend):
    """eps of the backend's angle-table entries if it stores them coarser than it computes, else None."""
    table = getattr(backend, "table_dtype", None)
    return None if table is None else tol.eps_of(table)


def host(array):
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    if hasattr(array, "get") and not isinstance(array, np.ndarray):   # cupy
        return array.get()
    if hasattr(array, "cpu") and hasattr(array, "numpy"):             # torch
        return array.cpu().numpy()
    return np.asarray(array)


def encode_with(backend, keys, config: Config):
    encode = getattr(backend, "encode", golden.encode)
    code = encode(keys, **config.kwargs())
    return code.to_numpy() if hasattr(code, "to_numpy") else code


def polar_values(keys, config: Config):
    """Golden float64 radius and angle of the quantized tokens, (..., Lq, P) each."""
    keys = np.asarray(keys, dtype=np.float64)
    lq = (keys.shape[-2] // config.group_size) * config.group_size
    return golden.to_polar(*golden.split_pairs(keys[..., :lq, :], config.pairing))


def ratio(error, bound) -> float:
    """max(error / bound); 0 / 0 counts as 0, x / 0 as inf."""
    error, bound = np.broadcast_arrays(np.asarray(error, float), np.asarray(bound, float))
    if error.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(error == 0, 0.0, error / bound)
    return float(np.nanmax(np.where(np.isnan(error), np.inf, r)))


def within(name, error, bound) -> Outcome:
    worst = ratio(error, bound)
    if not worst <= 1.0:
        e, b = np.broadcast_arrays(np.asarray(error, float), np.asarray(bound, float))
        bad = np.argwhere(~(e <= b))
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{name}: {len(bad)} of {e.size} outside tolerance; worst error/tolerance "
            f"{worst:.3g}; first at {first}: error {e[first]:.3e} > tolerance {b[first]:.3e}")
    return Outcome(worst=worst)


def codes_agree(name, got, want, values, lo, step, bits, eps) -> Outcome:
    """Codes equal, except by one bin where the reference value is in the boundary band."""
    got, want = np.asarray(got).astype(int), np.asarray(want).astype(int)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape}, expected {want.shape}")
    differ = got != want
    allowed = tol.near_boundary(values, lo, step, bits, eps) & (np.abs(got - want) <= 1)
    outside = differ & ~allowed
    if outside.any():
        first = tuple(int(i) for i in np.argwhere(outside)[0])
        u = tol.positions(values, lo, step)[first]
        raise AssertionError(
            f"{name}: {int(outside.sum())} code(s) differ away from any bin boundary "
            f"(and {int((differ & allowed).sum())} inside the band); first at {first}: "
            f"got {got[first]}, expected {want[first]}, position in bins u={u:.9f}")
    return Outcome(band=int(differ.sum()))


def check_shapes(code, keys, config: Config):
    *lead, length, d = keys.shape
    lq = (length // config.group_size) * config.group_size
    expect = {"rho": (*lead, lq, d // 2), "theta": (*lead, lq, d // 2),
              "r_min": (*lead, lq // config.group_size, d // 2), "residual": (*lead, length - lq, d)}
    for attr in ("r_step", "phi_min", "phi_step"):
        expect[attr] = expect["r_min"]
    for attr, shape in expect.items():
        got = tuple(np.shape(getattr(code, attr)))
        if got != shape:
            raise AssertionError(f"code.{attr} has shape {got}, expected {shape}")
    for attr in ("rho", "theta"):
        if np.asarray(getattr(code, attr)).dtype != np.uint8:
            raise AssertionError(f"code.{attr} dtype {np.asarray(getattr(code, attr)).dtype}, expected uint8")


def score_tolerance(queries, code, eps, table_eps=None, key_dtype=None):
    """Per-score bound (..., H_q, L) for table scores of `code` at precision eps.

    table_eps: the precision the angle-table entries are stored in, when it
    is coarser than eps (float16 tables); None when the tables are at eps.
    key_dtype: the dtype keys and queries are rounded to before their products
    are summed (float16 on tensor cores); None when they are not.
    """
    q = np.asarray(queries, np.float64)
    squeeze = q.ndim == 1
    if squeeze:
        q = q[None]
    h_q = q.shape[-2]
    rho, theta, r_min, r_step, phi_min, phi_step, residual = golden._with_head_axis(code)
    h_kv = rho.shape[-3]
    qx, qy = golden.split_pairs(q, code.pairing)
    weight = (np.abs(qx) + np.abs(qy)).reshape(*q.shape[:-2], h_kv, h_q // h_kv, 1, code.n_pairs)
    g = code.group_size
    r_scale = np.repeat(tol.value_scale(r_min, r_step, code.r_bits), g, axis=-2)     # (..., H_kv, Lq, P)
    a_scale = np.repeat(tol.value_scale(phi_min, phi_step, code.t_bits), g, axis=-2)
    table = tol.score_bound(weight, r_scale[..., None, :, :], a_scale[..., None, :, :],
                            code.n_pairs, eps)                                       # (..., H_kv, M, Lq)
    if table_eps is not None:
        table = table + tol.table_entry_bound(weight, r_scale[..., None, :, :], table_eps)
    if key_dtype is not None:
        table = table + tol.float16_key_bound(weight, r_scale[..., None, :, :], code.n_pairs, code.r_bits,
                                              key_dtype)
    abs_dot = np.abs(q).reshape(*q.shape[:-2], h_kv, h_q // h_kv, -1) @ \
        np.swapaxes(np.abs(residual.astype(np.float64)), -1, -2)
    tail = tol.dot_bound(abs_dot, code.head_dim, eps)
    bound = np.concatenate([table, tail], axis=-1).reshape(*q.shape[:-2], h_q, -1)
    return bound[..., 0, :] if squeeze else bound


def golden_score_tolerance(queries, code, eps, table_eps=None, key_dtype=None):
    """Bound on |kernel score - golden score| of one code: the kernel's rounding plus golden's (float64)."""
    return score_tolerance(queries, code, eps, table_eps, key_dtype) + score_tolerance(queries, code, tol.EPS64)


def backend_score_tolerance(backend, queries, code, against_golden=True):
    """The score bound of this backend's declared precisions (scores' eps, table and key dtypes)."""
    args = (queries, code, eps_of(backend, "scores"), table_eps_of(backend),
            getattr(backend, "key_dtype", None))
    return golden_score_tolerance(*args) if against_golden else score_tolerance(*args)


def small_cases(distribution=None, config=None, leading=None, dtype=None):
    return lambda limits: cases(limits, config=config, distribution=distribution,
                                leading=leading, dtype=dtype)


# --------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------
@prop("codes_in_range", ["encode"], small_cases())
def codes_in_range(backend, case: Case) -> Outcome:
    """Codes are uint8 in [0, 2**bits) and every array has the contract's shape."""
    code = encode_with(backend, case.keys, case.config)
    check_shapes(code, case.keys, case.config)
    for attr, bits in (("rho", case.config.r_bits), ("theta", case.config.t_bits)):
        top = int(np.max(getattr(code, attr), initial=0))
        if top >= 2**bits:
            raise AssertionError(f"code.{attr} holds {top} >= 2**{bits}")
    if not np.array_equal(np.asarray(code.residual), case.keys[..., code.n_quantized:, :]):
        raise AssertionError("code.residual is not the trailing tokens verbatim")
    return Outcome()


def _half_step(backend, case: Case, which) -> Outcome:
    code = encode_with(backend, case.keys, case.config)
    r, phi = polar_values(case.keys, case.config)
    if which == "radius":
        value, lo, step, codes, bits = r, code.r_min, code.r_step, code.rho, case.config.r_bits
    else:
        value, lo, step, codes, bits = phi, code.phi_min, code.phi_step, code.theta, case.config.t_bits
    lo, step = np.asarray(lo, np.float64), np.asarray(step, np.float64)
    err = golden.bin_centers(lo, step, np.asarray(codes)) - value
    if which == "angle":                   # angles are circular: 2*pi - tiny is next to 0
        err = np.where(err > np.pi, err - 2 * np.pi, np.where(err < -np.pi, err + 2 * np.pi, err))
    g = case.config.group_size
    bound = np.repeat(step / 2 + tol.half_step_slack(lo, step, bits, eps_of(backend, "encode")), g, axis=-2)
    return within(f"|{which}_hat - {which}| <= step/2", np.abs(err), bound)


@prop("radius_within_half_step", ["encode"], small_cases())
def radius_within_half_step(backend, case):
    """|r_hat - r| <= r_step / 2 (+ rounding slack, tolerances.half_step_slack)."""
    return _half_step(backend, case, "radius")


@prop("angle_within_half_step", ["encode"], small_cases())
def angle_within_half_step(backend, case):
    """|phi_hat - phi| <= phi_step / 2 on the circle (+ rounding slack)."""
    return _half_step(backend, case, "angle")


@prop("extremes_in_end_bins", ["encode"], small_cases())
def extremes_in_end_bins(backend, case):
    """Each group's minimum lands in bin 0 and its maximum in the top bin (zero range: bin 0)."""
    cfg = case.config
    code = encode_with(backend, case.keys, cfg)
    ref = golden.encode(case.keys, **cfg.kwargs())
    outcome = Outcome()
    for value, codes, lo, step, bits in zip(polar_values(case.keys, cfg), (code.rho, code.theta),
                                            (ref.r_min, ref.phi_min), (ref.r_step, ref.phi_step),
                                            (cfg.r_bits, cfg.t_bits)):
        grouped = value.reshape(*value.shape[:-2], -1, cfg.group_size, value.shape[-1])
        got = np.asarray(codes).reshape(grouped.shape)
        for pick, target in ((np.argmin, 0), (np.argmax, 2**bits - 1)):
            at = pick(grouped, axis=-2)[..., None, :]                    # (..., n, 1, P)
            want = np.where(step > 0, target, 0)
            outcome = outcome.merge(codes_agree(
                f"{pick.__name__} bin", np.take_along_axis(got, at, -2)[..., 0, :], want,
                np.take_along_axis(grouped, at, -2)[..., 0, :], lo, step, bits, eps_of(backend, "encode")))
    return outcome


@prop("table_scores_match_decode", ["scores"], small_cases())
def table_scores_match_decode(backend, case):
    """scores(q, code) equals q . decode(code) (golden decode, float64) within score tolerance."""
    code = encode_with(backend, case.keys, case.config)
    got = host(backend.scores(case.queries, code))
    want = golden.dense_scores(case.queries, golden.decode(code))
    bound = backend_score_tolerance(backend, case.queries, code)
    return within("table score vs q . decode(code)", np.abs(got - want), bound)


@prop("power_of_two_scaling", ["encode"], lambda limits: st.tuples(
    cases(limits), st.sampled_from([-8, -3, -1, 1, 2, 7])))
def power_of_two_scaling(backend, example):
    """Scaling keys by 2**k keeps the codes and scales r_min and r_step by 2**k."""
    case, k = example
    cfg, eps = case.config, eps_of(backend, "encode")
    keys = case.keys.astype(np.float64)
    base = encode_with(backend, keys, cfg)
    scaled = encode_with(backend, keys * 2.0**k, cfg)
    ref = golden.encode(keys, **cfg.kwargs())
    r, phi = polar_values(keys, cfg)
    out = codes_agree("rho", scaled.rho, base.rho, r, ref.r_min, ref.r_step, cfg.r_bits, eps)
    out = out.merge(codes_agree("theta", scaled.theta, base.theta, phi, ref.phi_min, ref.phi_step,
                                cfg.t_bits, eps))
    slack = tol.MARGIN * tol.VALUE_ULPS * eps * 2.0**k * tol.value_scale(ref.r_min, ref.r_step, cfg.r_bits)
    for attr in ("r_min", "r_step"):
        want = 2.0**k * np.asarray(getattr(base, attr), np.float64)
        out = out.merge(within(attr, np.abs(np.asarray(getattr(scaled, attr)) - want), slack))
    return out


@prop("common_rotation_keeps_theta", ["encode"], lambda limits: polar_groups(limits))
def common_rotation_keeps_theta(backend, example):
    """Rotating every pair of a group by one angle (clear of 0 / 2*pi) keeps theta and rho."""
    keys, cfg, alpha, _seed = example
    x, y = golden.split_pairs(keys, cfg.pairing)
    c, s = np.cos(alpha), np.sin(alpha)
    rotated = golden.merge_pairs(c * x - s * y, s * x + c * y, cfg.pairing)
    # The rotation itself rounds (a few float64 ulps on x, y): widen the band by that.
    eps = eps_of(backend, "encode") + tol.VALUE_ULPS * tol.EPS64
    base, turned = encode_with(backend, keys, cfg), encode_with(backend, rotated, cfg)
    ref = golden.encode(keys, **cfg.kwargs())
    r, phi = polar_values(keys, cfg)
    out = codes_agree("theta", turned.theta, base.theta, phi, ref.phi_min, ref.phi_step, cfg.t_bits, eps)
    return out.merge(codes_agree("rho", turned.rho, base.rho, r, ref.r_min, ref.r_step, cfg.r_bits, eps))


@prop("token_permutation_permutes_codes", ["encode"], lambda limits: st.tuples(
    cases(limits), st.integers(0, 2**32 - 1)))
def token_permutation_permutes_codes(backend, example):
    """Permuting tokens within each group permutes the codes and keeps the parameters, exactly."""
    case, seed = example
    cfg = case.config
    length = case.keys.shape[-2]
    lq = (length // cfg.group_size) * cfg.group_size
    rng = np.random.default_rng(seed)
    order = np.arange(length)
    for start in range(0, lq, cfg.group_size):
        order[start:start + cfg.group_size] = start + rng.permutation(cfg.group_size)
    base = encode_with(backend, case.keys, cfg)
    perm = encode_with(backend, case.keys[..., order, :], cfg)
    for attr in ("rho", "theta"):
        if not np.array_equal(np.asarray(getattr(perm, attr)), np.asarray(getattr(base, attr))[..., order[:lq], :]):
            raise AssertionError(f"{attr} of permuted tokens is not the permuted {attr}")
    for attr in ("r_min", "r_step", "phi_min", "phi_step"):
        if not np.array_equal(np.asarray(getattr(perm, attr)), np.asarray(getattr(base, attr))):
            raise AssertionError(f"{attr} changed when tokens were permuted within their groups")
    return Outcome()


@prop("constant_groups_reconstruct", ["encode", "decode"], small_cases(distribution="constant_groups"))
def constant_groups_reconstruct(backend, case):
    """Groups whose tokens are all equal decode to those tokens, to float precision."""
    code = encode_with(backend, case.keys, case.config)
    got = host(backend.decode(code))
    keys = case.keys.astype(np.float64)
    r, _ = polar_values(keys, case.config)
    r = np.concatenate([r, r], -1) if case.config.pairing == "half" else np.repeat(r, 2, -1)
    lq = r.shape[-2]
    eps = eps_of(backend, "encode", "decode")
    # r_hat = r_min exactly in exact arithmetic; cos/sin of phi_min <= 2*pi: decode_bound.
    bound = tol.decode_bound(r, r, 2 * np.pi, eps) + tol.MARGIN * tol.VALUE_ULPS * eps * r
    return within("constant group decode", np.abs(got[..., :lq, :] - keys[..., :lq, :]), bound)


@prop("nested_bins", ["encode"], lambda limits: cases(limits, config=None).filter(
    lambda c: c.config.r_bits + c.config.t_bits <= 6))
def nested_bins(backend, case):
    """Codes of b+1 bits refine codes of b bits: code_{b+1} >> 1 == code_b (the bins nest)."""
    cfg, eps = case.config, eps_of(backend, "encode")
    fine_cfg = Config(cfg.r_bits + 1, cfg.t_bits + 1, cfg.group_size, cfg.pairing)
    coarse, fine = encode_with(backend, case.keys, cfg), encode_with(backend, case.keys, fine_cfg)
    ref = golden.encode(case.keys, **cfg.kwargs())
    r, phi = polar_values(case.keys, cfg)
    out = codes_agree("rho", np.asarray(fine.rho) >> 1, coarse.rho, r, ref.r_min, ref.r_step, cfg.r_bits, eps)
    return out.merge(codes_agree("theta", np.asarray(fine.theta) >> 1, coarse.theta, phi,
                                 ref.phi_min, ref.phi_step, cfg.t_bits, eps))


def _interleave_permutation(d):
    """perm such that keys_half[..., perm] is the same pairs in the interleaved layout."""
    p = d // 2
    return np.stack([np.arange(p), np.arange(p) + p], -1).reshape(-1)


@prop("pairings_agree", ["encode"], lambda limits: cases(limits))
def pairings_agree(backend, case):
    """Half and interleaved layouts give the same codes after permuting d accordingly."""
    cfg = case.config
    perm = _interleave_permutation(case.keys.shape[-1])
    half = encode_with(backend, case.keys, Config(cfg.r_bits, cfg.t_bits, cfg.group_size, "half"))
    inter = encode_with(backend, case.keys[..., perm],
                        Config(cfg.r_bits, cfg.t_bits, cfg.group_size, "interleaved"))
    for attr in ("rho", "theta", "r_min", "r_step", "phi_min", "phi_step"):
        if not np.array_equal(np.asarray(getattr(half, attr)), np.asarray(getattr(inter, attr))):
            raise AssertionError(f"{attr} differs between half keys and the same keys interleaved")
    if not np.array_equal(np.asarray(half.residual)[..., perm], np.asarray(inter.residual)):
        raise AssertionError("residual differs between the layouts after the permutation")
    return Outcome()


@prop("gqa_matches_repeated_kv", ["scores"], small_cases(leading="heads"))
def gqa_matches_repeated_kv(backend, case):
    """GQA scores equal scores against the KV heads repeated once per query head."""
    cfg = case.config
    rep = case.queries.shape[-2] // case.keys.shape[-3]
    code = encode_with(backend, case.keys, cfg)
    code_rep = encode_with(backend, np.repeat(case.keys, rep, axis=-3), cfg)
    got = host(backend.scores(case.queries, code))
    want = host(backend.scores(case.queries, code_rep))
    bound = 2 * backend_score_tolerance(backend, case.queries, code, against_golden=False)
    return within("GQA vs repeated KV heads", np.abs(got - want), bound)


@prop("matches_golden_codes", ["encode"], small_cases())
def matches_golden_codes(backend, case):
    """encode equals the golden encode: codes outside the boundary band, params to rounding."""
    cfg, eps = case.config, eps_of(backend, "encode")
    code = encode_with(backend, case.keys, cfg)
    ref = golden.encode(case.keys, **cfg.kwargs())
    r, phi = polar_values(case.keys, cfg)
    out = codes_agree("rho", code.rho, ref.rho, r, ref.r_min, ref.r_step, cfg.r_bits, eps)
    out = out.merge(codes_agree("theta", code.theta, ref.theta, phi, ref.phi_min, ref.phi_step,
                                cfg.t_bits, eps))
    for attr, (lo, step, bits) in {"r_min": (ref.r_min, ref.r_step, cfg.r_bits),
                                   "r_step": (ref.r_min, ref.r_step, cfg.r_bits),
                                   "phi_min": (ref.phi_min, ref.phi_step, cfg.t_bits),
                                   "phi_step": (ref.phi_min, ref.phi_step, cfg.t_bits)}.items():
        slack = tol.range_bounds(lo, step, bits, eps)[attr.endswith("step")]
        out = out.merge(within(attr, np.abs(np.asarray(getattr(code, attr)) - getattr(ref, attr)), slack))
    if not np.array_equal(np.asarray(code.residual), ref.residual):
        raise AssertionError("residual differs from golden")
    return out


@prop("matches_golden_decode", ["decode"], small_cases())
def matches_golden_decode(backend, case):
    """decode(code) equals the golden decode of the same code within decode tolerance."""
    code = golden.encode(case.keys, **case.config.kwargs())
    got = host(backend.decode(code))
    want = golden.decode(code)
    rho, theta, r_min, r_step, phi_min, phi_step, _ = golden._with_head_axis(code)
    g, eps = code.group_size, eps_of(backend, "decode")
    r_scale = np.repeat(tol.value_scale(code.r_min, code.r_step, code.r_bits), g, -2)
    a_scale = np.repeat(tol.value_scale(code.phi_min, code.phi_step, code.t_bits), g, -2)
    r_hat = golden.bin_centers(code.r_min, code.r_step, code.rho)
    per_pair = tol.decode_bound(r_scale, r_hat, a_scale, eps)
    bound = golden.merge_pairs(per_pair, per_pair, code.pairing)
    lq = code.n_quantized
    if got.shape != want.shape:
        raise AssertionError(f"decode shape {got.shape}, expected {want.shape}")
    if not np.array_equal(got[..., lq:, :], want[..., lq:, :]):
        raise AssertionError("decoded residual tokens differ from the residual")
    return within("decode vs golden", np.abs(got[..., :lq, :] - want[..., :lq, :]), bound)


@prop("matches_golden_scores", ["scores"], small_cases())
def matches_golden_scores(backend, case):
    """scores(q, code) equals the golden table scores of the same code within score tolerance."""
    code = golden.encode(case.keys, **case.config.kwargs())
    got = host(backend.scores(case.queries, code))
    want = golden.scores(case.queries, code)
    if got.shape != want.shape:
        raise AssertionError(f"scores shape {got.shape}, expected {want.shape}")
    bound = backend_score_tolerance(backend, case.queries, code)
    return within("scores vs golden", np.abs(got - want), bound)


# --------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    status: str                  # "pass", "FAIL" or "n/a"
    examples: int = 0
    worst: float = 0.0
    band: int = 0
    message: str = ""
    notes: list = field(default_factory=list)


def _leaf_failures(error) -> list:
    """The individual exceptions of an exception group (nested or not), or [error]."""
    inner = getattr(error, "exceptions", None)
    if not inner:
        return [error]
    return [leaf for sub in inner for leaf in _leaf_failures(sub)]


def run_property(prop_: Property, backend, examples=None, seed=0, limits: Limits = NORMAL,
                 profile=None) -> Result:
    """Run one property on a backend with Hypothesis; never raises for a failing backend."""
    missing = [op for op in prop_.needs if not hasattr(backend, op)]
    if missing:
        return Result(prop_.name, "n/a", message=f"backend has no {', '.join(missing)}")
    total = Outcome()
    count = 0
    parent = settings.get_profile(profile) if profile else settings.default
    # Each property draws its own examples: a seed of its own (derived from its
    # name), not Hypothesis's derandomization, which keys on the function and
    # would hand every property the same sequence.
    overrides = dict(deadline=None, database=None, print_blob=True, derandomize=False,
                     suppress_health_check=list(HealthCheck))
    if examples is not None:
        overrides["max_examples"] = int(examples)

    @settings(parent, **overrides)
    @given(prop_.strategy(limits))
    def run(example):
        nonlocal total, count
        count += 1
        total = total.merge(prop_.check(backend, example))

    run = hypothesis_seed(zlib.crc32(prop_.name.encode()) + int(seed or 0))(run)
    try:
        run()
    except Exception as error:  # the backend failed (assertion) or crashed: report, don't raise
        failures = _leaf_failures(error)     # Hypothesis groups distinct failures together
        message = "; ".join(f"{type(f).__name__}: {f}" for f in failures)
        notes = [note for f in failures for note in getattr(f, "__notes__", [])]
        return Result(prop_.name, "FAIL", count, total.worst, total.band, message, notes)
    return Result(prop_.name, "pass", count, total.worst, total.band)
