"""Deliberately wrong backends: `polarref verify` must catch each of them.

Each is the golden model with one plausible kernel bug.
"""
from types import SimpleNamespace

import numpy as np

from polarref import golden
from polarref.code import PolarCode


def _without_midpoint(code: PolarCode) -> PolarCode:
    """Shift every parameter so decoding uses lo + code * step (drops the + 0.5)."""
    return PolarCode(code.rho, code.theta, code.r_min - 0.5 * code.r_step, code.r_step,
                     code.phi_min - 0.5 * code.phi_step, code.phi_step, code.residual,
                     code.r_bits, code.t_bits, code.group_size, code.pairing)


# Bug 1: bin lower edges instead of midpoints, in decode and in the tables.
no_midpoint = SimpleNamespace(
    WORKING_DTYPE=np.float64,
    decode=lambda code: golden.decode(_without_midpoint(code)),
    scores=lambda queries, code: golden.scores(queries, _without_midpoint(code)),
)


# Bug 2: always pairs (j, j + d/2), whatever `pairing` says.
def _encode_half_always(keys, r_bits=4, t_bits=4, group_size=128, pairing="half"):
    code = golden.encode(keys, r_bits, t_bits, group_size, "half")
    return PolarCode(code.rho, code.theta, code.r_min, code.r_step, code.phi_min, code.phi_step,
                     code.residual, code.r_bits, code.t_bits, code.group_size, pairing)


swapped_pairing = SimpleNamespace(WORKING_DTYPE=np.float64, encode=_encode_half_always)


# Bug 3: the group maximum is not clipped into the top bin (its code wraps to 0 in uint8).
def _encode_unclipped(keys, r_bits=4, t_bits=4, group_size=128, pairing="half"):
    code = golden.encode(keys, r_bits, t_bits, group_size, pairing)
    r, _ = golden.to_polar(*golden.split_pairs(np.asarray(keys, float)[..., :code.n_quantized, :], pairing))
    grouped = r.reshape(*r.shape[:-2], -1, group_size, r.shape[-1])
    at_max = (grouped == grouped.max(axis=-2, keepdims=True)).reshape(r.shape)
    rho = np.where(at_max & (np.repeat(code.r_step, group_size, -2) > 0), 0, code.rho).astype(np.uint8)
    return PolarCode(rho, code.theta, code.r_min, code.r_step, code.phi_min, code.phi_step,
                     code.residual, code.r_bits, code.t_bits, code.group_size, code.pairing)


unclipped_max = SimpleNamespace(WORKING_DTYPE=np.float64, encode=_encode_unclipped)


# Bug 4: says it encodes and decodes in float64 but rounds the range starts to float32
# (a precision regression only a float64 tolerance can see).
def _rounded(code: PolarCode) -> PolarCode:
    f32 = lambda a: np.asarray(a, np.float32).astype(np.float64)   # noqa: E731
    return PolarCode(code.rho, code.theta, f32(code.r_min), code.r_step, f32(code.phi_min), code.phi_step,
                     code.residual, code.r_bits, code.t_bits, code.group_size, code.pairing)


float32_params = SimpleNamespace(
    PRECISION={"encode": np.float64, "decode": np.float64},
    encode=lambda *args, **kwargs: _rounded(golden.encode(*args, **kwargs)),
    decode=lambda code: golden.decode(_rounded(code)),
)
