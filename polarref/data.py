"""The bundled sample of real keys, and generated keys when a file is not at hand.

The sample (`polarref/data/smollm2_sample.npz`) holds post-RoPE keys,
queries and values captured from SmolLM2-135M (see analysis/capture.py for
how), in the half-split RoPE layout, with shapes

    keys, values  (layers, tokens, kv_heads, head_dim)
    queries       (layers, tokens, q_heads, head_dim)

`as_heads` turns them into the library's layout (..., H, L, d).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).with_name("data") / "smollm2_sample.npz"


def load_keys_file(path=None) -> dict:
    """Arrays of a capture file (.npz with keys/queries/values, or a .npy of keys).

    Returns a dict with at least "keys"; "queries", "values" and string
    provenance fields when the file has them. Loads with allow_pickle=False.
    """
    path = Path(path) if path is not None else SAMPLE
    if not path.exists():
        raise FileNotFoundError(f"keys file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        keys = np.load(path, allow_pickle=False)
        if keys.ndim == 3:          # (tokens, heads, d): one layer
            keys = keys[None]
        if keys.ndim != 4:
            raise ValueError(f"{path}: a .npy of keys must be (layers, tokens, heads, d), got {keys.shape}")
        return {"keys": keys}
    with np.load(path, allow_pickle=False) as archive:
        data = {name: archive[name] for name in archive.files}
    if "keys" not in data:
        raise ValueError(f"{path}: no 'keys' array (has {sorted(data)})")
    if data["keys"].ndim != 4:
        raise ValueError(f"{path}: keys must be (layers, tokens, heads, d), got {data['keys'].shape}")
    return data


def as_heads(array):
    """(layers, tokens, heads, d) -> (layers, heads, tokens, d), float64."""
    return np.ascontiguousarray(np.swapaxes(np.asarray(array, dtype=np.float64), 1, 2))


def synthetic_keys(seed=0, heads=3, tokens=2048, d=64, outliers=4):
    """Gaussian keys with a few outlier channels and RoPE-like rotation, (heads, tokens, d).

    Each pair j rotates with position at frequency 10000**(-2j/d), as RoPE
    does, and `outliers` channels (one side of a pair) are 20x larger.
    """
    rng = np.random.default_rng(seed)
    p = d // 2
    raw = rng.standard_normal((heads, tokens, d)) + rng.standard_normal((heads, 1, d))
    raw[..., rng.choice(p, outliers, replace=False)] *= 20.0
    angle = np.arange(tokens)[:, None] * 10000.0 ** (-np.arange(p) / p)
    x, y = raw[..., :p], raw[..., p:]
    c, s = np.cos(angle), np.sin(angle)
    return np.concatenate([x * c - y * s, x * s + y * c], axis=-1)
