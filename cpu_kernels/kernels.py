"""Numba CPU kernels for PolarQuant paper mode: encode, decode, table scoring.

Kernels take plain C-contiguous arrays with every leading axis of the keys
flattened into one head axis H (1 for keys (L, d)); the launchers in
`cpu_kernels/__init__.py` validate, reshape and allocate. Shapes: H heads,
L tokens, P = d // 2 pairs, G group size, n = L // G groups, Lq = n * G,
M query heads per KV head, B_r = 2**r_bits, B_t = 2**t_bits.

Versions (times on workload W-CPU in benchmarks/NOTES-cpu.md):

    encode_kernel1  one (head, group) per prange iteration; the polar form in
                    float64 with atan2 and hypot written here without libm
                    calls or Python-semantics division checks, so the pair loop
                    vectorises; min/max, steps, wrap and codes in float64 like
                    golden (codes multiply by 1 / step where golden divides).
    scores_kernel1  the plain table formulation: per (head, group) float32
                    tables R (P, B_r) and A (P, B_t, M); per token a gather,
                    multiply and add over the pairs into M accumulators.
    scores_kernel2  query heads in blocks of 4 (zero-padded) sharing each code
                    read; A laid out (block, P, B_t, 4); 4 partial sums per head
                    (pairs j mod 4). Numba keeps LLVM's SLP vectoriser off, so
                    the 4 heads stay 4 scalar FMAs.
    scores_kernel3  kernel2 with explicit <4 x float> vectors (intrinsics
                    below): per pair one broadcast radius, one 16-byte A load,
                    one vector FMA; fixed table strides for codes of <= 4 bits.
    scores_kernel4  AVX-512, codes of <= 4 bits: 16 tokens per vector. The
                    (16 tokens, P) code bytes are transposed in registers to
                    (P, 16); each 16-entry table sits in one register, so a
                    lookup is one vpermps; per pair 2 zero-extends, 5 vpermps
                    (radius + 4 heads) and 4 FMAs serve 16 tokens x 4 heads.
    decode_kernel1  per (head, group) float64 tables r_hat (P, B_r) and
                    cos/sin(phi_hat) (P, B_t), then a gather per token.

Float semantics. Encode follows golden in float64: our atan2 and sincos are
within a few float64 ulps of libm, hypot is sqrt(x*x + y*y) (rescaled for a
row with values outside [1e-150, 1e150], where the squares could under- or
overflow). The scoring tables and sums are float32 (the backend's working
precision), built from float64 angles. Encode and scoring allow FMA
contraction (fastmath `contract`), nothing else; decode none. Codes read
from a PolarCode are masked to their bit width (kernel4: the low 4 bits,
which vpermps uses) before they index a table, so a corrupt code cannot read
outside it: it gets some bin's value where golden raises IndexError.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.extending import intrinsic, register_model

TWO_PI = 2.0 * math.pi
QUARTER_PI = 0.25 * math.pi
TAN_PI_8 = math.sqrt(2.0) - 1.0
# pi/2 in three parts (fdlibm's pio2_1, pio2_2, pio2_3): the first two have
# 33 significant bits, so k * part is exact for |k| < 2**20; the sum is
# pi/2 to 8e-32.
PIO2_1 = 1.57079632673412561417e+00
PIO2_2 = 6.07710050630396597660e-11
PIO2_3 = 2.02226624871116645580e-21
INV_PIO2 = 2.0 / math.pi
SINCOS_MAX = 1.0e6          # |angle| up to which _sincos is accurate (|k| << 2**20)
HYPOT_SAFE_LO, HYPOT_SAFE_HI = 1e-150, 1e150
HALF = 0                    # pairing code: 0 half-split, 1 interleaved
BLOCK = 4                   # query heads per A-table block in scores_kernel2

# atan(u) = u + u * z * P(z), z = u**2 <= tan(pi/8)**2: P from a least-squares fit
# (numpy.polynomial.chebyshev.chebfit, degree 10, 4000 Chebyshev nodes) of
# (atan(u)/u - 1)/z, converted to powers of z. Near Taylor (-1/3, 1/5, -1/7, ...).
ATAN_P = (-0.33333333333333354, 0.199999999999802, -0.14285714282047332, 0.11111110850511613,
          -0.09090899160644503, 0.07692077714463662, -0.06663231200389137, 0.05848359224074989,
          -0.05039609488915891, 0.03803137178418923, -0.017830929970278332)
# Taylor coefficients: sin r = sum (-1)^k r^(2k+1) / (2k+1)!, k = 0..8;
# cos r = sum (-1)^k r^2k / (2k)!, k = 0..9 (|r| <= pi/4: truncation below 1e-19).
SN = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))
CS = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))


# --------------------------------------------------------------------------
# Explicit short vectors. Numba leaves LLVM's SLP vectoriser off, so four
# scalar FMAs on neighbouring floats stay four scalar FMAs; these intrinsics
# say <4 x float> outright. The loads are unchecked (no bounds, no negative
# wrap-around): callers index with masked codes inside tables they sized.
# --------------------------------------------------------------------------
F4 = ir.VectorType(ir.FloatType(), 4)
D4 = ir.VectorType(ir.DoubleType(), 4)


def _vector_type(name, llvm_type):
    """A Numba type for one LLVM vector value (kept in a register, passed by value)."""
    class VectorType(types.Type):
        def __init__(self):
            super().__init__(name=name)

    @register_model(VectorType)
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, llvm_type)

    return VectorType()


float32x4 = _vector_type("float32x4", F4)
float64x4 = _vector_type("float64x4", D4)


def _element_ptr(context, builder, arrty, arr, idx):
    """Pointer to arr.data[idx] of a C-contiguous array, no checks."""
    return builder.gep(context.make_array(arrty)(context, builder, arr).data, [idx])


def _make_vector_load(nbtype, vty, align):
    """Intrinsic: arr[idx : idx + n] of a contiguous array as one vector value of `nbtype`."""
    @intrinsic
    def load(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            ptr = _element_ptr(context, builder, sig.args[0], *args)
            return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=align)
        return nbtype(arr, idx), codegen
    return load


def _load_rows(context, builder, arrty, arr, offset, stride, vty, align):
    """16 vectors: arr[offset + i * stride : ... + n] for rows i < 16."""
    base = _element_ptr(context, builder, arrty, arr, offset)
    return [builder.load(builder.bitcast(builder.gep(base, [builder.mul(stride, ir.Constant(stride.type, i))]),
                                         vty.as_pointer()), align=align) for i in range(16)]


def _store_rows(context, builder, arrty, arr, offset, rows, step, vty, align):
    """arr[offset + k * step : ... + n] = rows[k] for every row k."""
    base = _element_ptr(context, builder, arrty, arr, offset)
    for k, row in enumerate(rows):
        at = builder.gep(base, [ir.Constant(ir.IntType(64), k * step)])
        builder.store(row, builder.bitcast(at, vty.as_pointer()), align=align)


def _perfect_shuffle16(builder, rows, lo, hi):
    """Transpose 16 rows of 16 lanes: four rounds of interleaving row k with row k + 8."""
    for _ in range(4):
        new = []
        for k in range(8):
            new.append(builder.shuffle_vector(rows[k], rows[k + 8], lo))
            new.append(builder.shuffle_vector(rows[k], rows[k + 8], hi))
        rows = new
    return rows


def _splat(builder, vty, x):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), vty.count),
                                                    [0] * vty.count))


@intrinsic
def _f4_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(F4, [0.0] * 4)
    return float32x4(), codegen


_f4_load = _make_vector_load(float32x4, F4, 4)        # 4 float32
_d4_load = _make_vector_load(float64x4, D4, 8)        # 4 float64


@intrinsic
def _load(typingctx, arr, idx):
    """arr[idx] of a contiguous array, unchecked."""
    def codegen(context, builder, sig, args):
        return builder.load(_element_ptr(context, builder, sig.args[0], *args))
    return arr.dtype(arr, idx), codegen


@intrinsic
def _f4_fma(typingctx, acc, r, v):
    """acc + r * v (one fused multiply-add), r a float32 scalar on every lane."""
    def codegen(context, builder, sig, args):
        acc, r, v = args
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F4, [F4, F4, F4]),
                                             "llvm.fma.v4f32")
        return builder.call(fma, [_splat(builder, F4, r), v, acc])
    return float32x4(float32x4, types.float32, float32x4), codegen


@intrinsic
def _f4_add(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(*args)
    return float32x4(float32x4, float32x4), codegen


@intrinsic
def _f4_get(typingctx, v, k):
    def codegen(context, builder, sig, args):
        return builder.extract_element(*args)
    return types.float32(float32x4, types.intp), codegen


@intrinsic
def _d4_rotate_store(typingctx, arr, idx, x, c, y, s):
    """arr[idx : idx + 4] = float32(x * c + y * s): x, y float64 vectors, c, s scalars."""
    def codegen(context, builder, sig, args):
        arr, idx, x, c, y, s = args
        value = builder.fadd(builder.fmul(x, _splat(builder, D4, c)), builder.fmul(y, _splat(builder, D4, s)))
        ptr = _element_ptr(context, builder, sig.args[0], arr, idx)
        builder.store(builder.fptrunc(value, F4), builder.bitcast(ptr, F4.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, float64x4, types.float64, float64x4, types.float64), codegen


# --------------------------------------------------------------------------
# AVX-512: 16-lane vectors, byte and float transposes, register table lookup
# (scores_kernel4 only; the launcher calls it where the host has AVX-512)
# --------------------------------------------------------------------------
F16 = ir.VectorType(ir.FloatType(), 16)
I16 = ir.VectorType(ir.IntType(32), 16)
BYTES16 = ir.VectorType(ir.IntType(8), 16)


float32x16 = _vector_type("float32x16", F16)
int32x16 = _vector_type("int32x16", I16)


def _interleave_masks(n, unit=1, lane=None):
    """shufflevector masks interleaving a and b (n elements each) in units of `unit`.

    lane=None: over the whole vector (lo = first halves, hi = second halves);
    lane=16: within each 16-element lane, like x86 unpacklo/unpackhi.
    """
    lane = lane or n
    lo, hi = [], []
    for base in range(0, n, lane):
        half = lane // unit // 2
        for k in range(half):
            for src in (0, n):
                lo += [src + base + k * unit + e for e in range(unit)]
                hi += [src + base + (half + k) * unit + e for e in range(unit)]
    return lo, hi


def _make_byte_transpose(width):
    """Intrinsic: 16 rows of `width` bytes -> per pair, its 16 bytes (one per row) side by side.

    Reads src[offset + i * stride + c] for rows i < 16, columns c < width;
    writes dst[dst_offset + (c % 16) * width + (c // 16) * 16 + i]. Four
    rounds of unpack (bytes, words, dwords, qwords) within 16-byte lanes.
    """
    vty = ir.VectorType(ir.IntType(8), width)
    rounds = [_interleave_masks(width, unit, 16) for unit in (1, 2, 4, 8)]

    @intrinsic
    def transpose(typingctx, src, offset, stride, dst, dst_offset):
        def codegen(context, builder, sig, args):
            src, offset, stride, dst, dst_offset = args
            regs = _load_rows(context, builder, sig.args[0], src, offset, stride, vty, 1)
            for r, (lo, hi) in enumerate(rounds):
                dist = 1 << r
                lo = ir.Constant(ir.VectorType(ir.IntType(32), width), lo)
                hi = ir.Constant(ir.VectorType(ir.IntType(32), width), hi)
                new = []
                for block in range(0, 16, 2 * dist):
                    for k in range(block, block + dist):
                        new.append(builder.shuffle_vector(regs[k], regs[k + dist], lo))
                        new.append(builder.shuffle_vector(regs[k], regs[k + dist], hi))
                regs = new
            _store_rows(context, builder, sig.args[3], dst, dst_offset, regs, width, vty, 1)
            return context.get_dummy_value()
        return types.none(src, offset, stride, dst, dst_offset), codegen
    return transpose


_transpose_bytes64 = _make_byte_transpose(64)
_transpose_bytes16 = _make_byte_transpose(16)


@intrinsic
def _transpose_f16x16(typingctx, src, offset, stride, dst, dst_offset):
    """dst[dst_offset + k * 16 + i] = src[offset + i * stride + k] for i, k < 16 (float32).

    Four rounds of a perfect shuffle (interleave register k with k + 8).
    """
    lo, hi = _interleave_masks(16)
    lo = ir.Constant(ir.VectorType(ir.IntType(32), 16), lo)
    hi = ir.Constant(ir.VectorType(ir.IntType(32), 16), hi)

    def codegen(context, builder, sig, args):
        src, offset, stride, dst, dst_offset = args
        regs = _load_rows(context, builder, sig.args[0], src, offset, stride, F16, 4)
        regs = _perfect_shuffle16(builder, regs, lo, hi)
        _store_rows(context, builder, sig.args[3], dst, dst_offset, regs, 16, F16, 4)
        return context.get_dummy_value()
    return types.none(src, offset, stride, dst, dst_offset), codegen


@intrinsic
def _i16_from_bytes(typingctx, arr, idx):
    """arr[idx : idx + 16] uint8 -> 16 int32 lanes."""
    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], *args)
        return builder.zext(builder.load(builder.bitcast(ptr, BYTES16.as_pointer()), align=1), I16)
    return int32x16(arr, idx), codegen


@intrinsic
def _f16_lookup(typingctx, tab, idx, lanes):
    """Per lane tab[idx + (lane & 15)]: the 16-entry table sits in one register (vpermps)."""
    def codegen(context, builder, sig, args):
        tab, idx, lanes = args
        ptr = _element_ptr(context, builder, sig.args[0], tab, idx)
        table = builder.load(builder.bitcast(ptr, F16.as_pointer()), align=4)
        permute = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F16, [F16, I16]),
                                                 "llvm.x86.avx512.permvar.sf.512")
        return builder.call(permute, [table, lanes])
    return float32x16(tab, idx, int32x16), codegen


_f16_load = _make_vector_load(float32x16, F16, 4)    # 16 float32


@intrinsic
def _f16_rotate_store(typingctx, arr, idx, x, c, y, s):
    """arr[idx : idx + 16] = x * c + y * s: x, y float32 scalars, c, s vectors."""
    def codegen(context, builder, sig, args):
        arr, idx, x, c, y, s = args
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F16, [F16] * 3),
                                             "llvm.fma.v16f32")
        value = builder.call(fma, [_splat(builder, F16, y), s, builder.fmul(_splat(builder, F16, x), c)])
        ptr = _element_ptr(context, builder, sig.args[0], arr, idx)
        builder.store(value, builder.bitcast(ptr, F16.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, types.float32, float32x16, types.float32, float32x16), codegen


@intrinsic
def _f16_bin_centres_store(typingctx, arr, idx, lo, step):
    """arr[idx : idx + 16] = float32(lo + (s + 0.5) * step) for s < 16, in float64."""
    def codegen(context, builder, sig, args):
        arr, idx, lo, step = args
        d16 = ir.VectorType(ir.DoubleType(), 16)
        centre = ir.Constant(d16, [s + 0.5 for s in range(16)])
        value = builder.fadd(_splat(builder, d16, lo), builder.fmul(centre, _splat(builder, d16, step)))
        ptr = _element_ptr(context, builder, sig.args[0], arr, idx)
        builder.store(builder.fptrunc(value, F16), builder.bitcast(ptr, F16.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, types.float64, types.float64), codegen


@intrinsic
def _rotation_rows(typingctx, cos_c, sin_c, cos_d, sin_d, j0, cos_out, sin_out):
    """Bin-centre cos/sin for 16 pairs j0 .. j0 + 15 and bins t < 16, pair-major float32.

    (cos_c, sin_c)[j] is bin 0 and (cos_d, sin_d)[j] the rotation by one
    step (float64 arrays); bin t + 1 = bin t rotated, in float64 registers.
    Writes cos_out[16 * j + t] and sin_out[16 * j + t] (float32) for the 16
    pairs: the 16 rows (one per bin) are transposed in registers.
    """
    lo, hi = _interleave_masks(16)
    lo = ir.Constant(ir.VectorType(ir.IntType(32), 16), lo)
    hi = ir.Constant(ir.VectorType(ir.IntType(32), 16), hi)
    d16 = ir.VectorType(ir.DoubleType(), 16)

    def codegen(context, builder, sig, args):
        cos_c, sin_c, cos_d, sin_d, j0, cos_out, sin_out = args
        load = [builder.load(builder.bitcast(_element_ptr(context, builder, sig.args[k], args[k], j0),
                                             d16.as_pointer()), align=8) for k in range(4)]
        c, s, cd, sd = load
        rows_c, rows_s = [], []
        for _ in range(16):
            rows_c.append(builder.fptrunc(c, F16))
            rows_s.append(builder.fptrunc(s, F16))
            c, s = (builder.fsub(builder.fmul(c, cd), builder.fmul(s, sd)),
                    builder.fadd(builder.fmul(s, cd), builder.fmul(c, sd)))
        for rows, arr, k in ((rows_c, cos_out, 5), (rows_s, sin_out, 6)):
            rows = _perfect_shuffle16(builder, rows, lo, hi)
            _store_rows(context, builder, sig.args[k], arr, builder.mul(j0, ir.Constant(j0.type, 16)),
                        rows, 16, F16, 4)
        return context.get_dummy_value()
    return types.none(cos_c, sin_c, cos_d, sin_d, j0, cos_out, sin_out), codegen


@intrinsic
def _f16_zero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(F16, [0.0] * 16)
    return float32x16(), codegen


@intrinsic
def _f16_fma(typingctx, acc, a, b):
    """acc + a * b, fused, 16 lanes."""
    def codegen(context, builder, sig, args):
        acc, a, b = args
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F16, [F16] * 3),
                                             "llvm.fma.v16f32")
        return builder.call(fma, [a, b, acc])
    return float32x16(float32x16, float32x16, float32x16), codegen


@intrinsic
def _f16_store_f64(typingctx, arr, idx, v):
    """arr[idx : idx + 16] = float64(v) for a contiguous float64 array."""
    def codegen(context, builder, sig, args):
        arr, idx, v = args
        d16 = ir.VectorType(ir.DoubleType(), 16)
        ptr = _element_ptr(context, builder, sig.args[0], arr, idx)
        builder.store(builder.fpext(v, d16), builder.bitcast(ptr, d16.as_pointer()), align=8)
        return context.get_dummy_value()
    return types.none(arr, idx, float32x16), codegen


# --------------------------------------------------------------------------
# Scalar float64 math without libm calls, so the loops around it vectorise
# --------------------------------------------------------------------------
@njit(inline="always", cache=True, error_model="numpy")
def _atan_reduced(u):
    """atan(u) for |u| <= tan(pi/8) = 0.4142: u + u * z * P(z), z = u * u.

    P (degree 10, coefficients ATAN_P) is a least-squares Chebyshev fit of
    (atan(u) / u - 1) / z on [0, tan(pi/8)**2]; the result is within one
    float64 ulp of atan on the whole interval (checked on 2e5 points).
    """
    z = u * u
    p = ATAN_P[10]
    p = ATAN_P[9] + z * p
    p = ATAN_P[8] + z * p
    p = ATAN_P[7] + z * p
    p = ATAN_P[6] + z * p
    p = ATAN_P[5] + z * p
    p = ATAN_P[4] + z * p
    p = ATAN_P[3] + z * p
    p = ATAN_P[2] + z * p
    p = ATAN_P[1] + z * p
    p = ATAN_P[0] + z * p
    return u + u * (z * p)


@njit(inline="always", cache=True, error_model="numpy")
def _angle(x, y, ax, ay, big, small):
    """atan2(y, x) wrapped into [0, 2*pi) exactly as golden.to_polar does.

    ax, ay = |x|, |y|; big, small their max and min. atan(small / big) in
    [0, pi/4]: above tan(pi/8) as pi/4 + atan((small - big) / (small + big)),
    one division either way. Then the octant from the magnitudes and the
    signs (signed zeros too: atan2(+-0, -0) = +-pi, atan2(-0, +0) = -0 -> 0).
    """
    upper = small > TAN_PI_8 * big
    num = small - big if upper else small
    den = small + big if upper else big
    u = num / den if big > 0.0 else 0.0
    t = _atan_reduced(u)
    t = t + QUARTER_PI if upper else t
    t = (2.0 * QUARTER_PI - t) if ay > ax else t
    t = (4.0 * QUARTER_PI - t) if math.copysign(1.0, x) < 0.0 else t
    t = -t if math.copysign(1.0, y) < 0.0 else t
    phi = t + 0.0                          # -0.0 -> 0.0
    phi = phi + TWO_PI if phi < 0.0 else phi
    return 0.0 if phi >= TWO_PI else phi   # -tiny + 2*pi can round to 2*pi


@njit(inline="always", cache=True, error_model="numpy")
def _polar(x, y):
    """(x, y) float64 -> (r, phi): r = hypot, phi in [0, 2*pi) as golden.to_polar.

    The radius is sqrt(x*x + y*y) where that cannot under- or overflow,
    else big * sqrt(1 + (small / big)**2).
    """
    ax, ay = abs(x), abs(y)
    big = max(ax, ay)
    small = min(ax, ay)
    ratio = small / big if big > 0.0 else 0.0
    plain = math.sqrt(x * x + y * y)
    scaled = big * math.sqrt(1.0 + ratio * ratio)
    r = plain if (big > HYPOT_SAFE_LO and big < HYPOT_SAFE_HI) else scaled
    return r, _angle(x, y, ax, ay, big, small)


@njit(inline="always", cache=True, error_model="numpy")
def _polar_plain(x, y):
    """_polar for pairs known to lie in the safe range (or be (0, 0)): no rescaling."""
    ax, ay = abs(x), abs(y)
    return math.sqrt(x * x + y * y), _angle(x, y, ax, ay, max(ax, ay), min(ax, ay))


@njit(inline="always", cache=True, error_model="numpy")
def _sincos(x):
    """(sin x, cos x) for |x| <= SINCOS_MAX, a few float64 ulps off.

    x = k * pi/2 + r with |r| <= pi/4 (Cody-Waite, pi/2 in three parts),
    Taylor series for sin r (to r**17) and cos r (to r**18), then the
    quadrant k mod 4 swaps and negates.
    """
    k = math.floor(x * INV_PIO2 + 0.5)
    r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_3
    z = r * r
    s = SN[8]
    s = SN[7] + z * s
    s = SN[6] + z * s
    s = SN[5] + z * s
    s = SN[4] + z * s
    s = SN[3] + z * s
    s = SN[2] + z * s
    s = SN[1] + z * s
    s = r + r * (z * s)
    c = CS[9]
    c = CS[8] + z * c
    c = CS[7] + z * c
    c = CS[6] + z * c
    c = CS[5] + z * c
    c = CS[4] + z * c
    c = CS[3] + z * c
    c = CS[2] + z * c
    c = CS[1] + z * c
    c = 1.0 + z * c
    q = np.int64(k) & 3
    sa = c if q & 1 else s
    ca = s if q & 1 else c
    sin = -sa if q & 2 else sa
    cos = -ca if (q + 1) & 2 else ca
    return sin, cos


# --------------------------------------------------------------------------
# Encode
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
def encode_kernel1(keys, group_size, r_bits, t_bits, pairing, all_safe,
                   rho, theta, r_min, r_step, phi_min, phi_step, overflow):
    """keys (H, L, d) float32/64 -> codes and parameters, written in place.

    all_safe: every nonzero |key| is known to lie in (1e-150, 1e150), true of
    any float32 keys, so x*x + y*y needs no rescaling.
    rho, theta (H, Lq, P) uint8; r_min, r_step, phi_min, phi_step (H, n, P)
    float64; overflow (H * n,) bool, set where a radius overflowed float64.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    r_bins, t_bins = 2.0 ** r_bits, 2.0 ** t_bits
    r_top, t_top = (1 << r_bits) - 1, (1 << t_bits) - 1
    for hg in prange(n_heads * n_groups):
        h = hg // n_groups
        g = hg - h * n_groups
        r_buf = np.empty((group_size, n_pairs))      # (G, P) radius of each token and pair
        p_buf = np.empty((group_size, n_pairs))      # (G, P) angle
        # polar form; the two pairings get their own loop so both vectorise,
        # and rows whose values all lie in the safe range skip hypot's rescaling
        for i in range(group_size):
            row = keys[h, g * group_size + i]
            rr = r_buf[i]
            pp = p_buf[i]
            safe = all_safe
            if not all_safe:
                for k in range(row.shape[0]):
                    v = abs(np.float64(row[k]))
                    safe &= (v > HYPOT_SAFE_LO or v == 0.0) and v < HYPOT_SAFE_HI
            if pairing == HALF and safe:
                for j in range(n_pairs):
                    rr[j], pp[j] = _polar_plain(np.float64(row[j]), np.float64(row[j + n_pairs]))
            elif pairing == HALF:
                for j in range(n_pairs):
                    rr[j], pp[j] = _polar(np.float64(row[j]), np.float64(row[j + n_pairs]))
            elif safe:
                for j in range(n_pairs):
                    rr[j], pp[j] = _polar_plain(np.float64(row[2 * j]), np.float64(row[2 * j + 1]))
            else:
                for j in range(n_pairs):
                    rr[j], pp[j] = _polar(np.float64(row[2 * j]), np.float64(row[2 * j + 1]))
        # range of each pair over the group
        r_lo = r_buf[0].copy()
        r_hi = r_buf[0].copy()
        p_lo = p_buf[0].copy()
        p_hi = p_buf[0].copy()
        for i in range(1, group_size):
            rr = r_buf[i]
            pp = p_buf[i]
            for j in range(n_pairs):
                r_lo[j] = min(r_lo[j], rr[j])
                r_hi[j] = max(r_hi[j], rr[j])
                p_lo[j] = min(p_lo[j], pp[j])
                p_hi[j] = max(p_hi[j], pp[j])
        rs = r_step[h, g]
        ps = phi_step[h, g]
        for j in range(n_pairs):
            if r_hi[j] == np.inf:
                overflow[hg] = True
            rs[j] = (r_hi[j] - r_lo[j]) / r_bins
            ps[j] = (p_hi[j] - p_lo[j]) / t_bins
            r_min[h, g, j] = r_lo[j]
            phi_min[h, g, j] = p_lo[j]
        # codes = clip(floor((v - lo) / step), 0, B - 1); step 0 -> code 0. Times
        # 1 / step instead of a division: the two differ by an ulp of u, so
        # only where u is within an ulp of a bin edge (inside the tolerance band)
        # (1 / step overflows for a subnormal step: such a group divides, as golden)
        r_inv = np.where(rs > 0.0, 1.0 / np.where(rs > 0.0, rs, 1.0), 0.0)
        p_inv = np.where(ps > 0.0, 1.0 / np.where(ps > 0.0, ps, 1.0), 0.0)
        finite = np.isfinite(r_inv).all() and np.isfinite(p_inv).all()
        for i in range(group_size):
            tok = g * group_size + i
            rr = r_buf[i]
            pp = p_buf[i]
            rc = rho[h, tok]
            tc = theta[h, tok]
            if finite:
                for j in range(n_pairs):
                    rc[j] = np.uint8(min(math.floor((rr[j] - r_lo[j]) * r_inv[j]), r_top))
                    tc[j] = np.uint8(min(math.floor((pp[j] - p_lo[j]) * p_inv[j]), t_top))
            else:
                for j in range(n_pairs):
                    u = (rr[j] - r_lo[j]) / (rs[j] if rs[j] > 0.0 else 1.0)
                    rc[j] = np.uint8(min(math.floor(u), r_top if rs[j] > 0.0 else 0))
                    u = (pp[j] - p_lo[j]) / (ps[j] if ps[j] > 0.0 else 1.0)
                    tc[j] = np.uint8(min(math.floor(u), t_top if ps[j] > 0.0 else 0))


# --------------------------------------------------------------------------
# Tables shared by scoring and decoding
# --------------------------------------------------------------------------
@njit(inline="always", cache=True, error_model="numpy")
def _unit_table(lo, step, cos_t, sin_t):
    """cos/sin of phi_hat = lo + (t + 0.5) * step for t < len(cos_t), float64."""
    for t in range(cos_t.shape[0]):
        s, c = _sincos(lo + (t + 0.5) * step)
        cos_t[t] = c
        sin_t[t] = s


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
def scores_kernel1(rho, theta, r_min, r_step, phi_min, phi_step, r_bits, t_bits, qx, qy, out):
    """Table scores of the quantized tokens, written into out[:, :, :Lq].

    rho, theta (H, Lq, P) uint8; r_min, r_step, phi_min, phi_step (H, n, P)
    float64; qx, qy (H, M, P) float64 (the pairs of each query head, by KV
    head); out (H, M, L) float64.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    heads = qx.shape[1]
    group_size = rho.shape[1] // max(n_groups, 1)
    r_bins, t_bins = 1 << r_bits, 1 << t_bits
    for hg in prange(n_heads * n_groups):
        h = hg // n_groups
        g = hg - h * n_groups
        tab_r = np.empty((n_pairs, r_bins), np.float32)
        tab_a = np.empty((n_pairs, t_bins, heads), np.float32)
        cos_t = np.empty(t_bins)
        sin_t = np.empty(t_bins)
        for j in range(n_pairs):
            for s in range(r_bins):
                tab_r[j, s] = r_min[h, g, j] + (s + 0.5) * r_step[h, g, j]
            _unit_table(phi_min[h, g, j], phi_step[h, g, j], cos_t, sin_t)
            for t in range(t_bins):
                for m in range(heads):
                    tab_a[j, t, m] = qx[h, m, j] * cos_t[t] + qy[h, m, j] * sin_t[t]
        acc = np.empty(heads, np.float32)
        for i in range(group_size):
            tok = g * group_size + i
            acc[:] = 0.0
            for j in range(n_pairs):
                r = tab_r[j, rho[h, tok, j] & (r_bins - 1)]
                t = theta[h, tok, j] & (t_bins - 1)
                for m in range(heads):
                    acc[m] += r * tab_a[j, t, m]
            for m in range(heads):
                out[h, m, tok] = acc[m]


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
def scores_kernel2(rho, theta, r_min, r_step, phi_min, phi_step, r_bits, t_bits, qx, qy, out):
    """As scores_kernel1; qx, qy (H, 4 * blocks, P) zero-padded to whole blocks of 4 heads.

    out (H, M, L) float64 with M <= 4 * blocks: padded heads are not written.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    heads = out.shape[1]
    blocks = qx.shape[1] // BLOCK
    group_size = rho.shape[1] // max(n_groups, 1)
    r_bins, t_bins = 1 << r_bits, 1 << t_bits
    r_mask, t_mask = r_bins - 1, t_bins - 1
    quads = n_pairs // 4
    zero = np.float32(0.0)
    for hg in prange(n_heads * n_groups):
        h = hg // n_groups
        g = hg - h * n_groups
        tab_r = np.empty((n_pairs, r_bins), np.float32)
        tab_a = np.empty((blocks, n_pairs, t_bins, BLOCK), np.float32)
        cos_t = np.empty(t_bins)
        sin_t = np.empty(t_bins)
        for j in range(n_pairs):
            for s in range(r_bins):
                tab_r[j, s] = r_min[h, g, j] + (s + 0.5) * r_step[h, g, j]
            _unit_table(phi_min[h, g, j], phi_step[h, g, j], cos_t, sin_t)
            for b in range(blocks):
                for t in range(t_bins):
                    for m in range(BLOCK):
                        hm = b * BLOCK + m
                        tab_a[b, j, t, m] = qx[h, hm, j] * cos_t[t] + qy[h, hm, j] * sin_t[t]
        for i in range(group_size):
            tok = g * group_size + i
            rrow = rho[h, tok]
            trow = theta[h, tok]
            for b in range(blocks):
                ta = tab_a[b]
                # 4 heads x 4 partial sums (pairs j mod 4)
                a00 = a01 = a02 = a03 = zero
                a10 = a11 = a12 = a13 = zero
                a20 = a21 = a22 = a23 = zero
                a30 = a31 = a32 = a33 = zero
                for qd in range(quads):
                    j = 4 * qd
                    r = tab_r[j, rrow[j] & r_mask]
                    t = trow[j] & t_mask
                    a00 += r * ta[j, t, 0]
                    a01 += r * ta[j, t, 1]
                    a02 += r * ta[j, t, 2]
                    a03 += r * ta[j, t, 3]
                    r = tab_r[j + 1, rrow[j + 1] & r_mask]
                    t = trow[j + 1] & t_mask
                    a10 += r * ta[j + 1, t, 0]
                    a11 += r * ta[j + 1, t, 1]
                    a12 += r * ta[j + 1, t, 2]
                    a13 += r * ta[j + 1, t, 3]
                    r = tab_r[j + 2, rrow[j + 2] & r_mask]
                    t = trow[j + 2] & t_mask
                    a20 += r * ta[j + 2, t, 0]
                    a21 += r * ta[j + 2, t, 1]
                    a22 += r * ta[j + 2, t, 2]
                    a23 += r * ta[j + 2, t, 3]
                    r = tab_r[j + 3, rrow[j + 3] & r_mask]
                    t = trow[j + 3] & t_mask
                    a30 += r * ta[j + 3, t, 0]
                    a31 += r * ta[j + 3, t, 1]
                    a32 += r * ta[j + 3, t, 2]
                    a33 += r * ta[j + 3, t, 3]
                for j in range(4 * quads, n_pairs):
                    r = tab_r[j, rrow[j] & r_mask]
                    t = trow[j] & t_mask
                    a00 += r * ta[j, t, 0]
                    a01 += r * ta[j, t, 1]
                    a02 += r * ta[j, t, 2]
                    a03 += r * ta[j, t, 3]
                m0 = b * BLOCK
                out[h, m0, tok] = (a00 + a10) + (a20 + a30)
                if m0 + 1 < heads:
                    out[h, m0 + 1, tok] = (a01 + a11) + (a21 + a31)
                if m0 + 2 < heads:
                    out[h, m0 + 2, tok] = (a02 + a12) + (a22 + a32)
                if m0 + 3 < heads:
                    out[h, m0 + 3, tok] = (a03 + a13) + (a23 + a33)


SMALL_BITS = 4    # codes of up to 4 bits use fixed table strides, so offsets are constants


@njit(inline="always", cache=True, error_model="numpy", fastmath={"contract"})
def _angle_rows(lo, step, cos_t, sin_t, cos_d, sin_d):
    """cos_t, sin_t (B_t, P) <- cos/sin(lo_j + (t + 0.5) * step_j), float64.

    Two sincos per pair: the first bin centre and the step; the other bins
    by rotating (complex multiply), which adds about one ulp per bin.
    lo, step (P,); cos_d, sin_d (P,) scratch.
    """
    for j in range(lo.shape[0]):
        s, c = _sincos(lo[j] + 0.5 * step[j])
        sin_t[0, j] = s
        cos_t[0, j] = c
        s, c = _sincos(step[j])
        sin_d[j] = s
        cos_d[j] = c
    for t in range(1, cos_t.shape[0]):
        for j in range(lo.shape[0]):
            c = cos_t[t - 1, j]
            s = sin_t[t - 1, j]
            cos_t[t, j] = c * cos_d[j] - s * sin_d[j]
            sin_t[t, j] = s * cos_d[j] + c * sin_d[j]


@njit(inline="always", cache=True, error_model="numpy", fastmath={"contract"})
def _scores_group_block(rho, theta, tok0, group_size, tab_r, tab_a, r_mask, t_mask,
                        r_stride, a_stride, acc):
    """acc (4, G) float32 <- table scores of 4 query heads for tokens tok0 .. tok0 + G - 1.

    rho, theta (Lq, P) uint8 of one KV head; tab_r (P * r_stride,) with
    R[j, s] at j * r_stride + s; tab_a (P * a_stride,) with A[j, t, 0:4] at
    j * a_stride + 4 * t. Per pair one R load broadcast and one 4-head A load
    into a vector FMA; 4 accumulators (pairs j mod 4) hide the FMA latency.
    """
    n_pairs = rho.shape[1]
    quads = n_pairs // 4
    for i in range(group_size):
        rrow = rho[tok0 + i]
        trow = theta[tok0 + i]
        s0 = _f4_zero()
        s1 = _f4_zero()
        s2 = _f4_zero()
        s3 = _f4_zero()
        ro = 0
        ao = 0
        for qd in range(quads):
            j = 4 * qd
            s0 = _f4_fma(s0, _load(tab_r, ro + (rrow[j] & r_mask)),
                         _f4_load(tab_a, ao + 4 * (trow[j] & t_mask)))
            s1 = _f4_fma(s1, _load(tab_r, ro + r_stride + (rrow[j + 1] & r_mask)),
                         _f4_load(tab_a, ao + a_stride + 4 * (trow[j + 1] & t_mask)))
            s2 = _f4_fma(s2, _load(tab_r, ro + 2 * r_stride + (rrow[j + 2] & r_mask)),
                         _f4_load(tab_a, ao + 2 * a_stride + 4 * (trow[j + 2] & t_mask)))
            s3 = _f4_fma(s3, _load(tab_r, ro + 3 * r_stride + (rrow[j + 3] & r_mask)),
                         _f4_load(tab_a, ao + 3 * a_stride + 4 * (trow[j + 3] & t_mask)))
            ro += 4 * r_stride
            ao += 4 * a_stride
        for j in range(4 * quads, n_pairs):
            s0 = _f4_fma(s0, _load(tab_r, ro + (rrow[j] & r_mask)),
                         _f4_load(tab_a, ao + 4 * (trow[j] & t_mask)))
            ro += r_stride
            ao += a_stride
        total = _f4_add(_f4_add(s0, s1), _f4_add(s2, s3))
        for m in range(4):
            acc[m, i] = _f4_get(total, m)


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
def scores_kernel3(rho, theta, r_min, r_step, phi_min, phi_step, r_bits, t_bits, qxb, qyb, out):
    """As scores_kernel2 with explicit 4-lane vectors; qxb, qyb (H, blocks, P, 4) float64.

    Query head b * 4 + m of KV head h is qxb[h, b, :, m]; heads past M are
    zero padding and not written. out (H, M, L) float64.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    heads = out.shape[1]
    blocks = qxb.shape[1]
    group_size = rho.shape[1] // max(n_groups, 1)
    r_bins, t_bins = 1 << r_bits, 1 << t_bits
    small = r_bits <= SMALL_BITS and t_bits <= SMALL_BITS
    r_stride = 1 << SMALL_BITS if small else r_bins
    a_stride = BLOCK << SMALL_BITS if small else BLOCK * t_bins
    for hg in prange(n_heads * n_groups):
        h = hg // n_groups
        g = hg - h * n_groups
        tab_r = np.empty(n_pairs * r_stride, np.float32)
        tab_a = np.empty((blocks, n_pairs * a_stride), np.float32)
        cos_t = np.empty((t_bins, n_pairs))
        sin_t = np.empty((t_bins, n_pairs))
        cos_d = np.empty(n_pairs)
        sin_d = np.empty(n_pairs)
        acc = np.empty((BLOCK, group_size), np.float32)
        _angle_rows(phi_min[h, g], phi_step[h, g], cos_t, sin_t, cos_d, sin_d)
        lo = r_min[h, g]
        step = r_step[h, g]
        for j in range(n_pairs):
            for s in range(r_bins):
                tab_r[j * r_stride + s] = lo[j] + (s + 0.5) * step[j]
        qx = qxb[h].ravel()
        qy = qyb[h].ravel()
        for b in range(blocks):
            ta = tab_a[b]
            for j in range(n_pairs):
                x4 = _d4_load(qx, (b * n_pairs + j) * BLOCK)
                y4 = _d4_load(qy, (b * n_pairs + j) * BLOCK)
                for t in range(t_bins):
                    _d4_rotate_store(ta, j * a_stride + BLOCK * t, x4, cos_t[t, j], y4, sin_t[t, j])
            if small:   # constant strides: the compiler folds the offsets into addresses
                _scores_group_block(rho[h], theta[h], g * group_size, group_size, tab_r, ta,
                                    r_bins - 1, t_bins - 1, 1 << SMALL_BITS, BLOCK << SMALL_BITS, acc)
            else:
                _scores_group_block(rho[h], theta[h], g * group_size, group_size, tab_r, ta,
                                    r_bins - 1, t_bins - 1, r_stride, a_stride, acc)
            for m in range(min(BLOCK, heads - b * BLOCK)):
                row = out[h, b * BLOCK + m]
                for i in range(group_size):
                    row[g * group_size + i] = acc[m, i]


@njit(parallel=True, cache=True, error_model="numpy", fastmath={"contract"})
def scores_kernel4(rho, theta, r_min, r_step, phi_min, phi_step, r_bits, t_bits, qxb, qyb, out,
                   n_chunks):
    """AVX-512 table scores: 16 tokens per vector, each 16-entry table in a register.

    For r_bits, t_bits <= 4, P % 16 == 0 and G % 16 == 0 (the launcher checks).
    rho, theta (H, Lq, P) uint8; r_min, r_step, phi_min, phi_step (H, n, P)
    float64; qxb, qyb (H, blocks, 4, P) float32 (query head b * 4 + m of KV
    head h at [h, b, m], zero padded); out (H, M, L) float64. The (head,
    group) pairs are cut into n_chunks contiguous runs, one prange iteration
    each, so the scratch below is allocated once per run.

    Per group: angles of the bin centres t-major by rotation (vectorised over
    pairs), transposed to one 16-float row per pair; tables R[j, 0:16] and
    A[b, j, m, 0:16] = qx * cos + qy * sin. Per 16 tokens: the (16, P) code
    bytes transposed to (P, 16); then per pair one vpermps for the radius and
    one per head for the angle term, and a 16-lane FMA per head.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    heads = out.shape[1]
    blocks = qxb.shape[1]
    group_size = rho.shape[1] // max(n_groups, 1)
    total = n_heads * n_groups
    for chunk in prange(n_chunks):
        tab_r = np.empty((n_pairs, 16), np.float32)
        tab_a = np.empty((blocks, n_pairs, BLOCK, 16), np.float32)
        cos_j = np.empty((n_pairs, 16), np.float32)      # pair-major
        sin_j = np.empty((n_pairs, 16), np.float32)
        cos_c = np.empty(n_pairs)
        sin_c = np.empty(n_pairs)
        cos_d = np.empty(n_pairs)
        sin_d = np.empty(n_pairs)
        codes_r = np.empty(n_pairs * 16, np.uint8)      # a 16-token block, transposed
        codes_t = np.empty(n_pairs * 16, np.uint8)
        pair_at = np.empty(n_pairs, np.int64)           # position in codes_* -> pair
        c = 0
        while c < n_pairs:
            width = 64 if c + 64 <= n_pairs else 16
            for k in range(width):
                pair_at[c + k] = c + 16 * (k % (width // 16)) + k // (width // 16)
            c += width
        for hg in range(chunk * total // n_chunks, (chunk + 1) * total // n_chunks):
            h = hg // n_groups
            g = hg - h * n_groups
            # angle tables: bin centres lo + (t + 0.5) * step by rotation, t < 16
            lo = phi_min[h, g]
            step = phi_step[h, g]
            for j in range(n_pairs):
                s, c = _sincos(lo[j] + 0.5 * step[j])
                sin_c[j] = s
                cos_c[j] = c
                s, c = _sincos(step[j])
                sin_d[j] = s
                cos_d[j] = c
            cj = cos_j.ravel()
            sj = sin_j.ravel()
            for j16 in range(0, n_pairs, 16):
                _rotation_rows(cos_c, sin_c, cos_d, sin_d, j16, cj, sj)
            for b in range(blocks):
                ta = tab_a[b].ravel()
                for j in range(n_pairs):
                    c16 = _f16_load(cj, 16 * j)
                    s16 = _f16_load(sj, 16 * j)
                    for m in range(BLOCK):
                        _f16_rotate_store(ta, 16 * (BLOCK * j + m), qxb[h, b, m, j], c16,
                                          qyb[h, b, m, j], s16)
            lo = r_min[h, g]
            step = r_step[h, g]
            flat_r = tab_r.ravel()
            for j in range(n_pairs):     # bins past 2**r_bits hold further centres: unused
                _f16_bin_centres_store(flat_r, 16 * j, lo[j], step[j])
            rh = rho[h].ravel()
            th = theta[h].ravel()
            for block in range(group_size // 16):
                tok = g * group_size + 16 * block
                c = 0
                while c + 64 <= n_pairs:
                    _transpose_bytes64(rh, tok * n_pairs + c, n_pairs, codes_r, 16 * c)
                    _transpose_bytes64(th, tok * n_pairs + c, n_pairs, codes_t, 16 * c)
                    c += 64
                while c < n_pairs:
                    _transpose_bytes16(rh, tok * n_pairs + c, n_pairs, codes_r, 16 * c)
                    _transpose_bytes16(th, tok * n_pairs + c, n_pairs, codes_t, 16 * c)
                    c += 16
                for b in range(blocks):
                    ta = tab_a[b].ravel()
                    a0 = _f16_zero()
                    a1 = _f16_zero()
                    a2 = _f16_zero()
                    a3 = _f16_zero()
                    for k in range(n_pairs):
                        j = pair_at[k]
                        r = _f16_lookup(flat_r, 16 * j, _i16_from_bytes(codes_r, 16 * k))
                        t = _i16_from_bytes(codes_t, 16 * k)
                        a0 = _f16_fma(a0, r, _f16_lookup(ta, 64 * j, t))
                        a1 = _f16_fma(a1, r, _f16_lookup(ta, 64 * j + 16, t))
                        a2 = _f16_fma(a2, r, _f16_lookup(ta, 64 * j + 32, t))
                        a3 = _f16_fma(a3, r, _f16_lookup(ta, 64 * j + 48, t))
                    m0 = b * BLOCK
                    _f16_store_f64(out[h, m0], tok, a0)
                    if m0 + 1 < heads:
                        _f16_store_f64(out[h, m0 + 1], tok, a1)
                    if m0 + 2 < heads:
                        _f16_store_f64(out[h, m0 + 2], tok, a2)
                    if m0 + 3 < heads:
                        _f16_store_f64(out[h, m0 + 3], tok, a3)


# --------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True, error_model="numpy")
def decode_kernel1(rho, theta, r_min, r_step, phi_min, phi_step, r_bits, t_bits, pairing, out):
    """Bin midpoints back to Cartesian keys, written into out[:, :Lq, :].

    rho, theta (H, Lq, P) uint8; r_min, r_step, phi_min, phi_step (H, n, P)
    float64; out (H, L, d) float64.
    """
    n_heads, n_groups, n_pairs = r_min.shape
    group_size = rho.shape[1] // max(n_groups, 1)
    if pairing == HALF:
        x_stride, y_offset = 1, n_pairs
    else:
        x_stride, y_offset = 2, 1
    r_bins, t_bins = 1 << r_bits, 1 << t_bits
    for hg in prange(n_heads * n_groups):
        h = hg // n_groups
        g = hg - h * n_groups
        tab_r = np.empty((n_pairs, r_bins))
        tab_c = np.empty((n_pairs, t_bins))
        tab_s = np.empty((n_pairs, t_bins))
        for j in range(n_pairs):
            for s in range(r_bins):
                tab_r[j, s] = r_min[h, g, j] + (s + 0.5) * r_step[h, g, j]
            _unit_table(phi_min[h, g, j], phi_step[h, g, j], tab_c[j], tab_s[j])
        for i in range(group_size):
            tok = g * group_size + i
            for j in range(n_pairs):
                r = tab_r[j, rho[h, tok, j] & (r_bins - 1)]
                t = theta[h, tok, j] & (t_bins - 1)
                out[h, tok, j * x_stride] = r * tab_c[j, t]
                out[h, tok, j * x_stride + y_offset] = r * tab_s[j, t]
