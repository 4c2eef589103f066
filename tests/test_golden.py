"""The golden model on examples small enough to work out by hand."""
import numpy as np

import polarref
from polarref import golden


def test_hand_worked_group():
    # One pair (d = 2), one group of two tokens: (1, 0) and (0, 2).
    keys = np.array([[1.0, 0.0], [0.0, 2.0]])
    code = polarref.encode(keys, r_bits=1, t_bits=1, group_size=2)
    # r = [1, 2]: r_min 1, r_step (2 - 1) / 2 = 0.5; rho = floor([0, 2]) clipped to [0, 1].
    assert code.r_min.tolist() == [[1.0]] and code.r_step.tolist() == [[0.5]]
    assert code.rho.ravel().tolist() == [0, 1]
    # phi = [0, pi/2]: phi_step pi/4; theta = [0, 1].
    assert code.phi_min.tolist() == [[0.0]] and np.isclose(code.phi_step[0, 0], np.pi / 4)
    assert code.theta.ravel().tolist() == [0, 1]
    # Midpoints: r_hat [1.25, 1.75], phi_hat [pi/8, 3pi/8].
    want = np.array([[1.25 * np.cos(np.pi / 8), 1.25 * np.sin(np.pi / 8)],
                     [1.75 * np.cos(3 * np.pi / 8), 1.75 * np.sin(3 * np.pi / 8)]])
    np.testing.assert_allclose(polarref.decode(code), want, rtol=4 * np.finfo(float).eps)
    q = np.array([2.0, -1.0])
    np.testing.assert_allclose(polarref.scores(q, code), want @ q, rtol=8 * np.finfo(float).eps)


def test_index_byte_layout():
    keys = np.random.default_rng(1).standard_normal((16, 4))
    code = polarref.encode(keys, r_bits=3, t_bits=5, group_size=16)
    assert np.array_equal(code.index >> 5, code.rho) and np.array_equal(code.index & 31, code.theta)


def test_zero_range_group_reconstructs_its_value():
    keys = np.tile([[3.0, -4.0, 0.5, 0.5]], (8, 1))
    code = polarref.encode(keys, group_size=4)
    assert not code.rho.any() and not code.theta.any()
    assert not code.r_step.any() and not code.phi_step.any()
    np.testing.assert_allclose(polarref.decode(code), keys, rtol=0, atol=8 * np.finfo(float).eps * 5)


def test_fewer_tokens_than_a_group_is_all_residual():
    keys = np.random.default_rng(2).standard_normal((3, 5, 6)).astype(np.float32)
    code = polarref.encode(keys, group_size=8)
    assert code.rho.shape == (3, 0, 3) and code.r_min.shape == (3, 0, 3)
    assert code.residual.dtype == np.float32 and np.array_equal(code.residual, keys)
    q = np.random.default_rng(3).standard_normal((6, 6))
    np.testing.assert_array_equal(polarref.scores(q, code), polarref.dense_scores(q, keys))


def test_angle_just_below_zero_maps_into_range():
    r, phi = golden.to_polar(np.array([1.0, 1.0, -1.0]), np.array([-1e-300, -0.0, -0.0]))
    assert (phi >= 0).all() and (phi < 2 * np.pi).all()
    assert phi[1] == 0.0 and np.isclose(phi[2], np.pi)


def test_tables_are_the_decoded_geometry():
    """R[j, s] and A[j, t] rebuild q . k_hat for every (s, t) pair of codes."""
    rng = np.random.default_rng(4)
    keys, q = rng.standard_normal((1, 32, 8)), rng.standard_normal((2, 8))
    code = polarref.encode(keys, r_bits=2, t_bits=3, group_size=32)
    table_r = polarref.radius_table(code)          # (1, 1, 4, 4)
    table_a = polarref.angle_table(q, code)        # (1, 2, 1, 4, 8)
    assert table_r.shape == (1, 1, 4, 4) and table_a.shape == (1, 2, 1, 4, 8)
    phi = code.phi_min[0, 0, 1] + (5 + 0.5) * code.phi_step[0, 0, 1]
    want = q[1, 1] * np.cos(phi) + q[1, 5] * np.sin(phi)
    assert np.isclose(table_a[0, 1, 0, 1, 5], want, rtol=1e-14)
