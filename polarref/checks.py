"""Input checks shared by every backend.

Every backend (golden NumPy, Numba CPU, numba.cuda) calls these same
functions, so a bad argument gets the same error, naming the argument and the
offending value, whichever backend the user picked.
"""
from __future__ import annotations

import numbers

import numpy as np

PAIRINGS = ("half", "interleaved")
MAX_INDEX_BITS = 8  # one byte per pair per token: r_bits + t_bits <= 8


def check_int(name: str, value, minimum: int) -> int:
    """`value` as a Python int >= minimum, or a TypeError/ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return value


def check_config(r_bits, t_bits, group_size, pairing) -> tuple[int, int, int, str]:
    """Validate the encoding configuration; return it normalised."""
    r_bits = check_int("r_bits", r_bits, 1)
    t_bits = check_int("t_bits", t_bits, 1)
    if r_bits + t_bits > MAX_INDEX_BITS:
        raise ValueError(
            f"r_bits + t_bits must be <= {MAX_INDEX_BITS} (one index byte per pair), "
            f"got r_bits={r_bits}, t_bits={t_bits}"
        )
    group_size = check_int("group_size", group_size, 1)
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got pairing={pairing!r}")
    return r_bits, t_bits, group_size, pairing


def check_real_array(name: str, array, min_ndim: int, layout: str) -> np.ndarray:
    """A real floating array with at least `min_ndim` axes, finite, last axis even.

    Integer, boolean, complex and object arrays are refused (TypeError): the
    caller must say which float they mean. float16/float32/float64 are accepted
    and returned as they are (the caller upcasts where it computes).
    """
    if hasattr(array, "__cuda_array_interface__") and not isinstance(array, np.ndarray):
        raise TypeError(f"{name} is a GPU array; this backend takes host arrays (use cuda_kernels)")
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a real floating array (float16/32/64), got dtype {array.dtype}"
        )
    if array.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape {layout} (at least {min_ndim} axes), "
            f"got a {array.ndim}-d array of shape {array.shape}"
        )
    d = array.shape[-1]
    if d < 2 or d % 2:
        raise ValueError(f"{name} head dimension d must be even and >= 2, got d={d} (shape {array.shape})")
    check_finite(name, array)
    return array


def check_finite(name: str, array: np.ndarray) -> None:
    """ValueError naming `name`, the count and the first index of NaN/Inf values, if any."""
    # Fast path: a sum is finite only if every term is (IEEE: NaN and Inf propagate).
    # A non-finite sum (a bad value, or an overflow of the sum) sends us to the exact test.
    with np.errstate(over="ignore", invalid="ignore"):
        total = array.sum()
    if np.isfinite(total):
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} must be finite: {len(bad)} NaN/Inf value(s), first at index {first} "
            f"= {array[first]!r}"
        )


def check_keys(keys) -> np.ndarray:
    return check_real_array("keys", keys, 2, "(..., L, d)")


def check_queries(queries) -> np.ndarray:
    return check_real_array("queries", queries, 1, "(..., H_q, d)")


def split_heads(query_shape: tuple, key_batch_shape: tuple, d_keys: int):
    """Match queries (..., H_q, d) to keys (..., H_kv, L, d) for grouped-query attention.

    `key_batch_shape` is the keys' shape without (L, d); empty for keys of
    shape (L, d), which count as one KV head. Returns (outer, H_kv, H_q, squeeze)
    where `squeeze` says the queries were one vector (d,) and the output loses
    its H_q axis.
    """
    squeeze = len(query_shape) == 1
    if squeeze:
        query_shape = (1,) + tuple(query_shape)
    d_q = query_shape[-1]
    if d_q != d_keys:
        raise ValueError(f"queries head dim must equal keys head dim, got queries d={d_q}, keys d={d_keys}")
    if key_batch_shape:
        outer, h_kv = tuple(key_batch_shape[:-1]), key_batch_shape[-1]
    else:
        outer, h_kv = (), 1
    q_outer, h_q = tuple(query_shape[:-2]), query_shape[-2]
    if q_outer != outer:
        raise ValueError(
            f"queries leading axes {q_outer} must equal keys leading axes {outer} "
            f"(queries (..., H_q, d) against keys (..., H_kv, L, d)); queries shape "
            f"{tuple(query_shape)}, keys batch shape {tuple(key_batch_shape)}"
        )
    if h_kv == 0:
        raise ValueError(f"keys have no KV heads to score against (keys batch shape {tuple(key_batch_shape)})")
    if h_q % h_kv:
        raise ValueError(
            f"the number of query heads must be a multiple of the number of KV heads "
            f"(grouped-query attention), got H_q={h_q}, H_kv={h_kv}"
        )
    return outer, h_kv, h_q, squeeze


def check_code(code):
    """A PolarCode whose arrays agree in shape with each other and with its bits."""
    from .code import PolarCode

    if not isinstance(code, PolarCode):
        raise TypeError(f"code must be a PolarCode (from encode), got {type(code).__name__}")
    check_config(code.r_bits, code.t_bits, code.group_size, code.pairing)
    lq_shape = tuple(code.rho.shape)
    if len(lq_shape) < 2 or tuple(code.theta.shape) != lq_shape:
        raise ValueError(f"code.rho and code.theta must share shape (..., Lq, P), got "
                         f"{lq_shape} and {tuple(code.theta.shape)}")
    *batch, lq, p = lq_shape
    if lq % code.group_size:
        raise ValueError(f"code has Lq={lq} quantized tokens, not a multiple of group_size={code.group_size}")
    group_shape = (*batch, lq // code.group_size, p)
    for name in ("r_min", "r_step", "phi_min", "phi_step"):
        shape = tuple(getattr(code, name).shape)
        if shape != group_shape:
            raise ValueError(f"code.{name} must have shape {group_shape}, got {shape}")
    res_shape = tuple(code.residual.shape)
    if len(res_shape) != len(lq_shape) or res_shape[:-2] != tuple(batch) or res_shape[-1] != 2 * p:
        raise ValueError(f"code.residual must have shape {(*batch, 'L - Lq', 2 * p)}, got {res_shape}")
    check_code_values(code)
    return code


def array_dtype(array) -> np.dtype:
    """The NumPy dtype of a NumPy, numba-device, cupy or torch array."""
    try:
        return np.dtype(array.dtype)
    except TypeError:   # torch dtypes are not NumPy's; the CUDA array interface says it plainly
        return np.dtype(array.__cuda_array_interface__["typestr"])


PARAMETERS = ("r_min", "r_step", "phi_min", "phi_step")


def check_code_values(code):
    """Codes uint8 and below 2**r_bits, 2**t_bits; parameters real, finite, steps >= 0.

    A code out of range would index past a table (the golden model would
    raise IndexError, a kernel would mask it: a silent wrong answer); a NaN
    parameter would turn scores into NaN. Host arrays are checked on first
    use of the code and then made read-only, so that the check stays true and
    later calls skip it (writing through another view of the same memory is
    the one way around that). Device-resident codes are not read back.
    """
    fields = (("rho", "r_bits", code.r_bits), ("theta", "t_bits", code.t_bits))
    for name, _, _ in fields:
        dtype = array_dtype(getattr(code, name))
        if dtype != np.uint8:
            raise TypeError(f"code.{name} must be uint8 codes, got dtype {dtype}")
    for name in (*PARAMETERS, "residual"):
        dtype = array_dtype(getattr(code, name))
        if dtype.kind != "f":
            raise TypeError(f"code.{name} must be a real floating array, got dtype {dtype}")
    if getattr(code, "_values_checked", False):
        return
    arrays = [getattr(code, name) for name in ("rho", "theta", *PARAMETERS, "residual")]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        return                                             # on a device: not read back
    for name, bits_name, bits in fields:
        codes = getattr(code, name)
        top = int(codes.max(initial=0))
        if top >= 2**bits:
            raise ValueError(f"code.{name} holds {top}, out of range for {bits_name}={bits} "
                             f"(codes 0..{2**bits - 1})")
    for name in (*PARAMETERS, "residual"):
        check_finite(f"code.{name}", getattr(code, name))
    for name in ("r_step", "phi_step"):
        values = getattr(code, name)
        if (values < 0).any():
            first = tuple(int(i) for i in np.argwhere(values < 0)[0])
            raise ValueError(f"code.{name} must be >= 0, got {values[first]!r} at index {first}")
    for a in arrays[:-1]:
        a.setflags(write=False)
    object.__setattr__(code, "_values_checked", True)   # PolarCode is frozen; a cache, not a field
