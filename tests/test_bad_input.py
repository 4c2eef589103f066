"""Bad input gets a clear error naming the argument and the value, on every backend."""
import warnings

import numpy as np
import pytest

import polarref

RNG = np.random.default_rng(7)
KEYS = RNG.standard_normal((2, 40, 8))
QUERIES = RNG.standard_normal((4, 8))


def with_value(array, index, value):
    array = array.copy()
    array[index] = value
    return array


# (case id, operation, arguments, error type, words the message must contain)
ENCODE_CASES = [
    ("nan_keys", dict(keys=with_value(KEYS, (1, 3, 5), np.nan)), ValueError, ["keys", "NaN", "(1, 3, 5)"]),
    ("inf_keys", dict(keys=with_value(KEYS, (0, 0, 0), -np.inf)), ValueError, ["keys", "(0, 0, 0)"]),
    ("odd_d", dict(keys=KEYS[..., :7]), ValueError, ["keys", "d=7"]),
    ("zero_r_bits", dict(keys=KEYS, r_bits=0), ValueError, ["r_bits", "0"]),
    ("zero_t_bits", dict(keys=KEYS, t_bits=0), ValueError, ["t_bits", "0"]),
    ("too_many_bits", dict(keys=KEYS, r_bits=5, t_bits=4), ValueError, ["r_bits", "t_bits", "8"]),
    ("float_bits", dict(keys=KEYS, r_bits=4.0), TypeError, ["r_bits", "4.0"]),
    ("bool_bits", dict(keys=KEYS, t_bits=True), TypeError, ["t_bits", "True"]),
    ("zero_group", dict(keys=KEYS, group_size=0), ValueError, ["group_size", "0"]),
    ("bad_pairing", dict(keys=KEYS, pairing="halves"), ValueError, ["pairing", "halves"]),
    ("int_keys", dict(keys=np.ones((4, 8), dtype=np.int32)), TypeError, ["keys", "int32"]),
    ("complex_keys", dict(keys=KEYS.astype(np.complex128)), TypeError, ["keys", "complex128"]),
    ("zero_d_keys", dict(keys=np.float64(1.0)), ValueError, ["keys", "0-d"]),
    ("one_d_keys", dict(keys=np.ones(8)), ValueError, ["keys", "1-d"]),
]

SCORE_CASES = [
    ("nan_queries", dict(queries=with_value(QUERIES, (2, 1), np.nan)), ValueError, ["queries", "(2, 1)"]),
    ("head_dim_mismatch", dict(queries=QUERIES[..., :6]), ValueError, ["queries", "d=6", "d=8"]),
    ("hq_not_multiple", dict(queries=QUERIES[:3]), ValueError, ["H_q=3", "H_kv=2"]),
    ("zero_d_queries", dict(queries=np.float64(0.5)), ValueError, ["queries", "0-d"]),
    ("int_queries", dict(queries=np.ones((4, 8), dtype=np.int64)), TypeError, ["queries", "int64"]),
    ("complex_queries", dict(queries=QUERIES + 1j), TypeError, ["queries", "complex"]),
]


def expect_error(call, kind, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy warning leaking out fails the test
        with pytest.raises(kind) as info:
            call()
    message = str(info.value)
    for word in words:
        assert word in message, f"error message {message!r} lacks {word!r}"


@pytest.mark.parametrize("case_id, kwargs, kind, words", ENCODE_CASES, ids=[c[0] for c in ENCODE_CASES])
def test_encode_rejects(backend, case_id, kwargs, kind, words):
    backend, *_ = backend
    expect_error(lambda: backend.encode(**kwargs), kind, words)


@pytest.mark.parametrize("case_id, kwargs, kind, words", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_scores_rejects(backend, case_id, kwargs, kind, words):
    backend, *_ = backend
    code = polarref.encode(KEYS, group_size=16)
    expect_error(lambda: backend.scores(kwargs["queries"], code), kind, words)


def test_decode_rejects_non_code(backend):
    backend, *_ = backend
    expect_error(lambda: backend.decode(KEYS), TypeError, ["code", "PolarCode"])


def tampered(field, value):
    """A code from encode with one field replaced: codes past the top bin, or not uint8."""
    from dataclasses import replace

    code = polarref.encode(KEYS, r_bits=3, t_bits=2, group_size=16)
    return replace(code, **{field: value(getattr(code, field))})


BAD_CODES = [
    ("rho_too_big", "rho", lambda a: with_value(a, (1, 5, 2), 8), ValueError, ["code.rho", "8", "r_bits=3"]),
    ("theta_too_big", "theta", lambda a: with_value(a, (0, 0, 0), 255), ValueError,
     ["code.theta", "255", "t_bits=2"]),
    ("rho_int64", "rho", lambda a: a.astype(np.int64), TypeError, ["code.rho", "int64"]),
    ("nan_r_min", "r_min", lambda a: with_value(a, (0, 1, 2), np.nan), ValueError,
     ["code.r_min", "nan", "(0, 1, 2)"]),
    ("negative_phi_step", "phi_step", lambda a: with_value(a, (1, 0, 3), -0.5), ValueError,
     ["code.phi_step", "-0.5", "(1, 0, 3)"]),
    ("int_residual", "residual", lambda a: a.astype(np.int64), TypeError, ["code.residual", "int64"]),
]


def test_checked_code_cannot_be_changed_in_place(backend):
    """The values check holds after the first call: the code's arrays become read-only."""
    backend, *_ = backend
    code = polarref.encode(KEYS, r_bits=3, t_bits=2, group_size=16)
    backend.scores(QUERIES, code)
    with pytest.raises(ValueError, match="read-only"):
        code.rho[0, 0, 0] = 8


@pytest.mark.parametrize("operation", ["decode", "scores"])
@pytest.mark.parametrize("case_id, field, value, kind, words", BAD_CODES, ids=[c[0] for c in BAD_CODES])
def test_bad_codes_rejected(backend, operation, case_id, field, value, kind, words):
    """Codes out of range would index past a table: an error, never a masked or garbage read."""
    backend, *_ = backend
    code = tampered(field, value)
    call = (lambda: backend.decode(code)) if operation == "decode" else (lambda: backend.scores(QUERIES, code))
    expect_error(call, kind, words)


def test_empty_batches(backend):
    """Empty leading axes give empty results of the right shape; zero KV heads cannot be scored."""
    backend, *_ = backend
    empty = backend.encode(np.zeros((0, 40, 8)), group_size=16)
    assert np.asarray(empty.rho).shape == (0, 32, 4) and np.asarray(empty.residual).shape == (0, 8, 8)
    assert np.asarray(backend.decode(empty)).shape == (0, 40, 8)
    expect_error(lambda: backend.scores(np.zeros((0, 8)), empty), ValueError, ["no KV heads", "(0,)"])
    code = polarref.encode(KEYS, group_size=16)
    assert np.asarray(backend.scores(np.zeros((0, 8)), code)).shape == (0, 40)
    batch = polarref.encode(np.zeros((0, 2, 40, 8)), group_size=16)
    assert np.asarray(backend.scores(np.zeros((0, 4, 8)), batch)).shape == (0, 4, 40)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_keys_accepted(backend, dtype):
    """float16 / float32 keys are accepted; the golden model computes in float64."""
    backend, *_ = backend
    keys = KEYS.astype(dtype)
    code = backend.encode(keys, group_size=16)
    assert np.asarray(code.rho).dtype == np.uint8
    assert np.array_equal(np.asarray(code.residual), keys[..., 32:, :])


def test_dense_scores_checks_like_scores():
    expect_error(lambda: polarref.dense_scores(QUERIES[:3], KEYS), ValueError, ["H_q=3", "H_kv=2"])
    expect_error(lambda: polarref.dense_scores(QUERIES, KEYS.astype(int)), TypeError, ["keys"])


def test_overflow_is_an_error_not_inf():
    """Finite keys near the float64 limit: encode works, a score that overflows raises."""
    huge = KEYS * 1e300
    code = polarref.encode(huge, group_size=16)
    assert np.isfinite(polarref.decode(code)).all()
    with pytest.raises(OverflowError, match="scores"):
        polarref.scores(QUERIES * 1e300, code)
