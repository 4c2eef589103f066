"""The CUDA scoring option table="float16": float32 tolerances plus float16 rounding of each table entry.

Runs on the numba-cuda simulator without --gpu, on the real GPU with it.
"""
import numpy as np
import pytest

from polarref import golden, tolerances as tol, verify
from polarref.backends import load_backend
from polarref.strategies import NORMAL, SMALL
from polarref.verify import golden_score_tolerance, score_tolerance

SCORE_PROPERTIES = [p for p in verify.PROPERTIES if p.needs == ("scores",)]


def test_scores_properties_are_the_ones_expected():
    assert {p.name for p in SCORE_PROPERTIES} == {
        "table_scores_match_decode", "gqa_matches_repeated_kv", "matches_golden_scores"}


@pytest.mark.parametrize("prop", SCORE_PROPERTIES, ids=lambda p: p.name)
def test_half_tables(prop, request):
    backend = load_backend("cuda-fp16")
    assert backend.working_dtype == np.float32 and backend.table_dtype == np.float16
    on_gpu = request.config.getoption("--gpu")
    result = verify.run_property(prop, backend, examples=None if on_gpu else 6, seed=0,
                                 limits=NORMAL if on_gpu else SMALL)
    assert result.status == "pass", "\n".join([result.message, *result.notes])
    assert result.examples > 0


def test_half_tables_really_round_the_tables():
    """Not the float32 path under another name: results differ, by less than the fp16 bound."""
    import cuda_kernels

    rng = np.random.default_rng(3)
    keys = rng.standard_normal((2, 32, 16)) * 3
    queries = rng.standard_normal((4, 16))
    code = golden.encode(keys, r_bits=4, t_bits=4, group_size=16)
    s32 = np.asarray(cuda_kernels.scores(queries, code))
    s16 = np.asarray(cuda_kernels.scores(queries, code, table="float16"))
    assert np.abs(s16 - s32).max() > 0
    want = golden.scores(queries, code)
    assert np.abs(s32 - want).max() < np.abs(s16 - want).max()
    # the float16 term of the tolerance is needed (the float32 one alone fails) and sufficient
    float32_only = golden_score_tolerance(queries, code, tol.EPS32)
    assert (np.abs(s16 - want) > float32_only).any()
    assert (np.abs(s16 - want) <= float32_only + score_tolerance(queries, code, 0.0, tol.EPS16)).all()


def test_unknown_table_kind_is_named():
    import cuda_kernels

    code = golden.encode(np.ones((8, 4)), group_size=4)
    with pytest.raises(ValueError, match="table.*bfloat16"):
        cuda_kernels.scores(np.ones((1, 4)), code, table="bfloat16")
