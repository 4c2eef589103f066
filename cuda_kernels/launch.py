"""Launchers of the numba.cuda PolarQuant kernels: checks, layouts, grids, copies.

Public functions have the golden signatures (polarref.golden) and raise the
same errors (they call polarref.checks):

    code = encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half")
    keys_hat = decode(code)
    s = scores(queries, code, table="float32")    # or "float16", "mma"

Where the data lives decides where the result lives:
- NumPy in, NumPy out, with golden dtypes: uint8 codes, float64 parameters,
  scores and decoded keys, the residual verbatim. The arithmetic is float32
  on the device in either case; float64 here is float32 widened.
- Device arrays in (numba device arrays, or anything with
  `__cuda_array_interface__`: torch, cupy): no host copy; the results are
  numba device arrays: codes uint8, parameters float32, scores and decoded
  keys float32, the residual in the keys' dtype. `encode` then returns a
  `DevicePolarCode`, which also carries `packed`, the one-byte index
  (rho << t_bits) | theta that `scores` and `decode` read; rho and theta are
  kept beside it for the PolarCode interface (3 bytes per pair on the device).
- scores: the result is on the device if the queries or the code are.

Checks on device arrays read only dtype and shape on the host; the NaN/Inf
scan is a device kernel, and only when it finds a bad value is the array
copied to the host, to raise exactly the golden error. Keys beyond the float32
range (float64 inputs) raise OverflowError: the kernels compute in float32.

`launch_encode` / `launch_scores` are the kernel-only entry points (prepared
device arrays in, nothing allocated, no synchronisation) used by the
benchmark; `scores_config` is the launch configuration they pick.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import numpy as np
from numba import cuda

from polarref.checks import (
    check_code,
    check_config,
    check_keys,
    check_queries,
    check_real_array,
    split_heads,
)
from polarref.code import PolarCode

from . import kernels as K
from . import mma as MMA

SIM = K.SIM
TABLE_KINDS = ("float32", "float16", "mma")
TABLE_BYTES_LIMIT = 32 * 1024        # shared memory for one chunk of angle tables
GRID_STRIDE_BLOCKS = 4 * 132         # grid-stride utility kernels: a few blocks per SM
GRID_Y_MAX = 65535                   # CUDA's limit on grid dimensions y and z
F32_MAX = float(np.finfo(np.float32).max)


if SIM:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    class _SimDeviceArray(FakeCUDAArray):
        """The simulator's device array with a plain-tuple shape (its own refuses shape[-1])."""

        @property
        def shape(self):
            return tuple(self._ary.shape)

    def _out(a):
        return _SimDeviceArray(a._ary)
else:
    def _out(a):
        return a


def _fast_sim(function):
    """In the simulator, shorten the GIL switch interval while a public call runs.

    The simulator runs each CUDA thread as a Python thread and polls them from
    another; with the default 5 ms interval most time goes to hand-overs
    (5-7x slower on the test shapes). The interval is restored afterwards.
    """
    if not SIM:
        return function

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-4)
        try:
            return function(*args, **kwargs)
        finally:
            sys.setswitchinterval(old)

    return wrapper


@dataclass(frozen=True)
class DevicePolarCode(PolarCode):
    """A PolarCode on the device, plus the packed index the kernels read.

    packed  uint8 (..., Lq, P)  (rho << t_bits) | theta, one byte per pair and token
    """

    packed: object = None


# --------------------------------------------------------------------------
# Where arrays live, and device views
# --------------------------------------------------------------------------
def is_device_array(a) -> bool:
    """True for numba device arrays and objects exporting __cuda_array_interface__."""
    if isinstance(a, np.ndarray):
        return False
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


def as_device(a):
    """A numba device array viewing `a` (no copy)."""
    if getattr(a, "__cuda_ndarray__", False):
        return a
    return cuda.as_cuda_array(a)


def _prod(shape) -> int:
    return int(math.prod(shape)) if len(shape) else 1


def _view3(a):
    """(..., X, Y) device array -> (prod(...), X, Y) view, strides kept where possible."""
    shape = tuple(a.shape)
    lead = shape[:-2]
    n = _prod(lead)
    if SIM or a.is_c_contiguous():
        return a.reshape(n, *shape[-2:])
    strides = tuple(a.strides)
    if len(lead) == 1:
        return a
    mergeable = all(strides[i] == strides[i + 1] * shape[i + 1] for i in range(len(lead) - 1))
    if not mergeable:
        raise ValueError(
            f"device array of shape {shape} and strides {strides}: its leading axes cannot be "
            f"viewed as one axis; pass a contiguous copy"
        )
    s0 = strides[len(lead) - 1] if lead else 0
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    return DeviceNDArray((n,) + shape[-2:], (s0,) + strides[-2:], a.dtype, gpu_data=a.gpu_data)


def _grid_stride(n_items: int, threads: int = 256) -> tuple[int, int]:
    """(blocks, threads) of a grid-stride kernel; one small block in the simulator."""
    if SIM:
        return 1, 16
    return max(1, min(GRID_STRIDE_BLOCKS, -(-n_items // threads))), threads


def _grid(*dims: int) -> tuple:
    """A launch grid, refused here if a dimension is 0: the GPU rejects it, the simulator runs nothing."""
    if min(dims) < 1:
        raise AssertionError(f"launch grid {dims} has a zero dimension: the caller must skip the launch")
    return dims


def _contiguous3(src3, dtype=None):
    """Contiguous device copy of a 3-D device view, cast to `dtype` (default: keep)."""
    out = cuda.device_array(tuple(src3.shape), dtype=np.dtype(dtype or src3.dtype))
    if out.size:
        grid, block = _grid_stride(out.size)
        K.copy3d_kernel()[grid, block](src3, out)
    return out


def _pointer(a) -> int:
    """Device address of a device array's first element.

    In the simulator: the host address of the NumPy array behind it, so that a
    view at an odd offset takes the same alignment fallbacks there as on a GPU.
    """
    if SIM:
        return int(a._ary.ctypes.data)
    return int(a.__cuda_array_interface__["data"][0])


# --------------------------------------------------------------------------
# Checks on device arrays (the same errors as polarref.checks)
# --------------------------------------------------------------------------
def check_device_real(name: str, array, min_ndim: int, layout: str):
    """check_real_array for a device array without copying it to the host.

    dtype and shape: a zero-stride host stand-in of the same dtype and shape
    goes through check_real_array, which raises before it would scan values.
    Values: a device kernel counts NaN/Inf; only then is the array copied to
    the host and handed to check_real_array, which raises the golden error.
    """
    dtype, shape = np.dtype(array.dtype), tuple(array.shape)
    shape_ok = len(shape) >= min_ndim and shape[-1] >= 2 and shape[-1] % 2 == 0
    if dtype.kind != "f" or not shape_ok:
        check_real_array(name, np.broadcast_to(np.zeros((), dtype), shape), min_ndim, layout)
        raise AssertionError("unreachable: the stand-in must fail the same check")
    if array.size == 0:
        return array, 0
    view = _view3(array) if len(shape) >= 2 else array.reshape(1, 1, shape[0])
    counts = cuda.to_device(np.zeros(2, dtype=np.int64))
    grid, block = _grid_stride(array.size)
    K.nonfinite_kernel()[grid, block](view, counts)
    bad, big = (int(c) for c in counts.copy_to_host())
    if bad:
        host = _contiguous3(view).copy_to_host().reshape(shape)
        check_real_array(name, host, min_ndim, layout)
        raise AssertionError("unreachable: check_real_array must raise on non-finite values")
    return array, big


def _check_float32_range(name: str, big: int):
    if big:
        raise OverflowError(
            f"{name}: {big} value(s) beyond the float32 range; the CUDA backend computes in "
            f"float32 (use the golden model for such inputs)"
        )


def _host_big(array: np.ndarray) -> int:
    if array.dtype.itemsize <= 4 or array.size == 0:
        return 0
    return int(np.count_nonzero(np.abs(array) > F32_MAX))


# --------------------------------------------------------------------------
# Encode
# --------------------------------------------------------------------------
ENCODE_WARPS = 16                     # encode v2: warps a block (one group x 64 pairs)
ENCODE_TOKENS = 8                     # encode v2: tokens a warp (W-GPU) where fewer warps divide G


def encode_config(n_pairs: int, group_size: int, rows: bool = True) -> dict:
    """Launch configuration of the encode kernels.

    rows=True (v2, `encode_rows_kernel`): `warps` warps, each `tokens_per_warp`
    tokens of the group; the radius of float16 keys is sqrt.approx(x*x + y*y), of wider keys
    max * sqrt(1 + a*a) by the IEEE sqrt (fast_root=True: `kernels.root_1p`, rsqrt and a
    Newton step, fewer instructions but 3-5 % slower on an H200 in three of four runs; it
    changes nothing for float16 keys); needs P even and keys aligned to two elements. The warps
    divide the group where a power of two >= 4 does with at most ENCODE_TOKENS tokens a warp
    (then `exact`: no token past the group's end to guard).
    rows=False (v1, `encode_kernel`): PT pairs x CH token slots, TC tokens a thread.
    In the simulator every thread is a Python thread: there the warps (v2) or
    slots (v1) are cut by 4 (same kernel, more tokens a thread) to keep small
    tests fast.
    """
    if rows:
        w = max(1, min(ENCODE_WARPS // 4 if SIM else ENCODE_WARPS, group_size))
        two = group_size & -group_size                  # largest power of two dividing G
        if group_size % w and two >= 4 and group_size // min(w, two) <= ENCODE_TOKENS:
            w = min(w, two)                             # (more tokens a warp would spill)
        tc = -(-group_size // w)
        return dict(kind="rows", warps=w, tokens_per_warp=tc, fast_root=False, exact=w * tc == group_size)
    pt = min(32, n_pairs)
    ch = max(1, min(256 // pt, group_size))
    if SIM:
        ch = max(1, ch // 4)
    tc = -(-group_size // ch)
    return dict(kind="tile", pairs_per_block=pt, slots=ch, tokens_per_thread=tc)


def rows_eligible(keys3, *outputs) -> bool:
    """encode v2 reads two elements at once and stores two codes at once: P even, the keys aligned
    to two elements, the uint8 outputs (index, rho, theta; None skipped) to two bytes."""
    return (keys3.shape[2] % 4 == 0 and _pointer(keys3) % (2 * keys3.dtype.itemsize) == 0
            and all(_pointer(o) % 2 == 0 for o in outputs if o is not None))


def encode_kernel_for(config: dict, r_bits: int, t_bits: int, pairing: str, split: bool, n_pairs: int = 0):
    """The compiled-on-first-launch encode kernel of a launch configuration from `encode_config`
    (v2 for keys of n_pairs pairs only, where n_pairs > 0: one kernel a key width)."""
    if config["kind"] == "rows":
        return K.encode_rows_kernel(r_bits, t_bits, config["warps"], config["tokens_per_warp"],
                                    pairing == "half", split, config.get("fast_root", False),
                                    config.get("exact", False), n_pairs)
    return K.encode_kernel(r_bits, t_bits, config["pairs_per_block"], config["slots"],
                           config["tokens_per_thread"], split)


def launch_encode(keys3, r_bits, t_bits, group_size, pairing, index, rho, theta,
                  r_min, r_step, phi_min, phi_step, flags, config=None):
    """Kernel only: keys3 (BH, L, d) contiguous device array -> flat outputs (see encode_kernel).

    rho = theta = None writes only the packed index. config: from
    `encode_config`; by default v2 where `rows_eligible`, else v1.
    """
    bhs, length, d = keys3.shape
    n_pairs, n_groups = d // 2, length // group_size
    if bhs * n_groups == 0:
        return
    rows_ok = rows_eligible(keys3, index, rho, theta)
    cfg = config or encode_config(n_pairs, group_size, rows=rows_ok)
    split = rho is not None
    if not split:                       # packed index only: the split outputs are never written
        rho = theta = index
    flat = keys3.reshape(keys3.size)
    kern = encode_kernel_for(cfg, r_bits, t_bits, pairing, split, n_pairs)
    if cfg["kind"] == "rows":
        if not rows_ok:
            raise ValueError(f"encode v2 needs P even, keys aligned to 2 elements and outputs to 2 bytes; "
                             f"got d = {d}, key address {_pointer(keys3)}, output addresses "
                             f"{[_pointer(o) for o in (index, rho, theta) if o is not None]}")
        covered = cfg["warps"] * cfg["tokens_per_warp"]
        if covered < group_size or (cfg.get("exact") and covered != group_size) or cfg["warps"] > group_size:
            raise ValueError(f"encode v2 config {cfg} covers {covered} tokens a group with {cfg['warps']} "
                             f"warps; group_size is {group_size} (needs warps <= group_size <= tokens "
                             f"covered, equal if exact)")
        grid = _grid(n_groups * bhs, -(-n_pairs // K.ROW_PAIRS))
        kern[grid, 32 * cfg["warps"]](flat, length, d, group_size, index, rho, theta,
                                      r_min, r_step, phi_min, phi_step, flags)
        return
    x_stride, y_offset = (1, n_pairs) if pairing == "half" else (2, 1)
    grid = _grid(n_groups * bhs, -(-n_pairs // cfg["pairs_per_block"]))
    kern[grid, cfg["pairs_per_block"] * cfg["slots"]](
        flat, length, d, x_stride, y_offset, group_size, index, rho, theta,
        r_min, r_step, phi_min, phi_step, flags)


@_fast_sim
def encode(keys, r_bits=4, t_bits=4, group_size=128, pairing="half") -> PolarCode:
    """keys (..., L, d) -> PolarCode (NumPy in: NumPy out; device in: DevicePolarCode)."""
    r_bits, t_bits, group_size, pairing = check_config(r_bits, t_bits, group_size, pairing)
    on_device = is_device_array(keys)
    if on_device:
        keys_d, big = check_device_real("keys", as_device(keys), 2, "(..., L, d)")
        _check_float32_range("encode", big)
    else:
        keys_in = check_keys(keys)
        _check_float32_range("encode", _host_big(keys_in))
        keys_d = cuda.to_device(np.ascontiguousarray(keys_in))
    shape = tuple(keys_d.shape)
    batch, length, d = shape[:-2], shape[-2], shape[-1]
    n_pairs, n_groups = d // 2, length // group_size
    lq = n_groups * group_size
    bhs = _prod(batch)
    keys3 = _view3(keys_d) if keys_d.size else None
    if keys3 is not None and not keys3.is_c_contiguous():
        keys3 = _contiguous3(keys3)          # the kernel reads a flat contiguous array

    index = cuda.device_array(bhs * lq * n_pairs, dtype=np.uint8)
    rho = cuda.device_array(bhs * lq * n_pairs, dtype=np.uint8)
    theta = cuda.device_array(bhs * lq * n_pairs, dtype=np.uint8)
    params = [cuda.device_array(bhs * n_groups * n_pairs, dtype=np.float32) for _ in range(4)]
    flags = cuda.to_device(np.zeros(1, dtype=np.int32))
    if keys3 is not None:
        launch_encode(keys3, r_bits, t_bits, group_size, pairing, index, rho, theta, *params, flags)
    if int(flags.copy_to_host()[0]):
        raise OverflowError("encode: float32 overflow of a radius or bin step; inputs too large in magnitude")

    lq_shape, group_shape = (*batch, lq, n_pairs), (*batch, n_groups, n_pairs)
    if not on_device:
        r_min, r_step, phi_min, phi_step = (p.copy_to_host().astype(np.float64).reshape(group_shape)
                                            for p in params)
        return PolarCode(rho.copy_to_host().reshape(lq_shape), theta.copy_to_host().reshape(lq_shape),
                         r_min, r_step, phi_min, phi_step, keys_in[..., lq:, :].copy(),
                         r_bits, t_bits, group_size, pairing)
    if keys3 is not None:
        residual = _contiguous3(keys3[:, lq:, :])
    else:
        residual = cuda.device_array((bhs, length - lq, d), dtype=keys_d.dtype)
    r_min, r_step, phi_min, phi_step = (_out(p.reshape(*group_shape)) for p in params)
    return DevicePolarCode(_out(rho.reshape(*lq_shape)), _out(theta.reshape(*lq_shape)), r_min, r_step,
                           phi_min, phi_step, _out(residual.reshape(*batch, length - lq, d)),
                           r_bits, t_bits, group_size, pairing, packed=_out(index.reshape(*lq_shape)))


# --------------------------------------------------------------------------
# Codes on the device: packed index and float32 parameters, flat
# --------------------------------------------------------------------------
def _device_flat(a, dtype):
    """A contiguous flat device array of `dtype` holding the host or device array a."""
    if not is_device_array(a):
        return cuda.to_device(np.ascontiguousarray(np.asarray(a), dtype=dtype).reshape(-1))
    a = as_device(a)
    if np.dtype(a.dtype) == np.dtype(dtype) and a.is_c_contiguous():
        return a.reshape(a.size)
    shape = tuple(a.shape)
    if a.size == 0:
        return cuda.device_array(0, dtype=dtype)
    view = _view3(a) if len(shape) >= 2 else a.reshape(1, 1, shape[0])
    return _contiguous3(view, dtype).reshape(a.size)


def device_code_arrays(code: PolarCode):
    """(index, r_min, r_step, phi_min, phi_step) as flat device arrays (uint8, float32 x 4)."""
    packed = getattr(code, "packed", None)
    if packed is not None:
        index = _device_flat(packed, np.uint8)
    elif not is_device_array(code.rho):
        rho, theta = np.asarray(code.rho), np.asarray(code.theta)
        index = _device_flat(((rho.astype(np.uint32) << code.t_bits) | theta).astype(np.uint8), np.uint8)
    else:
        rho, theta = _device_flat(code.rho, np.uint8), _device_flat(code.theta, np.uint8)
        index = cuda.device_array(rho.size, dtype=np.uint8)
        if index.size:
            grid, block = _grid_stride(index.size)
            K.pack_kernel(code.t_bits)[grid, block](rho, theta, index)
    params = [_device_flat(getattr(code, n), np.float32) for n in ("r_min", "r_step", "phi_min", "phi_step")]
    return (index, *params)


def _code_on_device(code: PolarCode) -> bool:
    return any(is_device_array(getattr(code, n, None)) for n in ("rho", "packed", "r_min", "residual"))


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------
def scores_config(n_pairs, r_bits, t_bits, group_size, n_heads, table="float32", index_ptr=0,
                  **overrides) -> dict:
    """Compile-time configuration of scores_kernel for these shapes (see its docstring)."""
    half = table == "float16"
    nh = 4 if n_heads % 4 == 0 else 2 if n_heads % 2 == 0 else 1
    if n_pairs % 16 == 0 and index_ptr % 16 == 0:
        vw = 16
    elif n_pairs % 4 == 0 and index_ptr % 4 == 0:
        vw = 4
    else:
        vw = 1
    per_pair = (1 << t_bits) * nh * (2 if half else 4)          # table bytes per pair
    chunks = [c for c in range(vw, n_pairs + 1, vw) if n_pairs % c == 0]
    fitting = [c for c in chunks if c * per_pair <= TABLE_BYTES_LIMIT]
    pch = max(fitting) if fitting else min(chunks)
    tpt = 2 if group_size >= 128 else 1
    per_thread = -(-group_size // tpt)
    threads = min(128, per_thread if SIM else 32 * max(1, -(-per_thread // 32)))
    cfg = dict(n_pairs=n_pairs, r_bits=r_bits, t_bits=t_bits, heads=nh, half=half,
               threads=threads, tokens_per_thread=tpt, pairs_per_chunk=pch, load_bytes=vw)
    cfg.update(overrides)
    return cfg


def launch_scores(index, r_min, r_step, phi_min, phi_step, queries, group_size, pairing,
                  n_heads, out, out_len, bhs, n_groups, config):
    """Kernel only: quantized-token scores into out (BH * M * out_len,) float32."""
    if bhs * n_groups * n_heads == 0:          # a zero grid dimension is a launch error on the GPU
        return
    kern = K.scores_kernel(**config)
    n_pairs = config["n_pairs"]
    x_stride, y_offset = (1, n_pairs) if pairing == "half" else (2, 1)
    grid = _grid(n_groups * bhs, n_heads // config["heads"])
    kern[grid, config["threads"]](index, r_min, r_step, phi_min, phi_step, queries,
                                  x_stride, y_offset, group_size, n_groups, n_heads, out, out_len,
                                  np.uint32(0x3F800000))


def mma_config(n_pairs, r_bits, t_bits, group_size, n_groups, bhs, index_ptr=0,
               n_heads=MMA.MMA_HEADS, **overrides) -> dict:
    """Configuration of mma.mma_scores_kernel and its launch: a block scores up to
    groups_per_block groups of one KV head, enough to amortise loading its query fragments, while
    the grid keeps about 2048 blocks or more (W-GPU: 32 groups a block, measured best of 1, 8, 16,
    32 with v2.2); unless groups_per_block is overridden, launch_mma_scores then takes the count
    of at least half that which best fills the GPU's waves of resident blocks
    (balanced_groups_per_block). lean (v2.3, fewer
    registers: 0.304 ms on W-GPU against v2.2's 0.400) wherever mma.lean_fits; two tokens a row of
    A (v2.5, mma.default_slots) where n_heads query heads a KV head fit 4 columns and a block
    scores 2 groups or more (with one group a block the prologue, twice as many query fragments,
    is not amortised: B = 8, L = 4096, 1 group a block: 1 slot 0.0146 ms, 2 slots 0.0157; B = 1,
    L = 131072, 4 groups a block: 0.0410 and 0.0401; 2 groups a block was not measured); and
    mma.default_warps, unless overridden."""
    gpb = 1
    while gpb < 32 and 2 * gpb * 2048 <= n_groups * bhs:      # powers of two: few compiled variants
        gpb *= 2
    gpb = overrides.get("groups_per_block", gpb)
    lean = overrides.get("lean", MMA.lean_fits(n_pairs, t_bits))
    cfg = dict(n_pairs=n_pairs, r_bits=r_bits, t_bits=t_bits, group_size=group_size,
               groups_per_block=gpb,
               wide_loads=n_pairs % 64 == 0 and index_ptr % 16 == 0,
               lean=lean, slots=MMA.default_slots(n_heads, n_pairs, t_bits, group_size) if lean and gpb > 1 else 1)
    cfg.update(overrides)
    cfg["balance"] = overrides.get("balance", "groups_per_block" not in overrides)
    if "warps" not in overrides:              # v2.2 keeps 2 KS B registers a tile: 4 warps there
        cfg["warps"] = (MMA.default_warps(n_pairs, t_bits, group_size, cfg["slots"]) if cfg["lean"]
                        else MMA.mma_warps(group_size))
    return cfg


MMA_LAUNCH_KEYS = ("groups_per_block", "balance")       # mma_config keys that are not the factory's


def mma_kernel_for(config):
    """The mma.mma_scores_kernel of an mma_config (its launch keys left out)."""
    return MMA.mma_scores_kernel(**{k: v for k, v in config.items() if k not in MMA_LAUNCH_KEYS})


BLOCK_PROLOGUE = 0.5    # a block's query fragments and first loads, in group times (see below)


def balanced_groups_per_block(resident, rows, n_groups, most):
    """Groups a block, of max(2, ceil(most / 2)) .. most (most itself where most < 2), whose grid of
    rows x ceil(n_groups / g) blocks best fills whole waves of `resident` blocks (those the GPU
    holds at once): the least ceil(blocks / resident) * (g + BLOCK_PROLOGUE), the larger g on ties.

    W-GPU (64 rows of 1024 groups, most 32): at 10 blocks a SM (1320 resident) 32 groups a block
    give 2048 blocks, 1.55 waves, the second 55 % full (ncu: 16.6 of 20 warps a SM active), and
    25 groups (2624 blocks, 1.99 waves) are chosen; at 8 a SM (1056) 32 groups are 1.94 waves
    (2 x 32.5 = 65 group times), and 21 (3136 blocks, 2.97 waves: 3 x 21.5 = 64.5) are chosen.
    At least half of `most`, so that mma_config's choice of token slots (2 only where a block
    scores 2 groups or more) holds."""
    if most < 2:
        return most
    best = None
    for g in range(max(2, -(-most // 2)), most + 1):
        waves = -(-rows * -(-n_groups // g) // resident)
        cost = (waves * (g + BLOCK_PROLOGUE), -g)
        if best is None or cost < best[0]:
            best = (cost, g)
    return best[1]


_BALANCED = {}          # (kernel, threads, rows, n_groups, most) -> groups a block


def launch_groups_per_block(kern, args, threads, rows, n_groups, most):
    """balanced_groups_per_block for kern (compiled for args), cached: the blocks the GPU holds at
    once are the CUDA occupancy calculator's blocks a SM times the SMs, as for a cooperative
    launch. The cache keeps a launch's Python work small (B = 1, L = 4096 takes 5 us); it is not
    keyed by device, so on a host with GPUs of different sizes the count fits the first one used
    (any count gives the same scores: it only splits the same groups differently), and it is not
    bounded: an entry for each shape (a cache growing by one group at a time adds one a group)."""
    key = (kern, threads, rows, n_groups, most)
    if key not in _BALANCED:
        compiled = kern.compile(tuple(kern.typeof_pyval(a) for a in args))
        resident = compiled.max_cooperative_grid_blocks(threads)
        _BALANCED[key] = balanced_groups_per_block(resident, rows, n_groups, most)
    return _BALANCED[key]


def launch_mma_scores(index, r_min, r_step, phi_min, phi_step, queries, group_size, pairing,
                      n_heads, out, out_len, bhs, n_groups, flags, config):
    """Kernel only: tensor-core scores of the quantized tokens into out; flags[0] = 1 on float16 overflow."""
    if bhs * n_groups * n_heads == 0:
        return
    kern = mma_kernel_for(config)
    n_pairs, gpb = config["n_pairs"], config["groups_per_block"]
    x_stride, y_offset = (1, n_pairs) if pairing == "half" else (2, 1)
    slots = config.get("slots", 1)
    threads = 32 * MMA.mma_warps(group_size, config.get("warps", 0), slots)
    head_blocks = -(-n_heads // (MMA.MMA_HEADS // slots))
    args = [index, r_min, r_step, phi_min, phi_step, queries, x_stride, y_offset,
            n_groups, n_heads, out, out_len, flags, MMA.radius_magic(config["t_bits"]), gpb]
    if config.get("balance") and gpb > 1 and not SIM:   # the simulator has no occupancy: grids as configured
        gpb = args[-1] = launch_groups_per_block(kern, args, threads, bhs * head_blocks, n_groups, gpb)
    kern[_grid(-(-n_groups // gpb), bhs, head_blocks), threads](*args)


def launch_residual_scores(queries, residual3, n_heads, lq, out, out_len):
    """Kernel only: residual-token dot products into out."""
    total = residual3.shape[0] * n_heads * residual3.shape[1]
    if total == 0:
        return
    grid, block = _grid_stride(total, 128)
    K.residual_scores_kernel()[grid, block](queries, residual3, n_heads, lq, out, out_len)


@_fast_sim
def scores(queries, code: PolarCode, table="float32"):
    """Table-based q . k_hat: queries (..., H_q, d) -> (..., H_q, L).

    table="float32" (default) or "float16": the angle tables in shared memory
    are rounded to float16 (half the shared-memory traffic); products and sums
    stay float32, so the error bound is the float32 one with the table entries'
    float16 rounding added (polarref.tolerances.table_entry_bound).
    table="mma": keys are decoded to float16 in registers and multiplied with
    the float16-rounded queries on tensor cores, float32 sums (cuda_kernels.mma;
    bound: polarref.tolerances.float16_key_bound). Shapes it does not take
    run the float32 table kernel instead: P or G not a multiple of 16,
    t_bits < 2, tables beyond the shared memory of a block
    (cuda_kernels.mma.mma_eligible), an index not 4-byte aligned, or more
    than 65535 batch x KV heads. Radii or queries beyond the float16 range
    raise OverflowError.
    """
    check_code(code)
    if table not in TABLE_KINDS:
        raise ValueError(f"table must be one of {TABLE_KINDS}, got table={table!r}")
    q_device = is_device_array(queries)
    if q_device:
        queries_d, big = check_device_real("queries", as_device(queries), 1, "(..., H_q, d)")
        q_shape = tuple(queries_d.shape)
    else:
        queries_h = check_queries(queries)
        big = _host_big(queries_h)
        q_shape = queries_h.shape
    outer, h_kv, h_q, squeeze = split_heads(q_shape, code.batch_shape, code.head_dim)
    _check_float32_range("scores", big)      # after the shape checks: the same errors as golden first
    n_heads = h_q // h_kv
    bhs = _prod(outer) * h_kv
    n_pairs, g = code.n_pairs, code.group_size
    lq, length = code.n_quantized, code.n_tokens
    n_groups = lq // g
    on_device = q_device or _code_on_device(code)

    q_flat = _device_flat(queries_d if q_device else queries_h, np.float32)
    out = cuda.device_array(bhs * n_heads * length, dtype=np.float32)
    if bhs * n_groups:
        index, r_min, r_step, phi_min, phi_step = device_code_arrays(code)
        ptr = _pointer(index)
        if table == "mma" and MMA.mma_eligible(n_pairs, code.t_bits, g) and ptr % 4 == 0 \
                and bhs <= GRID_Y_MAX and -(-n_heads // MMA.MMA_HEADS) <= GRID_Y_MAX:
            flags = cuda.to_device(np.zeros(1, dtype=np.int32))
            cfg = mma_config(n_pairs, code.r_bits, code.t_bits, g, n_groups, bhs, ptr, n_heads)
            launch_mma_scores(index, r_min, r_step, phi_min, phi_step, q_flat, g, code.pairing,
                              n_heads, out, length, bhs, n_groups, flags, cfg)
            if int(flags.copy_to_host()[0]):
                raise OverflowError(f"scores(table='mma'): a query or key radius is beyond the float16 "
                                    f"range (|x| >= {float(MMA.F16_MAX):g}); use table='float32'")
        else:
            kind = "float32" if table == "mma" else table
            cfg = scores_config(n_pairs, code.r_bits, code.t_bits, g, n_heads, kind, ptr)
            launch_scores(index, r_min, r_step, phi_min, phi_step, q_flat, g, code.pairing,
                          n_heads, out, length, bhs, n_groups, cfg)
    if length > lq and bhs:
        res = code.residual
        res3 = _view3(as_device(res)) if is_device_array(res) else \
            cuda.to_device(np.ascontiguousarray(res).reshape(bhs, length - lq, code.head_dim))
        launch_residual_scores(q_flat, res3, n_heads, lq, out, length)
    result_shape = (*outer, length) if squeeze else (*outer, h_q, length)   # squeeze: H_q == 1
    if on_device:
        return _out(out.reshape(*result_shape))
    result = out.copy_to_host().astype(np.float64).reshape(result_shape)
    if not np.isfinite(result).all():
        raise OverflowError("scores: float32 overflow; inputs too large in magnitude")
    return result


# --------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------
@_fast_sim
def decode(code: PolarCode):
    """PolarCode -> keys_hat (..., L, d): float64 NumPy for a host code, float32 device otherwise."""
    check_code(code)
    batch = code.batch_shape
    bhs, n_pairs, g = _prod(batch), code.n_pairs, code.group_size
    lq, length, d = code.n_quantized, code.n_tokens, code.head_dim
    n_groups = lq // g
    on_device = _code_on_device(code)
    out = cuda.device_array((bhs, length, d), dtype=np.float32)
    if bhs * lq:
        index, r_min, r_step, phi_min, phi_step = device_code_arrays(code)
        x_stride, y_offset = (1, n_pairs) if code.pairing == "half" else (2, 1)
        grid, block = _grid_stride(bhs * lq * n_pairs)
        K.decode_kernel(code.t_bits)[grid, block](index, r_min, r_step, phi_min, phi_step, g, n_groups,
                                                   x_stride, y_offset, out)
    if not on_device:
        quantized = out.copy_to_host()[:, :lq, :].astype(np.float64).reshape(*batch, lq, d)
        host = np.concatenate([quantized, np.asarray(code.residual, dtype=np.float64)], axis=-2)
        if not np.isfinite(host).all():
            raise OverflowError("decode: float32 overflow; inputs too large in magnitude")
        return host
    if length > lq and bhs:
        res3 = _view3(as_device(code.residual))
        tail = out[:, lq:, :]
        grid, block = _grid_stride(res3.size)
        K.copy3d_kernel()[grid, block](res3, tail)
    return _out(out.reshape(*batch, length, d))
