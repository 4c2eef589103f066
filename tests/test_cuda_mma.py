"""The tensor-core scoring path, table="mma" (backend "cuda-mma"): float16 keys and queries, float32 sums.

Runs on the numba-cuda simulator without --gpu (the inline PTX has Python
twins there, the mma a lane-by-lane exchange), on the real GPU with it. The
drawn property examples often have shapes the kernel does not take (P or G
not a multiple of 16, which fall back to the float32 table kernel), so the
fixed cases below are all shapes it does take, and a test checks that they
really ran on float16 keys.
"""
import numpy as np
import pytest

from polarref import golden, tolerances as tol, verify
from polarref.backends import load_backend
from polarref.strategies import Case, Config, NORMAL, SMALL, make_keys
from polarref.verify import golden_score_tolerance

SCORE_PROPERTIES = [p for p in verify.PROPERTIES if p.needs == ("scores",)]

# (H_kv, M, L, P, G, r_bits, t_bits, pairing, distribution, scale)
CASES = [
    (1, 4, 256, 64, 128, 4, 4, "half", "outlier_channels", 1.0),        # W-GPU's head shape
    (2, 3, 69, 32, 32, 4, 4, "interleaved", "gaussian", 30.0),          # residual tokens, M odd
    (1, 9, 48, 16, 16, 3, 5, "half", "straddle_zero_angle", 1e-3),      # 2 head chunks, small keys
    (1, 2, 32, 16, 16, 4, 4, "half", "outlier_channels", 2.0**-20),     # float16-subnormal steps
    (1, 2, 96, 16, 48, 2, 6, "half", "repeated_values", 1.0),           # 3 warps a group
    (1, 4, 32, 16, 32, 5, 2, "interleaved", "gaussian", 1.0),           # 4 bins: one store a row
]


# kernel variants as launch.mma_config overrides: lean with 2 groups a block, the launcher's choice
# for large inputs (2 token slots a row where the heads fit 4 columns, v2.5); lean with one token a
# row (v2.4, which the launcher takes for inputs of one group a block, as these are); and v2.2
VARIANTS = {"lean": dict(groups_per_block=2), "1 slot": dict(slots=1), "v2.2": dict(lean=False)}
# every score property on the default, matches_golden_scores on the other variants: they differ in
# indexing and scheduling only, which that comparison checks (the others compare the kernel with
# itself or with its decode, and cost simulator time)
VARIANT_CHECKS = [(v, p.name) for v in VARIANTS for p in SCORE_PROPERTIES
                  if v == "lean" or p.name == "matches_golden_scores"]


def _case_id(c):
    return f"P{c[3]}-G{c[4]}-M{c[1]}-r{c[5]}t{c[6]}-{c[7]}"


def _example(case, seed=11):
    h_kv, m, length, p, g, r_bits, t_bits, pairing, distribution, scale = case
    keys = make_keys(seed, (h_kv, length, 2 * p), distribution, 0, g) * scale
    queries = np.random.default_rng(seed + 1).standard_normal((h_kv * m, 2 * p))
    return Case(keys, queries, Config(r_bits, t_bits, g, pairing), f"fixed {distribution}")


@pytest.fixture
def mma_variant(request, monkeypatch):
    """The kernel variant a test runs (indirect parameter, default lean): the launcher's
    configurations get its overrides for the test's duration."""
    from cuda_kernels import launch as CL

    overrides = VARIANTS[getattr(request, "param", "lean")]
    if overrides:
        config = CL.mma_config
        monkeypatch.setattr(CL, "mma_config", lambda *args, **kw: config(*args, **{**overrides, **kw}))
    return overrides


@pytest.fixture(scope="module")
def mma_backend():
    backend = load_backend("cuda-mma")
    assert backend.key_dtype == np.float16 and backend.working_dtype == np.float32
    return backend


@pytest.mark.parametrize("mma_variant, check", VARIANT_CHECKS, indirect=["mma_variant"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_mma_matches_golden(mma_backend, mma_variant, case, check):
    from cuda_kernels import mma

    example = _example(case)
    assert mma.mma_eligible(case[3], case[6], case[4])
    prop = {p.name: p for p in verify.PROPERTIES}[check]
    prop.check(mma_backend, example)                     # raises AssertionError on a mismatch


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_mma_really_rounds_keys_to_float16(case):
    """Not the float32 path under another name: the float16 term of the bound is needed, and enough."""
    import cuda_kernels

    example = _example(case)
    code = golden.encode(example.keys, **example.config.kwargs())
    want = golden.scores(example.queries, code)
    got = np.asarray(cuda_kernels.scores(example.queries, code, table="mma"))
    float32_only = golden_score_tolerance(example.queries, code, tol.EPS32)
    with_keys = golden_score_tolerance(example.queries, code, tol.EPS32, key_dtype=np.float16)
    err = np.abs(got - want)
    assert (err > float32_only).any()
    assert (err <= with_keys).all()


@pytest.mark.parametrize("prop", SCORE_PROPERTIES, ids=lambda p: p.name)
def test_mma_properties(prop, request):
    """The drawn examples too. Under the simulator they are small (P <= 6): all take the float32
    fallback, which this checks is within the backend's bound; the CASES above are the
    tensor-core shapes there. With --gpu (P up to 24) a few drawn examples take the tensor cores."""
    on_gpu = request.config.getoption("--gpu")
    result = verify.run_property(prop, load_backend("cuda-mma"), examples=None if on_gpu else 4, seed=0,
                                 limits=NORMAL if on_gpu else SMALL)
    assert result.status == "pass", "\n".join([result.message, *result.notes])
    assert result.examples > 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("p, g, over", [
    (16, 16, dict(groups_per_block=2)),
    (64, 64, dict(groups_per_block=2, warps=4, slots=1)),   # 4 warps of one 16-token tile each
    (64, 128, dict(groups_per_block=3, wide_loads=False)),
], ids=["gpb2", "gpb2-4warps", "gpb3-4B-loads"])
def test_several_groups_per_block_and_a_partial_last_block(p, g, over, variant):
    """Launch shapes the launcher picks only for large inputs: 3 or 4 groups in blocks of 2 or 3 (the
    lean variant loads the next group's index words between k-steps: 16-byte loads with 2 slots,
    8-byte with 1, or 4-byte)."""
    _check_launch(p, g, {**VARIANTS[variant], **over})      # the case's groups a block, warps win


@pytest.mark.parametrize("p, g, m, over", [
    (64, 64, 2, dict(slots=4, warps=1, groups_per_block=2)),        # 4 tokens a row, 64-token tiles
    (64, 128, 3, dict(slots=2, warps=2, words_per_load=2, groups_per_block=2)),   # 8-byte loads
    (64, 128, 4, dict(slots=2, warps=1, groups_per_block=2)),       # one warp builds the whole table
    (32, 64, 1, dict(slots=4, warps=1, groups_per_block=3)),        # P = 32: 32 pairs a chunk
    (64, 128, 4, dict(slots=2, groups_per_block=3)),                # the launcher's W-GPU kernel, 3 groups a block
    (16, 32, 6, dict(slots=2, groups_per_block=2)),                 # 6 heads: 2 head chunks (grid z) of 4
    (16, 64, 3, dict(slots=4, groups_per_block=2)),                 # 3 heads: 2 head chunks of 2
    (64, 128, 4, dict(slots=2, groups_per_block=2, interleave=False)),   # v2.8: a lane's bytes contiguous
], ids=["4slots", "2slots-8B-loads", "2slots-1warp", "4slots-P32-gpb3", "2slots-gpb3", "2slots-6heads",
        "4slots-3heads", "2slots-contiguous-chunks"])
def test_token_slot_configurations(p, g, m, over):
    """Token-slot layouts against the golden model, beyond what the launcher picks for W-GPU (2 slots,
    2 warps, 16-byte loads, 32 groups a block): 4 tokens a row of A, 8-byte loads, a single warp,
    a partial last block, and more heads than a slot's columns (several blockIdx.z)."""
    _check_launch(p, g, over, m=m)


def _check_launch(p, g, over, m=4, h_kv=2, n=None, before_launch=None):
    """n groups of h_kv KV heads with m query heads each through launch_mma_scores with these config
    overrides: every score written, within the float16-key bound of the golden model. Returns the
    configuration. before_launch: called right before the launch (with the inputs on the device).
    n defaults to one group more than a block scores (the config's groups_per_block): a full block
    that prefetches the next group, and a partial last one, at the least simulator time."""
    from numba import cuda

    from cuda_kernels import launch as CL

    n = n or over.get("groups_per_block", 4) + 1
    keys = make_keys(5, (h_kv, n * g, 2 * p), "gaussian", 0, g)
    queries = np.random.default_rng(6).standard_normal((h_kv * m, 2 * p))
    code = golden.encode(keys, group_size=g)
    index, r_min, r_step, phi_min, phi_step = CL.device_code_arrays(code)
    q = cuda.to_device(queries.astype(np.float32).reshape(-1))
    out = cuda.to_device(np.full(h_kv * m * n * g, np.nan, np.float32))
    flags = cuda.to_device(np.zeros(1, np.int32))
    cfg = CL.mma_config(p, 4, 4, g, n, h_kv, CL._pointer(index), m, **over)
    assert all(cfg[k] == v for k, v in over.items()), cfg
    from cuda_kernels import mma as MMA
    assert MMA.mma_warps(g, cfg["warps"], cfg["slots"]) == cfg["warps"], cfg      # the warps that run
    if before_launch:
        before_launch()
    CL.launch_mma_scores(index, r_min, r_step, phi_min, phi_step, q, g, "half", m, out, n * g, h_kv, n,
                         flags, cfg)
    got = out.copy_to_host().reshape(h_kv * m, n * g).astype(np.float64)
    want = golden.scores(queries, code)
    assert int(flags.copy_to_host()[0]) == 0
    assert np.isfinite(got).all(), "some scores were never written"
    bound = golden_score_tolerance(queries, code, tol.EPS32, key_dtype=np.float16)
    assert (np.abs(got - want) <= bound).all()
    return cfg


@pytest.mark.parametrize("mma_variant", VARIANTS, indirect=True)
@pytest.mark.parametrize("what", ["queries", "keys"])
def test_beyond_float16_range_is_an_error_not_inf(what, mma_variant):
    import cuda_kernels

    keys = make_keys(3, (1, 32, 32), "gaussian", 0, 16)
    queries = np.random.default_rng(4).standard_normal((2, 32))
    if what == "keys":
        keys[0, 5, 3] = 1e5
    else:
        queries[1, 7] = -7e4
    code = golden.encode(keys, group_size=16)
    with pytest.raises(OverflowError, match="float16 range.*table='float32'"):
        cuda_kernels.scores(queries, code, table="mma")
    assert np.isfinite(cuda_kernels.scores(queries, code)).all()     # the float32 path takes them


def test_ineligible_shapes_use_the_float32_tables():
    """P = 6 pairs is not a multiple of 16: table='mma' gives exactly the float32 kernel's scores."""
    import cuda_kernels

    keys = make_keys(8, (1, 40, 12), "gaussian", 0, 8)
    queries = np.random.default_rng(9).standard_normal((3, 12))
    code = golden.encode(keys, group_size=8)
    assert np.array_equal(cuda_kernels.scores(queries, code, table="mma"), cuda_kernels.scores(queries, code))


def test_an_index_not_4_byte_aligned_falls_back_to_float32_tables():
    """The mma kernel loads the index in 4-byte words: an index viewed one byte into a device buffer
    runs the float32 table kernel instead (1-byte loads), within the float32 bound, which float16
    keys would exceed. The simulator's pointers are host addresses, so this runs there too."""
    import dataclasses

    from numba import cuda

    import cuda_kernels
    from cuda_kernels import launch as CL

    keys = make_keys(7, (1, 64, 32), "outlier_channels", 0, 16)
    queries = np.random.default_rng(8).standard_normal((4, 32))
    code = golden.encode(keys, group_size=16)
    packed = ((code.rho.astype(np.uint32) << 4) | code.theta).astype(np.uint8)
    buf = cuda.to_device(np.concatenate([np.zeros(1, np.uint8), packed.ravel()]))
    shifted = dataclasses.replace(CL.encode(cuda.to_device(keys.astype(np.float32)), group_size=16),
                                  packed=buf[1:].reshape(packed.shape))
    assert CL._pointer(shifted.packed) % 4 == 1
    # the device code carries float32 parameters of its own encode; score the golden codes with them
    host_code = dataclasses.replace(code, r_min=shifted.r_min.copy_to_host().astype(np.float64),
                                    r_step=shifted.r_step.copy_to_host().astype(np.float64),
                                    phi_min=shifted.phi_min.copy_to_host().astype(np.float64),
                                    phi_step=shifted.phi_step.copy_to_host().astype(np.float64))
    got = cuda_kernels.scores(cuda.to_device(queries.astype(np.float32)), shifted, table="mma").copy_to_host()
    want = golden.scores(queries.astype(np.float32).astype(np.float64), host_code)
    bound32 = golden_score_tolerance(queries, host_code, tol.EPS32)
    assert (np.abs(got - want) <= bound32).all()
    # the same scores through the aligned index do run on float16 keys: outside the float32 bound
    aligned = dataclasses.replace(shifted, packed=cuda.to_device(packed))
    fp16 = cuda_kernels.scores(cuda.to_device(queries.astype(np.float32)), aligned, table="mma").copy_to_host()
    assert (np.abs(fp16 - want) > bound32).any()


def test_the_launcher_takes_v2_2_where_lean_does_not_fit():
    """lean (v2.3) needs more shared memory than v2.2: where that passes 48 KiB (P = 176,
    t_bits = 5) the launcher's configuration is v2.2, and asking the factory for lean is an error
    that says so, not a kernel that fails at launch."""
    from cuda_kernels import launch as CL
    from cuda_kernels import mma as MMA

    assert MMA.mma_eligible(176, 5, 128) and not MMA.lean_fits(176, 5)
    assert CL.mma_config(176, 4, 5, 128, 8, 1)["lean"] is False
    assert CL.mma_config(64, 4, 4, 128, 8, 1)["lean"] is True
    with pytest.raises(ValueError, match="lean: P = 176, t_bits = 5 do not fit"):
        MMA.mma_scores_kernel(176, 4, 5, 128, lean=True)


@pytest.mark.parametrize("n_heads", [8, 4])
def test_default_warps_fit_a_block_for_every_eligible_shape(n_heads):
    """The launcher's warps (mma.default_warps: 64 tokens a warp where it can) divide the group's
    tiles (16 tokens a tile, 32 with 2 slots) and stay within a block's 1024 threads and 64 K
    registers at 128 a thread, for every shape the tensor-core kernel accepts (a group of 2048
    tokens once asked for 32 warps)."""
    from cuda_kernels import launch as CL
    from cuda_kernels import mma as MMA

    seen, slots_seen = set(), set()
    for g in range(16, 4097, 16):
        for t_bits in range(2, 9):
            for p in (16, 32, 64, 128, 256):
                if not MMA.mma_eligible(p, t_bits, g):
                    continue
                cfg = CL.mma_config(p, 4, t_bits, g, 8192, 1, 0, n_heads)     # 2 groups a block
                slots = cfg["slots"]
                assert slots == 1 or (n_heads <= 4 and MMA.lean_fits(p, t_bits, slots)), (p, t_bits, g, cfg)
                warps = MMA.mma_warps(g, cfg["warps"], slots)
                assert warps == cfg["warps"] and (g // (16 * slots)) % warps == 0, (p, t_bits, g, cfg)
                assert 32 * warps <= 1024 and 32 * warps * 128 <= 65536, (p, t_bits, g, cfg)
                seen.add(warps)
                slots_seen.add(slots)
    assert seen >= {1, 2, 3, 4}
    assert slots_seen == ({1, 2} if n_heads == 4 else {1})
    # W-GPU (32 groups a block): 2 slots with 4 heads a KV head; one group a block: 1 slot
    w_gpu = CL.mma_config(64, 4, 4, 128, 1024, 64, 0, n_heads)
    assert (w_gpu["groups_per_block"], w_gpu["slots"], w_gpu["warps"]) == (32, 2 if n_heads == 4 else 1, 2)
    assert CL.mma_config(64, 4, 4, 128, 32, 1, 0, n_heads)["slots"] == 1


def test_balanced_launch_grid_and_kernel_agree(monkeypatch):
    """The launcher's balanced path (GPU only: the simulator has no occupancy) with a count forced
    by a stand-in for launch_groups_per_block: the grid and the kernel's gpb must agree, every score
    written, within the float16-key bound (7 groups, configured 5 a block, balanced to 3: a partial
    last block)."""
    from cuda_kernels import launch as CL

    asked = []
    monkeypatch.setattr(CL, "launch_groups_per_block",
                        lambda kern, args, threads, rows, n_groups, most: asked.append(most) or 3)
    # 5 groups a block, balanced, as mma_config configures a large input (2 token slots)
    cfg = _check_launch(64, 128, dict(groups_per_block=5, balance=True), m=4, h_kv=1, n=7,
                        before_launch=lambda: monkeypatch.setattr(CL, "SIM", False))
    assert cfg["slots"] == 2
    assert asked == [5]


def test_groups_per_block_fill_whole_waves():
    from cuda_kernels import launch as CL

    assert CL.mma_config(64, 4, 4, 128, 1024, 64)["balance"] is True
    assert CL.mma_config(64, 4, 4, 128, 1024, 64, groups_per_block=3)["balance"] is False
    # W-GPU: 64 rows of 1024 groups, at most 32 a block
    # 8 blocks a SM: 32 groups give 2048 blocks, 2 waves of 65 group times (with the prologue);
    # 21 give 3136 blocks, 2.97 waves: 3 of 21.5 = 64.5
    assert CL.balanced_groups_per_block(1056, 64, 1024, 32) == 21
    # 10 a SM: 32 groups are 1.55 waves (65 again); 25 give 2624 blocks, 1.99 waves: 51
    assert CL.balanced_groups_per_block(1320, 64, 1024, 32) == 25
    for resident in (1056, 1320, 1188):
        g = CL.balanced_groups_per_block(resident, 64, 1024, 32)
        blocks = 64 * -(-1024 // g)
        assert blocks / (-(-blocks // resident) * resident) > 0.95, (resident, g)   # the last wave nearly full
    # the slot choice (2 slots only where a block scores 2 groups or more) needs g >= 2, and g stays
    # within [max(2, ceil(most / 2)), most]
    for resident in (1, 7, 132, 1320):
        for rows in (1, 3, 64):
            for n_groups in (1, 5, 33, 1024):
                for most in (2, 3, 8, 32):
                    g = CL.balanced_groups_per_block(resident, rows, n_groups, most)
                    assert max(2, -(-most // 2)) <= g <= most, (resident, rows, n_groups, most, g)
    # fewer blocks than the GPU holds: one wave whatever g, so the fewest groups allowed
    assert CL.balanced_groups_per_block(1320, 8, 64, 8) == 4
    assert CL.balanced_groups_per_block(1320, 8, 64, 2) == 2
    assert CL.balanced_groups_per_block(1320, 8, 64, 1) == 1
