"""Hypothesis strategies: the one place test and verify inputs come from.

Small builders that compose. Arrays are drawn as (seed, shape, distribution)
and made by a seeded NumPy generator, which keeps examples fast, replayable
and shrinkable (Hypothesis shrinks the seed, the shape and the knobs). The
distributions aim at the places a quantizer breaks: outlier channels, tiny
and huge magnitudes (scaled by powers of two), constant groups and
repeated values (zero ranges), angles straddling 0 / 2*pi, awkward sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from .checks import MAX_INDEX_BITS


@dataclass(frozen=True)
class Limits:
    """How large drawn arrays may be (the CUDA simulator wants small ones)."""

    max_kv_heads: int = 3
    max_rep: int = 3
    max_tokens: int = 400
    max_pairs: int = 24


NORMAL = Limits()
SMALL = Limits(max_kv_heads=2, max_rep=2, max_tokens=140, max_pairs=6)


@dataclass(frozen=True)
class Config:
    r_bits: int
    t_bits: int
    group_size: int
    pairing: str

    def kwargs(self) -> dict:
        return dict(r_bits=self.r_bits, t_bits=self.t_bits, group_size=self.group_size,
                    pairing=self.pairing)


@dataclass(frozen=True)
class Case:
    """One drawn example: keys (..., H_kv, L, d), queries (..., H_q, d) and a configuration."""

    keys: np.ndarray
    queries: np.ndarray
    config: Config
    recipe: str  # how the keys were made, for the failure report

    def __repr__(self) -> str:
        return (f"Case(keys{self.keys.shape} {self.keys.dtype}, queries{self.queries.shape}, "
                f"{self.config}, {self.recipe})")


@st.composite
def configs(draw, max_group: int = 130, bits=None) -> Config:
    """Bits 1..7 with r + t <= 8, group sizes from 1 (degenerate) to past 128, both pairings."""
    if bits is None:
        r_bits = draw(st.integers(1, MAX_INDEX_BITS - 1))
        t_bits = draw(st.integers(1, MAX_INDEX_BITS - r_bits))
    else:
        r_bits, t_bits = bits
    group = draw(st.one_of(st.sampled_from([1, 2, 3, 7, 16, 32, 128]), st.integers(1, max_group)))
    pairing = draw(st.sampled_from(["half", "interleaved"]))
    return Config(r_bits, t_bits, min(group, max_group), pairing)


DISTRIBUTIONS = ("gaussian", "outlier_channels", "straddle_zero_angle", "repeated_values",
                 "constant_groups", "lognormal")


def make_keys(seed, shape, distribution, exponent, group_size):
    """Deterministic keys of `shape` (..., L, d) from a seed; see DISTRIBUTIONS."""
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal(shape)
    d = shape[-1]
    if distribution == "outlier_channels":      # a few channels 10-50x larger, as in real keys
        channels = rng.choice(d, size=max(1, d // 8), replace=False)
        keys[..., channels] *= rng.uniform(10, 50, size=len(channels))
    elif distribution == "straddle_zero_angle":  # pairs pointing near phi = 0 from both sides
        keys[..., : d // 2] = np.abs(keys[..., : d // 2]) + 3.0
        keys[..., d // 2:] *= 0.2
    elif distribution == "repeated_values":      # few distinct values: zero and tiny ranges
        keys = np.round(keys)
    elif distribution == "constant_groups":      # every token equal: all groups constant
        keys = np.broadcast_to(keys[..., :1, :], shape).copy()
    elif distribution == "lognormal":
        keys = np.exp(rng.standard_normal(shape)) * np.sign(keys)
    return keys * 2.0**exponent


@st.composite
def cases(draw, limits: Limits = NORMAL, config=None, distribution=None, leading=None,
          dtype=None) -> Case:
    """A full example; every argument left None is drawn."""
    config = config if config is not None else draw(configs())
    h_kv = draw(st.integers(1, limits.max_kv_heads))
    rep = draw(st.integers(1, limits.max_rep))
    tokens = draw(st.one_of(st.integers(0, limits.max_tokens),
                            st.sampled_from([config.group_size, 2 * config.group_size])))
    tokens = min(tokens, limits.max_tokens)
    # Half the time a vector-friendly pair count (16: the Numba AVX-512 kernel's case).
    friendly = [p for p in (16, 8, 4) if p <= limits.max_pairs]
    if draw(st.booleans()):
        pairs = draw(st.sampled_from(friendly))
    else:
        pairs = draw(st.integers(1, limits.max_pairs))
    distribution = distribution or draw(st.sampled_from(DISTRIBUTIONS))
    exponent = draw(st.sampled_from([0, 0, 0, -20, 20, -60]))
    leading = leading if leading is not None else draw(st.sampled_from(["heads", "batch", "none"]))
    if leading == "none":               # keys (L, d): one KV head
        h_kv, key_lead, q_lead = 1, (), (rep,)
    elif leading == "batch":            # keys (B, H_kv, L, d)
        batch = draw(st.integers(1, 2))
        key_lead, q_lead = (batch, h_kv), (batch, h_kv * rep)
    else:                               # keys (H_kv, L, d)
        key_lead, q_lead = (h_kv,), (h_kv * rep,)
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = dtype or draw(st.sampled_from([np.float64, np.float64, np.float32, np.float16]))
    keys = make_keys(seed, (*key_lead, tokens, 2 * pairs), distribution, exponent, config.group_size)
    if np.dtype(dtype) == np.float16:
        keys = np.clip(keys / 2.0**exponent, -6e4, 6e4)  # float16 holds |x| < 65504
    keys = keys.astype(dtype)
    queries = np.random.default_rng(seed + 1).standard_normal((*q_lead, 2 * pairs))
    recipe = f"seed={seed} distribution={distribution} exponent={exponent}"
    return Case(keys, queries, config, recipe)


@st.composite
def polar_groups(draw, limits: Limits = NORMAL, config=None):
    """Keys (H, Lq, d) built from radii and angles, angles of each group inside (a, b).

    For the rotation property: the group's angles stay in a window that a
    common rotation can move without crossing 0 / 2*pi. Returns
    (keys, config, rotation angle, seed) with every group a full group.
    """
    config = config if config is not None else draw(configs(max_group=64))
    heads = draw(st.integers(1, limits.max_kv_heads))
    groups = draw(st.integers(1, 3))
    pairs = draw(st.integers(1, limits.max_pairs))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tokens = groups * config.group_size
    width = draw(st.floats(0.1, 2.5))                   # angular window of every group
    start = draw(st.floats(0.2, 2 * np.pi - 0.2 - width - 0.2))
    room_low, room_high = start - 0.1, 2 * np.pi - 0.1 - (start + width)
    alpha = draw(st.floats(-room_low, room_high))       # rotation that keeps the window clear
    phi = start + width * rng.random((heads, tokens, pairs))
    r = rng.uniform(0.1, 10.0, (heads, tokens, pairs))
    x, y = r * np.cos(phi), r * np.sin(phi)
    keys = np.concatenate([x, y], -1) if config.pairing == "half" else \
        np.stack([x, y], -1).reshape(heads, tokens, 2 * pairs)
    return keys, config, alpha, seed
