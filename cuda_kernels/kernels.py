"""numba.cuda kernels of PolarQuant paper mode; launchers live in `launch.py`.

Every kernel here is made by a factory that bakes the configuration (bits,
pairs, table kind, block shape) into compile-time constants, so loops over
pairs unroll and shared-memory offsets become immediates. The launcher picks
the factory arguments; nothing here allocates, copies or synchronises.

Versions of the scoring kernel (numbers in benchmarks/NOTES-gpu.md):

  v0  (someone's starting point, not kept) one thread per token, float32
      angle tables for 4 query heads, 8-byte index loads; bound by
      shared-memory wavefronts (several 4-byte lookups per pair).
  v1.2 (now) `scores_kernel` below: per group and KV head the block stages radius
      constants, phase constants and queries in shared memory and builds the
      angle table for NH query heads at once (NH = 4 for Llama-style GQA), one
      entry per thread with sin.approx/cos.approx; then each thread scores TPT
      tokens: 16-byte index loads (16 pairs), radius by one FMA on the code
      put into a float's mantissa (no int->float conversion, no lookup), and
      per pair one conflict-free wide lookup of the NH table values:
        float32 tables: two 8-byte loads (heads 0,1 and 2,3); each sub-table
          of a pair is 16 entries x 8 B = 128 B, exactly the 32 banks, so a
          warp reading one pair never conflicts (same entry = broadcast);
        float16 tables (option): one 8-byte load of four halves.
      The first index load goes out before the table build and the next one
      before the current 16 pairs are scored; the build runs with constant
      trip counts and raw (no-wraparound) loads. H200, W-GPU B=8 L=131072:
      0.499 ms, 1.02x torch fp16 q@k^T (issue-bound; see the notes).
  v2  (cuda_kernels/mma.py, scores(table="mma")) float16 keys decoded in
      registers, q . k on tensor cores: 0.304 ms, 1.67x (v2.3).

Encode: `encode_rows_kernel` (v2, the default: a warp reads whole rows of keys,
two pairs a lane, branch-free polar form) and `encode_kernel` (v1: a tile of
pairs x token slots, one pair a thread), which takes what v2 cannot: P odd or
keys not aligned to two elements. H200, fp16 keys, B=8 L=32768: 0.317-0.328 ms, 51 % to 49 %
of the memory roofline in three runs (v2.7; v1: 0.784 ms).

Precision: table entries, radii and sums are float32 (float16 table option:
entries rounded to float16, arithmetic still float32); sin/cos of the bin
angles use the hardware approximations on an argument reduced to [-pi, pi]
(absolute error about 2**-21.4, a few float32 eps of |q|).

The CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs the same kernel bodies; the
few helpers that are LLVM intrinsics on the GPU (wide loads, bit casts, fast
sin/cos) have plain-Python twins below. Shared arrays are declared one per
source line: the simulator keys them by line.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import cuda, float32, int64, types as _nbtypes, uint8, uint32

try:  # numba-cuda keeps its own config module; fall back to numba's
    from numba.cuda.core import config as _config
except ImportError:  # pragma: no cover
    from numba.core import config as _config

SIM = bool(_config.ENABLE_CUDASIM)


def _lock_simulator_shared_arrays():
    """Make the simulator's shared-array lookup atomic.

    numba-cuda's simulator (0.30.4) finds a block's shared array by the source line that declares
    it: a dict lookup and, on a miss, an insert, with no lock. Its CUDA threads are Python
    threads, so two of them can both miss and each keep an array of its own; a reduction through
    shared memory then silently drops their values (20 of 200 trials of 32 threads at a 1 us GIL
    switch interval; tests/test_cuda_simulator.py). launch._fast_sim's short switch interval makes
    that rare race visible: once in a clean-clone run of .ci/run, encode's group range came out
    wrong for one layout (pairings_agree: "rho differs"). The lookup below takes a lock;
    everything else (dynamic shared memory, the alignment error) is the simulator's own.
    """
    import sys
    import threading

    from numba.cuda.simulator import kernelapi

    original = kernelapi.FakeCUDAShared.array
    if getattr(original, "locked_lookup", False):
        return
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):     # as the simulator converts numba types
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)                     # the kernel line that declares the array
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    array.locked_lookup = True
    kernelapi.FakeCUDAShared.array = array

F0 = np.float32(0.0)
F1 = np.float32(1.0)
FHALF = np.float32(0.5)
PI32 = np.float32(np.pi)
TWO_PI32 = np.float32(2.0 * np.pi)
FINF = np.float32(np.inf)
F32_MAX = np.float32(np.finfo(np.float32).max)
F32_NORMAL = np.float32(np.finfo(np.float32).smallest_normal)
SHARED_ALIGN = None if SIM else 16   # wide shared loads/stores need 16-byte aligned arrays
U0 = np.uint32(0)
U8 = np.uint32(8)
UFF = np.uint32(0xFF)


# --------------------------------------------------------------------------
# Device helpers: LLVM intrinsics on the GPU, plain Python in the simulator
# --------------------------------------------------------------------------
if SIM:
    _lock_simulator_shared_arrays()

    def ld_u32x4(arr, i):
        """Four little-endian uint32 words from bytes arr[i:i+16] (i 16-byte aligned)."""
        w = [0, 0, 0, 0]
        for k in range(16):
            w[k >> 2] |= int(arr[i + k]) << (8 * (k & 3))
        return np.uint32(w[0]), np.uint32(w[1]), np.uint32(w[2]), np.uint32(w[3])

    def ld_u32(arr, i):
        """One little-endian uint32 word from bytes arr[i:i+4] (i 4-byte aligned)."""
        w = 0
        for k in range(4):
            w |= int(arr[i + k]) << (8 * k)
        return np.uint32(w)

    def lds_f32(arr, i):
        return np.float32(arr[i])

    def lds_f32x2(arr, i):
        return np.float32(arr[i]), np.float32(arr[i + 1])

    def lds_f32x4(arr, i):
        return (np.float32(arr[i]), np.float32(arr[i + 1]),
                np.float32(arr[i + 2]), np.float32(arr[i + 3]))

    def ldg_f32(arr, i):
        return np.float32(arr[i])

    def ldg(arr, i):
        return arr[i]

    def stg(arr, i, v):
        arr[i] = v

    def sts_f32x2(arr, i, a, b):
        arr[i] = a
        arr[i + 1] = b

    def lds_h1(arr, i):
        return np.float32(arr[i])

    def lds_h2(arr, i):
        return np.float32(arr[i]), np.float32(arr[i + 1])

    def lds_h4(arr, i):
        return (np.float32(arr[i]), np.float32(arr[i + 1]),
                np.float32(arr[i + 2]), np.float32(arr[i + 3]))

    def sts_h1(arr, i, a):
        arr[i] = np.float16(a)

    def sts_h2(arr, i, a, b):
        arr[i] = np.float16(a)
        arr[i + 1] = np.float16(b)

    def sts_h4(arr, i, a, b, c, d):
        arr[i] = np.float16(a)
        arr[i + 1] = np.float16(b)
        arr[i + 2] = np.float16(c)
        arr[i + 3] = np.float16(d)

    def f32_bits(u):
        return np.array([u], dtype=np.uint32).view(np.float32)[0]

    def ldg_x2(arr, i):
        """arr[i], arr[i + 1] as float32 (one aligned 2-element load on the GPU)."""
        return np.float32(arr[i]), np.float32(arr[i + 1])

    def stg_u16(arr, i, v):
        """Bytes arr[i], arr[i + 1] = the low 16 bits of v, little-endian (i 2-byte aligned)."""
        arr[i] = np.uint8(int(v) & 0xFF)
        arr[i + 1] = np.uint8((int(v) >> 8) & 0xFF)

    def fast_sin(x):
        return np.float32(math.sin(float(x)))

    def fast_cos(x):
        return np.float32(math.cos(float(x)))

    def fma(a, b, c):
        """a * b + c rounded once, as FFMA: the float32 product is exact in float64 (48 bits);
        the sum is rounded to float64 and then to float32, which differs from one rounding only
        when the first lands exactly on a float32 halfway point (never for these kernels' uses)."""
        return np.float32(np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c)))

    def rsqrt_approx(x):
        return np.float32(1.0 / math.sqrt(float(x)))

    def sqrt_approx(x):
        return np.float32(math.sqrt(float(x)))

    def rcp_approx(x):
        """rcp.approx.ftz.f32 rounded correctly: subnormal input and output flush to zero."""
        x = float(np.float32(x))
        if abs(x) < F32_NORMAL:
            return np.float32(math.copysign(np.inf, x))
        r = np.float32(1.0 / x)
        return r if abs(r) >= F32_NORMAL else np.float32(0.0)

    def sign_bit(x):
        """True where float32 x has its sign bit set (x < 0, and -0.0)."""
        return bool(np.signbit(np.float32(x)))

    def floor_u32(x):
        """floor of float32 x as uint32, saturating as cvt.rzi.u32.f32: 0 for x < 0 and NaN,
        2**32 - 1 from 2**32 up."""
        return np.uint32(min(float(x), 4294967295.0)) if x > 0 else np.uint32(0)

    def narrow_keys(arr):
        """True for float16 keys (a compile-time constant on the GPU)."""
        return arr.dtype.itemsize <= 2

else:
    from llvmlite import ir
    from numba import types
    from numba.cuda import cgutils, libdevice
    from numba.cuda.extending import intrinsic

    _I32 = ir.IntType(32)

    def _item_ptr(context, builder, arrty, arr, idxty, idx):
        """Generic pointer to element idx of a 1-D array, no wraparound or bounds check."""
        ary = context.make_array(arrty)(context, builder, value=arr)
        idx = context.cast(builder, idx, idxty, types.intp)
        return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)

    def _vec_ptr(builder, ptr, elem, n, space):
        vty = ir.VectorType(elem, n) if n > 1 else elem
        ptr = builder.bitcast(ptr, ir.PointerType(vty))
        return builder.addrspacecast(ptr, ir.PointerType(vty, space))

    def _vector_load(elem_ll, elem_nb, n, space, align, widen=None):
        """Intrinsic: n consecutive elements as one load from `space` (1 global, 3 shared)."""
        out = types.float32 if widen else elem_nb

        @intrinsic
        def load(typingctx, arr, idx):
            sig = (types.UniTuple(out, n) if n > 1 else out)(arr, idx)

            def codegen(context, builder, sig, args):
                ptr = _item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
                v = builder.load(_vec_ptr(builder, ptr, elem_ll, n, space), align=align)
                if n == 1:
                    return builder.fpext(v, ir.FloatType()) if widen else v
                vals = [builder.extract_element(v, ir.Constant(_I32, k)) for k in range(n)]
                if widen:
                    vals = [builder.fpext(x, ir.FloatType()) for x in vals]
                return context.make_tuple(builder, sig.return_type, vals)

            return sig, codegen

        return load

    def _vector_store(elem_ll, n, align, narrow=False, value=types.float32):
        """Intrinsic: store n values cast to `value` (float32 narrowed to float16 if narrow; or
        uint32) as one shared store."""

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            xs = [context.cast(builder, a, t, value) for a, t in zip(args[2:], sig.args[2:])]
            if narrow:
                xs = [builder.fptrunc(x, elem_ll) for x in xs]
            if n == 1:
                v = xs[0]
            else:
                v = ir.Constant(ir.VectorType(elem_ll, n), ir.Undefined)
                for k, x in enumerate(xs):
                    v = builder.insert_element(v, x, ir.Constant(_I32, k))
            builder.store(v, _vec_ptr(builder, ptr, elem_ll, n, 3), align=align)
            return context.get_dummy_value()

        if n == 1:
            @intrinsic
            def store(typingctx, arr, idx, a):
                return types.void(arr, idx, a), codegen
        elif n == 2:
            @intrinsic
            def store(typingctx, arr, idx, a, b):
                return types.void(arr, idx, a, b), codegen
        else:
            @intrinsic
            def store(typingctx, arr, idx, a, b, c, d):
                return types.void(arr, idx, a, b, c, d), codegen
        return store

    _F = ir.FloatType()
    _H = ir.HalfType()
    ld_u32x4 = _vector_load(_I32, types.uint32, 4, 1, 16)
    ld_u32 = _vector_load(_I32, types.uint32, 1, 1, 4)
    lds_f32 = _vector_load(_F, types.float32, 1, 3, 4)
    lds_f32x2 = _vector_load(_F, types.float32, 2, 3, 8)
    lds_f32x4 = _vector_load(_F, types.float32, 4, 3, 16)
    ldg_f32 = _vector_load(_F, types.float32, 1, 1, 4)
    lds_h1 = _vector_load(_H, types.float16, 1, 3, 2, widen=True)
    lds_h2 = _vector_load(_H, types.float16, 2, 3, 4, widen=True)
    lds_h4 = _vector_load(_H, types.float16, 4, 3, 8, widen=True)
    sts_f32x2 = _vector_store(_F, 2, 8)
    sts_h1 = _vector_store(_H, 1, 2, narrow=True)
    sts_h2 = _vector_store(_H, 2, 4, narrow=True)
    sts_h4 = _vector_store(_H, 4, 8, narrow=True)

    @intrinsic
    def ldg(typingctx, arr, idx):
        """arr[idx] of a 1-D array without the negative-index wraparound of numba indexing."""
        sig = arr.dtype(arr, idx)

        def codegen(context, builder, sig, args):
            return builder.load(_item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1]))

        return sig, codegen

    @intrinsic
    def stg(typingctx, arr, idx, val):
        """arr[idx] = val (cast to arr's dtype) without wraparound."""
        sig = types.void(arr, idx, val)

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            builder.store(context.cast(builder, args[2], sig.args[2], sig.args[0].dtype), ptr)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def ldg_x2(typingctx, arr, idx):
        """arr[idx], arr[idx + 1] of a float16/32/64 array as one aligned 2-element global load,
        converted to float32 (exactly for float16; rounded for float64)."""
        sig = types.UniTuple(types.float32, 2)(arr, idx)

        def codegen(context, builder, sig, args):
            width = sig.args[0].dtype.bitwidth      # (numba stores float16 arrays as i16: name the type)
            elem = {16: ir.HalfType(), 32: ir.FloatType(), 64: ir.DoubleType()}[width]
            ptr = _item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            v = builder.load(_vec_ptr(builder, ptr, elem, 2, 1), align=2 * width // 8)
            vals = [builder.extract_element(v, ir.Constant(_I32, k)) for k in range(2)]
            if width < 32:
                vals = [builder.fpext(x, ir.FloatType()) for x in vals]
            elif width > 32:
                vals = [builder.fptrunc(x, ir.FloatType()) for x in vals]
            return context.make_tuple(builder, sig.return_type, vals)

        return sig, codegen

    @intrinsic
    def stg_u16(typingctx, arr, idx, val):
        """Bytes arr[idx], arr[idx + 1] of a uint8 array = the low 16 bits of val (one store)."""
        sig = types.void(arr, idx, val)

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            ptr = builder.bitcast(ptr, ir.PointerType(ir.IntType(16)))
            v = context.cast(builder, args[2], sig.args[2], types.uint32)
            builder.store(builder.trunc(v, ir.IntType(16)), ptr, align=2)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def f32_bits(typingctx, u):
        """The float32 whose bit pattern is the uint32 u."""
        sig = types.float32(types.uint32)

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.FloatType())

        return sig, codegen

    @cuda.jit(device=True, inline=True)
    def fast_sin(x):
        return libdevice.fast_sinf(x)            # sin.approx.f32

    @cuda.jit(device=True, inline=True)
    def fast_cos(x):
        return libdevice.fast_cosf(x)            # cos.approx.f32

    @cuda.jit(device=True, inline=True)
    def fma(a, b, c):
        return cuda.fma(a, b, c)

    def _asm_f32(text, out=types.float32):
        """Intrinsic: one PTX instruction on a float32 operand, giving float32 (or uint32 when out is)."""
        ll, constraint = (ir.FloatType(), "=f,f") if out == types.float32 else (_I32, "=r,f")

        @intrinsic
        def op(typingctx, x):
            def codegen(context, builder, sig, args):
                asm = ir.InlineAsm(ir.FunctionType(ll, [ir.FloatType()]), text, constraint)
                return builder.call(asm, [context.cast(builder, args[0], sig.args[0], types.float32)])

            return out(x), codegen

        return op

    # the bare MUFU instructions: without .ftz, NVVM wraps them in a subnormal rescue (about 5
    # instructions) that their callers' arguments (root_1p: [1, 2]; ratio: normal) never need
    rsqrt_approx = _asm_f32("rsqrt.approx.ftz.f32 $0, $1;")
    sqrt_approx = _asm_f32("sqrt.approx.ftz.f32 $0, $1;")        # one MUFU.SQRT (sm_90)
    rcp_approx = _asm_f32("rcp.approx.ftz.f32 $0, $1;")

    @intrinsic
    def sign_bit(typingctx, x):
        """True where float32 x has its sign bit set (x < 0, and -0.0): one integer compare."""
        def codegen(context, builder, sig, args):
            bits = builder.bitcast(context.cast(builder, args[0], sig.args[0], types.float32), _I32)
            return builder.icmp_signed("<", bits, ir.Constant(_I32, 0))

        return types.boolean(x), codegen

    # floor of float32 x >= 0 as uint32, 0 for x < 0 and NaN: PTX's float-to-integer conversion
    # saturates (LLVM's fptoui leaves those inputs undefined)
    floor_u32 = _asm_f32("cvt.rzi.u32.f32 $0, $1;", types.uint32)

    @intrinsic
    def narrow_keys(typingctx, arr):
        """True for a float16 array: a constant, so LLVM drops the branch not taken."""
        def codegen(context, builder, sig, args):
            return ir.Constant(ir.IntType(1), int(sig.args[0].dtype.bitwidth <= 16))

        return types.boolean(arr), codegen


def _f32(x):
    return np.float32(x)


# --------------------------------------------------------------------------
# Encode: polar form, group ranges, codes
# --------------------------------------------------------------------------
# atan(a) = a + a * t * P(t), t = a*a, on [0, 1]: weighted least-squares fit
# for relative error (1.7e-8 in float64; 1.2 float32 ulp when evaluated in
# float32 with FMA, checked on 2e6 points).
ATAN_C = tuple(np.float32(c) for c in (
    -0.33333153, 0.19993776, -0.14211081, 0.10666122,
    -0.07552492, 0.04321545, -0.01637031, 0.00292133))
ATAN_C0, ATAN_C1, ATAN_C2, ATAN_C3, ATAN_C4, ATAN_C5, ATAN_C6, ATAN_C7 = ATAN_C
HALF_PI32 = np.float32(np.pi / 2)
GOLDEN_WRAP = np.float32(2.0**-51)            # 2*pi - phi rounds to 2*pi in float64 below this
BELOW_TWO_PI32 = np.nextafter(TWO_PI32, np.float32(0.0))


@cuda.jit(device=True, inline=True)
def root_1p(s):
    """sqrt(s) for s in [1, 2]: hardware rsqrt (PTX ISA: relative error at most 2**-22.9) and one
    Newton step, no branch (the IEEE sqrt adds a range check and a slow path that [1, 2] never
    needs). Within 0.5 ulp + 1e-6 ulp for every float32 s in [1, 2) at rsqrt's worst error
    (tests/test_cuda_numerics.py models it)."""
    yr = rsqrt_approx(s)
    h = s * yr
    e = fma(-h, h, s)
    return fma(e, FHALF * yr, h)


F_2P64 = np.float32(2.0**64)
F_2M64 = np.float32(2.0**-64)
F_2P62 = np.float32(2.0**62)
F_2M100 = np.float32(2.0**-100)


@cuda.jit(device=True, inline=True)
def ratio(mn, mx, narrow):
    """mn / mx for 0 <= mn <= mx, mx finite (0 for mx = 0), within 1 ulp (a subnormal quotient:
    within the smallest subnormal): the hardware reciprocal, the quotient, and one correction by
    its residual (exact by FMA), with no branch. The IEEE division adds a range check and a call
    to a slow path behind it.

    The reciprocal (flushing subnormals to zero) needs mx and 1 / mx normal, and the residual
    is exact only if mn is normal: narrow (values from float16 keys, so mn, mx are 0 or in
    [2**-24, 65504]) needs nothing; wider keys are scaled by a power of two first (exact): by
    2**64 where mn is below 2**-64 and mx below 2**62, by 2**-64 where mx is above 2**64.
    (Left unscaled, an mn below 2**-64 under mx in [2**62, 2**64] has a quotient below 2**-126,
    subnormal, within the smallest subnormal.) A zero mx becomes 2**-100: the quotient is 0.
    """
    if not narrow:
        s = F_2P64 if (mn < F_2M64 and mx < F_2P62) else (F_2M64 if mx > F_2P64 else F1)
        mn = mn * s
        mx = mx * s
    rc = rcp_approx(max(mx, F_2M100))
    q = mn * rc
    return fma(fma(-q, mx, mn), rc, q)


def _polar32(fast_root):
    """polar32, with the IEEE sqrt or (fast_root) root_1p for the radius."""

    @cuda.jit(device=True, inline=True)
    def polar32(x, y, narrow):
        """(r, phi) of float32 x, y: r = hypot, phi = atan2 taken into [0, 2*pi).

        One division (`ratio`; narrow: x, y come from float16 keys) serves both:
        a = min/max of |x|, |y|; r = max * sqrt(1 + a*a)
        (no overflow or underflow of squares), atan by the polynomial above, then
        the octant reflections. From float16 keys (narrow) the radius is
        sqrt.approx(fma(x, x, y*y)) instead: x*x and y*y are exact (22 significant
        bits), the sum rounds once and stays in the normal range ([2**-48, 2**33] or 0),
        and the hardware root errs by SQRT_REL_ERR at most (measured on the H200,
        tests/test_cuda_numerics.py): 3 instructions where the other form takes 12.
        Signed zeros follow numpy's arctan2 (x = -0.0 counts as negative), then -0 -> +0
        as in the golden model (y = -0.0 is not negative here, and phi is never -0). A
        negative angle that float32 rounds to 2*pi (its 2*pi is 1.7e-7 above the real one) becomes
        the float32 just below it, unless float64 also rounds it to 2*pi: only then
        does the golden model wrap it to 0.
        Error: r about 2 ulp (from float16 keys at most 2.4 ulp at the measured root error,
        2.9 at the bound the tests assume), phi about 2 ulp of max(phi, pi/2) (4 next to 2*pi).
        """
        ax = abs(x)
        ay = abs(y)
        mx = max(ax, ay)
        mn = min(ax, ay)
        a = ratio(mn, mx, narrow)
        t = a * a
        if narrow:
            r = sqrt_approx(fma(x, x, y * y))
        elif fast_root:
            r = mx * root_1p(fma(a, a, F1))
        else:
            r = mx * math.sqrt(fma(a, a, F1))
        p = fma(ATAN_C7, t, ATAN_C6)
        p = fma(p, t, ATAN_C5)
        p = fma(p, t, ATAN_C4)
        p = fma(p, t, ATAN_C3)
        p = fma(p, t, ATAN_C2)
        p = fma(p, t, ATAN_C1)
        p = fma(p, t, ATAN_C0)
        phi = fma(a * t, p, a)
        phi = HALF_PI32 - phi if ay > ax else phi
        phi = PI32 - phi if sign_bit(x) else phi  # |atan2|; x < 0, and x = -0.0
        w = TWO_PI32 - phi                        # atan2 < 0 taken into [0, 2*pi)
        # float32's 2*pi is above the real one, so w rounds up to it for phi under half its ulp;
        # the golden model (float64) maps to 0 only the phi that its own 2*pi swallows. From
        # float16 keys phi >= atan(2**-24 / 65504) > 2**-40 where y < 0: never below GOLDEN_WRAP,
        # and w <= 2*pi, so the test is one min.
        if narrow:
            w = min(w, BELOW_TWO_PI32)
        else:
            w = w if w < TWO_PI32 else (F0 if phi < GOLDEN_WRAP else BELOW_TWO_PI32)
        return r, (w if y < F0 else phi)          # phi >= +0 here: mn >= +0 gives a = +0, not -0

    return polar32


polar32 = _polar32(False)
polar32_fast_root = _polar32(True)

@cuda.jit(device=True, inline=True)
def bin_scale(lo, step):
    """(pre, lo * pre, inv): the position in bins of a value v is fma(v, pre, -lo * pre) * inv.

    inv = 1 / (step * pre), 0 for a zero range. pre = 2**64 for 0 < step < 2**-64, else 1:
    the inverse of a step that small (keys near the float32 subnormals) overflows float32.
    Scaling by a power of two is exact, and such a group's values are below 2**-36, so
    fma(v, pre, -lo * pre) is (v - lo) * pre with one rounding, as v - lo is without it.
    """
    pre = F_2P64 if (step > F0 and step < F_2M64) else F1
    inv = F1 / (step * pre) if step > F0 else F0
    return pre, lo * pre, inv


@cuda.jit(device=True, inline=True)
def bin_code(v, pre, lo_pre, inv, top):
    """The code of value v: floor of its position in bins (from bin_scale), clipped to [0, top]."""
    c = fma(v, pre, -lo_pre) * inv               # 0 for a zero range
    if c > top:
        c = top
    return floor_u32(c)                          # below 0 and NaN: 0


SHRINK = np.float32(1.0 - 2.0**-22)       # bin_scale_narrow: keeps the group's max below the top edge


@cuda.jit(device=True, inline=True)
def bin_scale_narrow(step):
    """inv for values from float16 keys: the code of v is floor((v - lo) * inv), no clip.

    inv = 1/step shrunk by 2**-22 (relative). With step = D / 2**bits, D = fl(hi - lo):
    fl(hi - lo) * inv <= 2**bits (1 + 2**-24)**2 (1 - 2**-22) < 2**bits (1 - 2**-23), which rounds
    to at most the float below 2**bits, so the group's max lands in the top bin, its min
    (v - lo = 0) in bin 0, and v - lo >= 0 never needs the lower clip. The shrink moves a position
    down by at most 2**bits * 2**-22 bins (2**-18 at 4 bits), far inside tolerances.boundary_band
    (at least 2**bits * 32 * eps32 bins). From float16 keys a nonzero step is at least
    2**-63 / 2**bits (distinct angles are at least ulp(2**-40) apart; radii more), so the
    division needs no prescale (bin_scale's 2**64). A zero step gives inv = 0: every code 0.
    """
    return F1 / step * SHRINK if step > F0 else F0


@cuda.jit(device=True, inline=True)
def bin_code_narrow(v, lo, inv):
    """The code of value v in [lo, hi] from bin_scale_narrow's inv: FADD, FMUL, F2I."""
    return floor_u32((v - lo) * inv)


@cuda.jit(device=True, inline=True)
def bin_constants(lo, step, narrow):
    """A range's three binning constants (k0, k1, k2): (lo, bin_scale_narrow's inv, unused) for
    values from float16 keys (narrow), else bin_scale's (pre, lo * pre, inv)."""
    if narrow:
        return lo, bin_scale_narrow(step), F0
    return bin_scale(lo, step)


@cuda.jit(device=True, inline=True)
def bin_code_from(v, k0, k1, k2, top, narrow):
    """The code of value v from bin_constants (narrow as given to it)."""
    if narrow:
        return bin_code_narrow(v, k0, k1)
    return bin_code(v, k0, k1, k2, top)


@lru_cache(maxsize=None)
def encode_kernel(r_bits: int, t_bits: int, pairs_per_block: int, slots: int, tokens_per_thread: int,
                  split: bool = True):
    """Kernel factory. Block (pairs_per_block * slots threads) = one group x pair tile.

    grid (n_groups * BH, ceil(P / pairs_per_block)). Thread (slot s, lane jl)
    handles pair j = tile * pairs_per_block + jl for tokens s, s + slots, ...
    (tokens_per_thread of them, kept in registers): pass 1 computes r, phi and
    the thread's min/max, a shared-memory reduction over the slots gives the
    group's range, pass 2 writes codes. A warp reads 32 consecutive pairs of
    one token (coalesced). split=False writes only the packed index (the
    paper's storage), not rho and theta.
    """
    PT, CH, TC = pairs_per_block, slots, tokens_per_thread
    CHPT = CH * PT
    SPLIT = bool(split)
    SCALE_R = _f32(2.0 ** -r_bits)
    SCALE_T = _f32(2.0 ** -t_bits)
    TOP_R = _f32((1 << r_bits) - 1)
    TOP_T = _f32((1 << t_bits) - 1)
    TB = np.uint32(t_bits)

    @cuda.jit
    def polar_encode(keys, length, d, x_stride, y_offset, group_size, index, rho_out, theta_out,
                     r_min, r_step, phi_min, phi_step, flags):
        # keys (BH * L * d,) any real float dtype, contiguous
        # index, rho_out, theta_out (BH * Lq * P,) uint8; r_min.. (BH * n * P,) float32
        # flags (1,) int32: set to 1 when a radius or step overflows float32
        n_pairs = d // 2
        n_groups = length // group_size
        g = cuda.blockIdx.x % n_groups
        bh = cuda.blockIdx.x // n_groups
        tid = cuda.threadIdx.x
        jl = tid % PT
        slot = tid // PT
        j = cuda.blockIdx.y * PT + jl
        active = j < n_pairs
        rv = cuda.local.array(TC, float32)
        pv = cuda.local.array(TC, float32)
        lo_r = FINF
        hi_r = -FINF
        lo_p = FINF
        hi_p = -FINF
        kbase = (int64(bh) * length + g * group_size) * d + j * x_stride   # x of pair j, token 0
        for u in range(TC):
            t = slot + u * CH
            rv[u] = F0
            pv[u] = F0
            if active and t < group_size:
                x = float32(ldg(keys, kbase + t * d))
                y = float32(ldg(keys, kbase + t * d + y_offset))
                r, p = polar32(x, y, narrow_keys(keys))
                rv[u] = r
                pv[u] = p
                lo_r = min(lo_r, r)
                hi_r = max(hi_r, r)
                lo_p = min(lo_p, p)
                hi_p = max(hi_p, p)
        red_lo_r = cuda.shared.array(CHPT, float32)
        red_hi_r = cuda.shared.array(CHPT, float32)
        red_lo_p = cuda.shared.array(CHPT, float32)
        red_hi_p = cuda.shared.array(CHPT, float32)
        stg(red_lo_r, tid, lo_r)
        stg(red_hi_r, tid, hi_r)
        stg(red_lo_p, tid, lo_p)
        stg(red_hi_p, tid, hi_p)
        cuda.syncthreads()
        for s in range(CH):
            lo_r = min(lo_r, ldg(red_lo_r, s * PT + jl))
            hi_r = max(hi_r, ldg(red_hi_r, s * PT + jl))
            lo_p = min(lo_p, ldg(red_lo_p, s * PT + jl))
            hi_p = max(hi_p, ldg(red_hi_p, s * PT + jl))
        if not active:
            return
        step_r = (hi_r - lo_r) * SCALE_R
        step_p = (hi_p - lo_p) * SCALE_T
        if slot == 0:
            o = (int64(bh) * n_groups + g) * n_pairs + j
            stg(r_min, o, lo_r)
            stg(r_step, o, step_r)
            stg(phi_min, o, lo_p)
            stg(phi_step, o, step_p)
            if not (hi_r <= F32_MAX and step_r <= F32_MAX):
                flags[0] = 1
        pre_r, los_r, inv_r = bin_scale(lo_r, step_r)
        pre_p, los_p, inv_p = bin_scale(lo_p, step_p)
        lq = n_groups * group_size
        for u in range(TC):
            t = slot + u * CH
            if t < group_size:
                rho = bin_code(rv[u], pre_r, los_r, inv_r, TOP_R)
                theta = bin_code(pv[u], pre_p, los_p, inv_p, TOP_T)
                o = (int64(bh) * lq + g * group_size + t) * n_pairs + j
                stg(index, o, uint8((rho << TB) | theta))
                if SPLIT:
                    stg(rho_out, o, uint8(rho))
                    stg(theta_out, o, uint8(theta))

    return polar_encode


ROW_PAIRS = 64          # pairs of one row tile of encode_rows_kernel: 32 lanes x 2


@lru_cache(maxsize=None)
def encode_rows_kernel(r_bits: int, t_bits: int, warps: int, tokens_per_warp: int, half_pairing: bool,
                       split: bool = True, fast_root: bool = False, exact: bool = False, n_pairs: int = 0):
    """Kernel factory, encode v2: a warp reads whole rows; block = one group x 64-pair tile.

    grid (n_groups * BH, ceil(P / 64)), warps * 32 threads. Lane l holds
    pairs j, j + 1 (j = tile * 64 + 2 l) of tokens w, w + warps, ... (w the
    warp; tokens_per_warp of them, r and phi kept in registers): one 2-element
    load gives x_j, x_j+1 (half pairing; y from j + P) or x_j, y_j
    (interleaved), so a warp reads 32 x 4 bytes of fp16 keys per load. The
    group's min/max goes through shared memory in two stages (each thread's
    extremes, then one thread per (quantity, pair) over the warps); codes of
    the two pairs leave as one 2-byte store. Needs P even and the keys
    aligned to two elements (the launcher checks; else encode_kernel).
    fast_root: the radius's square root by root_1p instead of the IEEE sqrt (keys wider than
    float16; from float16 keys the radius is always sqrt.approx(x*x + y*y)).
    exact: the launcher guarantees group_size == warps * tokens_per_warp, so no
    token is past the group's end: no clamp of token offsets, no store checks
    (8 of about 85 instructions a token-pair); otherwise any group_size up to
    warps * tokens_per_warp.
    n_pairs > 0: the kernel is for keys of d = 2 * n_pairs only (its d argument is ignored),
    so every key load and code store is an immediate offset from one address: about 3 integer
    instructions a token-pair fewer than with d known only at run time.
    """
    W, TC = warps, tokens_per_warp
    D = 2 * n_pairs
    polar = polar32_fast_root if fast_root else polar32
    NT = W * 32
    NFIN = 6 * ROW_PAIRS                      # bin_constants (k0, k1, k2) of radius and angle x pair
    NREDW = 4 * W * ROW_PAIRS                 # array sizes must be constants, not expressions
    TC2 = 2 * TC
    SPLIT = bool(split)
    HALF = bool(half_pairing)
    EXACT = bool(exact)
    SCALE_R = _f32(2.0 ** -r_bits)
    SCALE_T = _f32(2.0 ** -t_bits)
    TOP_R = _f32((1 << r_bits) - 1)
    TOP_T = _f32((1 << t_bits) - 1)
    TB = np.uint32(t_bits)
    # two blocks a SM (W = 16: 32 warps) need <= 64 registers a thread; ask ptxas for them
    # rather than depend on its version landing there (64 -> 65 would halve the warps)
    jit = cuda.jit if SIM else cuda.jit(launch_bounds=(NT, max(1, 1024 // NT)))

    @cuda.jit(device=True, inline=True)
    def lane_setup(keys, length, d, group_size):
        """This thread's place: (n_pairs, n_groups, tid, w, jl, j, active, ax, ay, mine, stride)."""
        # 32-bit divisions (inline; int64 ones are calls): lengths are far below 2**32 tokens
        n_pairs = d // 2
        n_groups = uint32(length) // uint32(group_size)
        tid = cuda.threadIdx.x
        lane = tid % 32
        w = tid // 32
        jl = 2 * lane
        j = cuda.blockIdx.y * ROW_PAIRS + jl
        active = j < n_pairs
        jr = j if active else n_pairs - 2          # lanes past P read a real pair; they store nothing
        if HALF:
            ax, ay = jr, jr + n_pairs              # (x_j, x_j+1), (y_j, y_j+1)
        else:
            ax, ay = 2 * jr, 2 * jr + 2            # (x_j, y_j), (x_j+1, y_j+1)
        mine = uint32(group_size - 1 - w) // uint32(W)   # the warp's tokens of the group: u = 0 .. mine
        stride = uint32(W) * uint32(d)          # elements between a warp's tokens (numba: uint64)
        return n_pairs, n_groups, tid, w, jl, j, active, ax, ay, mine, stride

    @cuda.jit(device=True, inline=True)
    def token_offset(row, u, mine, stride):
        """Element offset of the warp's token u (row: its token 0). Unless EXACT, a warp's tokens
        past the group's end repeat its own last one: in bounds, same extremes."""
        return row + int64((uint32(u) if EXACT else min(uint32(u), mine)) * stride)

    @cuda.jit(device=True, inline=True)
    def polar_all(xa, xb, ya, yb, rv, pv, narrow):
        """r and phi of the thread's token-pairs into rv, pv; their extremes (lo_r0, lo_r1,
        hi_r0, hi_r1, lo_p0, lo_p1, hi_p0, hi_p1) for pairs j and j + 1."""
        for u in range(TC):
            if HALF:
                r0, p0 = polar(xa[u], ya[u], narrow)
                r1, p1 = polar(xb[u], yb[u], narrow)
            else:
                r0, p0 = polar(xa[u], xb[u], narrow)
                r1, p1 = polar(ya[u], yb[u], narrow)
            rv[2 * u] = r0
            rv[2 * u + 1] = r1
            pv[2 * u] = p0
            pv[2 * u + 1] = p1
            if u == 0:                         # from the first token, not from +-inf: 8 fewer FMNMX
                lo_r0 = hi_r0 = r0
                lo_r1 = hi_r1 = r1
                lo_p0 = hi_p0 = p0
                lo_p1 = hi_p1 = p1
            else:
                lo_r0 = min(lo_r0, r0)
                hi_r0 = max(hi_r0, r0)
                lo_p0 = min(lo_p0, p0)
                hi_p0 = max(hi_p0, p0)
                lo_r1 = min(lo_r1, r1)
                hi_r1 = max(hi_r1, r1)
                lo_p1 = min(lo_p1, p1)
                hi_p1 = max(hi_p1, p1)
        return lo_r0, lo_r1, hi_r0, hi_r1, lo_p0, lo_p1, hi_p0, hi_p1

    @cuda.jit(device=True, inline=True)
    def group_range(red, fin, ext, geo, bh, g, params, flags, narrow):
        """The group's range over the block (two barriers): its parameters to global memory,
        its binning constants to fin."""
        lo_r0, lo_r1, hi_r0, hi_r1, lo_p0, lo_p1, hi_p0, hi_p1 = ext
        n_pairs, n_groups, tid, w, jl, j, active, ax, ay, mine, stride = geo
        r_min, r_step, phi_min, phi_step = params
        # stage 1: every thread's extremes, as minima ([quantity][warp][pair])
        base = w * ROW_PAIRS + jl
        sts_f32x2(red, base, lo_r0, lo_r1)
        sts_f32x2(red, W * ROW_PAIRS + base, -hi_r0, -hi_r1)
        sts_f32x2(red, 2 * W * ROW_PAIRS + base, lo_p0, lo_p1)
        sts_f32x2(red, 3 * W * ROW_PAIRS + base, -hi_p0, -hi_p1)
        cuda.syncthreads()
        # stage 2: one thread per (radius or angle, pair) takes the range over the warps, writes
        # the group's parameters and puts the binning constants (bin_scale) in shared memory,
        # once for the block instead of once a warp (each has a division)
        for k in range(tid, 2 * ROW_PAIRS, NT):
            q = k // ROW_PAIRS                   # 0 radius, 1 angle (warp-uniform)
            jk = k % ROW_PAIRS
            lo = FINF
            nhi = FINF
            for v in range(W):
                lo = min(lo, lds_f32(red, (2 * q * W + v) * ROW_PAIRS + jk))
                nhi = min(nhi, lds_f32(red, ((2 * q + 1) * W + v) * ROW_PAIRS + jk))
            step = (-nhi - lo) * (SCALE_R if q == 0 else SCALE_T)
            k0, k1, k2 = bin_constants(lo, step, narrow)
            stg(fin, (3 * q) * ROW_PAIRS + jk, k0)          # [quantity][constant][pair]
            stg(fin, (3 * q + 1) * ROW_PAIRS + jk, k1)
            stg(fin, (3 * q + 2) * ROW_PAIRS + jk, k2)
            jg = cuda.blockIdx.y * ROW_PAIRS + jk
            if jg < n_pairs:
                o = (int64(bh) * n_groups + g) * n_pairs + jg
                if q == 0:
                    stg(r_min, o, lo)
                    stg(r_step, o, step)
                    if not (-nhi <= F32_MAX and step <= F32_MAX):
                        flags[0] = 1
                else:
                    stg(phi_min, o, lo)
                    stg(phi_step, o, step)
        cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def write_codes(fin, rv, pv, geo, bh, g, group_size, outs, narrow):
        """Codes of the thread's token-pairs, two pairs to a 2-byte store (active lanes only)."""
        n_pairs, n_groups, tid, w, jl, j, active, ax, ay, mine, stride = geo
        index, rho_out, theta_out = outs
        k0_r0, k0_r1 = lds_f32x2(fin, jl)                 # bin_constants of pairs j, j + 1
        k1_r0, k1_r1 = lds_f32x2(fin, ROW_PAIRS + jl)
        k2_r0, k2_r1 = lds_f32x2(fin, 2 * ROW_PAIRS + jl)
        k0_p0, k0_p1 = lds_f32x2(fin, 3 * ROW_PAIRS + jl)
        k1_p0, k1_p1 = lds_f32x2(fin, 4 * ROW_PAIRS + jl)
        k2_p0, k2_p1 = lds_f32x2(fin, 5 * ROW_PAIRS + jl)
        lq = n_groups * group_size
        o = (int64(bh) * lq + g * group_size + w) * n_pairs + j      # token w; then W tokens apart
        wp = W * n_pairs
        for u in range(TC):
            cr0 = bin_code_from(rv[2 * u], k0_r0, k1_r0, k2_r0, TOP_R, narrow)
            ct0 = bin_code_from(pv[2 * u], k0_p0, k1_p0, k2_p0, TOP_T, narrow)
            cr1 = bin_code_from(rv[2 * u + 1], k0_r1, k1_r1, k2_r1, TOP_R, narrow)
            ct1 = bin_code_from(pv[2 * u + 1], k0_p1, k1_p1, k2_p1, TOP_T, narrow)
            if EXACT or u <= mine:
                stg_u16(index, o, ((cr0 << TB) | ct0) | (((cr1 << TB) | ct1) << U8))
                if SPLIT:
                    stg_u16(rho_out, o, cr0 | (cr1 << U8))
                    stg_u16(theta_out, o, ct0 | (ct1 << U8))
            o += wp

    @jit
    def polar_encode_rows(keys, length, d, group_size, index, rho_out, theta_out,
                          r_min, r_step, phi_min, phi_step, flags):
        # keys (BH * L * d,) float16/32/64, contiguous; outputs as in encode_kernel
        d = D if D else d                      # a constant where the factory was given n_pairs
        geo = lane_setup(keys, length, d, group_size)
        n_pairs, n_groups, tid, w, jl, j, active, ax, ay, mine, stride = geo
        bx = uint32(cuda.blockIdx.x)
        g = bx % n_groups
        bh = bx // n_groups
        narrow = narrow_keys(keys)
        row = (int64(bh) * length + g * group_size + w) * d
        # every load first, with no branch between them: a warp then has 2 * TC loads in
        # flight, not 2 (a load behind a branch waits for the code before it)
        xa = cuda.local.array(TC, float32)
        xb = cuda.local.array(TC, float32)
        ya = cuda.local.array(TC, float32)
        yb = cuda.local.array(TC, float32)
        for u in range(TC):
            o = token_offset(row, u, mine, stride)
            xa[u], xb[u] = ldg_x2(keys, o + ax)
            ya[u], yb[u] = ldg_x2(keys, o + ay)
        rv = cuda.local.array(TC2, float32)
        pv = cuda.local.array(TC2, float32)
        ext = polar_all(xa, xb, ya, yb, rv, pv, narrow)
        red = cuda.shared.array(NREDW, float32, alignment=SHARED_ALIGN)
        fin = cuda.shared.array(NFIN, float32, alignment=SHARED_ALIGN)
        group_range(red, fin, ext, geo, bh, g, (r_min, r_step, phi_min, phi_step), flags, narrow)
        if active:
            write_codes(fin, rv, pv, geo, bh, g, group_size, (index, rho_out, theta_out), narrow)

    return polar_encode_rows


# --------------------------------------------------------------------------
# Scores: angle tables per group, then gather-multiply-add per token
# --------------------------------------------------------------------------
@lru_cache(maxsize=None)
def scores_kernel(n_pairs: int, r_bits: int, t_bits: int, heads: int, half: bool,
                  threads: int, tokens_per_thread: int, pairs_per_chunk: int, load_bytes: int,
                  max_registers: int = 0):
    """Kernel factory for table-based scoring of the quantized tokens.

    grid (n_groups * BH, M // heads), block `threads`. One block = one group
    of one KV head and `heads` (NH) of its M query heads. Per chunk of
    `pairs_per_chunk` pairs the block builds
        rad[jj]        = (2**r_bits * r_step, r_min + r_step/2 - 2**r_bits * r_step)
        tab[jj, t, m]  = qx_m cos(phi_hat_t) + qy_m sin(phi_hat_t)
    and each thread scores `tokens_per_thread` tokens (t, t + threads, ...)
    with `load_bytes`-wide index loads (16: uint32x4, 4: uint32, 1: bytes).
    The radius of code rho is fma(1 + rho / 2**r_bits, rad0, rad1): the float
    1 + rho/2**r_bits is built by OR-ing rho into the mantissa of 1.0.
    max_registers > 0 caps registers per thread (more resident warps).
    """
    P, NH, NT, TPT, PCH, VW = n_pairs, heads, threads, tokens_per_thread, pairs_per_chunk, load_bytes
    assert P % PCH == 0 and PCH % VW == 0 and NH in (1, 2, 4)
    NCHUNK = P // PCH
    NTAB = 1 << t_bits
    TB = np.uint32(t_bits)
    TMASK = np.uint32(NTAB - 1)
    RMASK = np.uint32((1 << r_bits) - 1)
    RSHIFT = np.uint32(23 - r_bits)
    RSCALE = _f32(2.0 ** r_bits)
    HALF = bool(half)
    if HALF:
        EW, NSUB = NH, 1                 # one entry = NH float16 values
    else:
        EW = 2 if NH >= 2 else 1         # one entry = 2 float32 (heads 2s, 2s+1)
        NSUB = NH // EW
    SUB = PCH * NTAB * EW                # elements per sub-table
    TABN = NSUB * SUB
    TAB_T = _nbtypes.float16 if HALF else float32
    ITEMS = PCH * NTAB                   # table entries per chunk
    N2P = 2 * PCH                        # shared-array sizes must be constants, not expressions
    NQ = 2 * NH * PCH
    jit = cuda.jit(max_registers=max_registers) if (max_registers and not SIM) else cuda.jit
    NCW = PCH // VW                      # index loads per token and chunk
    NIT_P = -(-PCH // NT)                # build loops with constant trip counts
    NIT_Q = -(-(NH * PCH) // NT)
    NIT_T = -(-ITEMS // NT)

    @cuda.jit(device=True, inline=True)
    def load_words(index, words, row0, t0, group_size, j, tid):
        """words[u, :] <- the VW index bytes from pair j on of token t0 + tid + u * NT (0 past the group)."""
        for u in range(TPT):
            t = t0 + tid + u * NT
            for w in range(4):
                words[u, w] = U0
            if t < group_size:
                o = (row0 + t) * P + j
                if VW == 16:
                    w0, w1, w2, w3 = ld_u32x4(index, o)
                    words[u, 0] = w0
                    words[u, 1] = w1
                    words[u, 2] = w2
                    words[u, 3] = w3
                elif VW == 4:
                    words[u, 0] = ld_u32(index, o)
                else:
                    words[u, 0] = uint32(index[o])

    @jit
    def polar_scores(index, r_min, r_step, phi_min, phi_step, queries, x_stride, y_offset,
               group_size, n_groups, n_heads, out, out_len, one_bits):
        # index (BH * Lq * P,) uint8; r_min.. (BH * n * P,) float32
        # queries (BH * M * d,) float32; out (BH * M * out_len,) float32
        # one_bits: uint32 0x3F800000 (1.0f), an argument so that it lives in a
        # register and (x & mask) | one_bits is a single LOP3
        tab = cuda.shared.array(TABN, TAB_T, alignment=SHARED_ALIGN)
        rad = cuda.shared.array(N2P, float32, alignment=SHARED_ALIGN)
        phs = cuda.shared.array(N2P, float32, alignment=SHARED_ALIGN)
        qst = cuda.shared.array(NQ, float32, alignment=SHARED_ALIGN)
        g = cuda.blockIdx.x % n_groups
        bh = cuda.blockIdx.x // n_groups
        hc = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        d = 2 * P
        lq = int64(n_groups) * group_size
        row0 = int64(bh) * lq + int64(g) * group_size          # first token row of the group
        pbase = (int64(bh) * n_groups + g) * P                 # params of the group
        head0 = int64(bh) * n_heads + hc * NH                  # first query head (global)
        acc = cuda.local.array((TPT, 4), float32)
        words = cuda.local.array((TPT, 4), uint32)
        nxt = cuda.local.array((TPT, 4), uint32)
        for tile in range(0, group_size, NT * TPT):
            for u in range(TPT):
                for m in range(4):
                    acc[u, m] = F0
            for ck in range(NCHUNK):
                j0 = ck * PCH
                # first index load of this chunk goes out before the table build:
                # its latency hides behind the build
                load_words(index, words, row0, tile, group_size, j0, tid)
                if tile == 0 or NCHUNK > 1:
                    if NCHUNK > 1:
                        cuda.syncthreads()                     # last chunk's readers are done
                    # stage per-pair constants and the block's queries
                    for it in range(NIT_P):
                        jj = it * NT + tid
                        if jj < PCH:
                            o = pbase + j0 + jj
                            st = ldg_f32(r_step, o)
                            rs = st * RSCALE
                            ps = ldg_f32(phi_step, o)
                            sts_f32x2(rad, 2 * jj, rs, (ldg_f32(r_min, o) + FHALF * st) - rs)
                            sts_f32x2(phs, 2 * jj, (ldg_f32(phi_min, o) + FHALF * ps) - PI32, ps)  # phi_hat(0) - pi
                    for it in range(NIT_Q):
                        e = it * NT + tid
                        if e < NH * PCH:
                            m = e % NH
                            jj = e // NH
                            qo = (head0 + m) * d + (j0 + jj) * x_stride
                            qst[(2 * jj) * NH + m] = -ldg_f32(queries, qo)        # cos(x + pi) = -cos(x)
                            qst[(2 * jj + 1) * NH + m] = -ldg_f32(queries, qo + y_offset)
                    cuda.syncthreads()
                    # angle table, one entry (pair jj, bin t) per thread and step; lanes
                    # take consecutive entries: stores conflict-free, loads broadcast
                    for it in range(NIT_T):
                        e = it * NT + tid
                        if e < ITEMS:
                            jj = e >> t_bits
                            t = e & (NTAB - 1)
                            base, ps = lds_f32x2(phs, 2 * jj)
                            x = fma(float32(t), ps, base)
                            sn = fast_sin(x)
                            cs = fast_cos(x)
                            qb = 2 * jj * NH
                            if NH == 1:
                                qx0, qy0 = lds_f32x2(qst, qb)
                                a0 = fma(qy0, sn, qx0 * cs)
                                if HALF:
                                    sts_h1(tab, e, a0)
                                else:
                                    tab[e] = a0
                            elif NH == 2:
                                qx0, qx1 = lds_f32x2(qst, qb)
                                qy0, qy1 = lds_f32x2(qst, qb + 2)
                                a0 = fma(qy0, sn, qx0 * cs)
                                a1 = fma(qy1, sn, qx1 * cs)
                                if HALF:
                                    sts_h2(tab, 2 * e, a0, a1)
                                else:
                                    sts_f32x2(tab, 2 * e, a0, a1)
                            else:
                                qx0, qx1, qx2, qx3 = lds_f32x4(qst, qb)
                                qy0, qy1, qy2, qy3 = lds_f32x4(qst, qb + 4)
                                a0 = fma(qy0, sn, qx0 * cs)
                                a1 = fma(qy1, sn, qx1 * cs)
                                a2 = fma(qy2, sn, qx2 * cs)
                                a3 = fma(qy3, sn, qx3 * cs)
                                if HALF:
                                    sts_h4(tab, 4 * e, a0, a1, a2, a3)
                                else:
                                    sts_f32x2(tab, 2 * e, a0, a1)
                                    sts_f32x2(tab, SUB + 2 * e, a2, a3)
                    cuda.syncthreads()
                # gather-multiply-add over the chunk's pairs, VW pairs per index load;
                # the next load is issued before this one's pairs are scored
                for cw in range(NCW):
                    if cw + 1 < NCW:
                        load_words(index, nxt, row0, tile, group_size, j0 + (cw + 1) * VW, tid)
                    for k in range(VW):
                        jj = cw * VW + k
                        rs, rc = lds_f32x2(rad, 2 * jj)
                        for u in range(TPT):
                            b = words[u, k // 4] >> uint32(8 * (k % 4))
                            theta = b & TMASK
                            rho = (b >> TB) & RMASK
                            r = fma(f32_bits(one_bits | (rho << RSHIFT)), rs, rc)
                            e = jj * NTAB + theta              # jj constant: an immediate offset
                            if HALF:
                                if NH == 4:
                                    a0, a1, a2, a3 = lds_h4(tab, e * 4)
                                    acc[u, 0] = fma(r, a0, acc[u, 0])
                                    acc[u, 1] = fma(r, a1, acc[u, 1])
                                    acc[u, 2] = fma(r, a2, acc[u, 2])
                                    acc[u, 3] = fma(r, a3, acc[u, 3])
                                elif NH == 2:
                                    a0, a1 = lds_h2(tab, e * 2)
                                    acc[u, 0] = fma(r, a0, acc[u, 0])
                                    acc[u, 1] = fma(r, a1, acc[u, 1])
                                else:
                                    acc[u, 0] = fma(r, lds_h1(tab, e), acc[u, 0])
                            else:
                                if NH == 1:
                                    acc[u, 0] = fma(r, lds_f32(tab, e), acc[u, 0])
                                else:
                                    a0, a1 = lds_f32x2(tab, e * 2)
                                    acc[u, 0] = fma(r, a0, acc[u, 0])
                                    acc[u, 1] = fma(r, a1, acc[u, 1])
                                    if NH == 4:
                                        a2, a3 = lds_f32x2(tab, SUB + e * 2)
                                        acc[u, 2] = fma(r, a2, acc[u, 2])
                                        acc[u, 3] = fma(r, a3, acc[u, 3])
                    for u in range(TPT):
                        for w in range(4):
                            words[u, w] = nxt[u, w]
            for u in range(TPT):
                t = tile + tid + u * NT
                if t < group_size:
                    for m in range(NH):
                        out[(head0 + m) * out_len + int64(g) * group_size + t] = acc[u, m]

    return polar_scores


@lru_cache(maxsize=None)
def residual_scores_kernel():
    """Plain float32 dot products for the residual tokens.

    grid-stride over (BH * M * R) outputs; out[(bh*M + m) * out_len + lq + t].
    """

    @cuda.jit
    def residual_scores(queries, residual, n_heads, lq, out, out_len):
        # queries (BH * M * d,) float32; residual (BH, R, d) any float dtype
        bhs, n_res, d = residual.shape
        total = bhs * n_heads * n_res
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, total, stride):
            t = i % n_res
            hm = i // n_res                      # bh * M + m
            bh = hm // n_heads
            qo = hm * d
            s = F0
            for c in range(d):
                s = fma(queries[qo + c], float32(residual[bh, t, c]), s)
            out[hm * out_len + lq + t] = s

    return residual_scores


# --------------------------------------------------------------------------
# Decode, packing and small utilities
# --------------------------------------------------------------------------
@lru_cache(maxsize=None)
def decode_kernel(t_bits: int):
    """k_hat of every quantized token: grid-stride over (BH * Lq * P) pairs.

    out (BH, L, d) float32; pair j goes to columns j * x_stride and + y_offset.
    Accurate (libdevice) sin/cos: decode is not the hot path.
    """
    TB = np.uint32(t_bits)
    TMASK = np.uint32((1 << t_bits) - 1)

    @cuda.jit
    def polar_decode(index, r_min, r_step, phi_min, phi_step, group_size, n_groups, x_stride, y_offset, out):
        bhs, length, d = out.shape
        n_pairs = d // 2
        lq = n_groups * group_size
        total = bhs * lq * n_pairs
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, total, stride):
            j = i % n_pairs
            row = i // n_pairs                    # bh * Lq + token
            tok = row % lq
            bh = row // lq
            po = (bh * n_groups + tok // group_size) * n_pairs + j
            b = uint32(index[i])
            rho = float32(b >> TB)
            theta = float32(b & TMASK)
            r = r_min[po] + (rho + FHALF) * r_step[po]
            p = phi_min[po] + (theta + FHALF) * phi_step[po]
            out[bh, tok, j * x_stride] = r * math.cos(p)
            out[bh, tok, j * x_stride + y_offset] = r * math.sin(p)

    return polar_decode


@lru_cache(maxsize=None)
def pack_kernel(t_bits: int):
    """index = (rho << t_bits) | theta over flat arrays (for codes made elsewhere)."""
    TB = np.uint32(t_bits)

    @cuda.jit
    def pack_index(rho, theta, index):
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, index.shape[0], stride):
            index[i] = uint8((uint32(rho[i]) << TB) | uint32(theta[i]))

    return pack_index


@cuda.jit(device=True, inline=True)
def unravel3(i, b_n, c_n):
    """(a, b, c) of flat index i in a C-ordered (A, B, C) array."""
    ab = i // c_n
    return ab // b_n, ab % b_n, i % c_n


@lru_cache(maxsize=None)
def copy3d_kernel():
    """out (A, B, C) contiguous, any dtype <- src (A, B, C) any strides, cast to out's dtype."""

    @cuda.jit
    def copy3d(src, out):
        a_n, b_n, c_n = src.shape
        total = a_n * b_n * c_n
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, total, stride):
            a, b, c = unravel3(i, b_n, c_n)
            out[a, b, c] = src[a, b, c]

    return copy3d


@lru_cache(maxsize=None)
def nonfinite_kernel():
    """counts[0] += NaN/Inf values, counts[1] += finite values beyond float32 range."""

    @cuda.jit
    def count_nonfinite(src, counts):
        a_n, b_n, c_n = src.shape
        total = a_n * b_n * c_n
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        bad = 0
        big = 0
        for i in range(start, total, stride):
            a, b, c = unravel3(i, b_n, c_n)
            v = src[a, b, c]
            if not math.isfinite(v):
                bad += 1
            elif abs(v) > F32_MAX:
                big += 1
        if bad:
            cuda.atomic.add(counts, 0, bad)
        if big:
            cuda.atomic.add(counts, 1, big)

    return count_nonfinite
