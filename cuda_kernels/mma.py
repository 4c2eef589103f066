"""Scoring on tensor cores: decode keys to float16 in registers, q . k by mma.sync.

Version v2 of the scoring kernel (numbers in benchmarks/NOTES-gpu.md). The
table kernel (kernels.scores_kernel) spends about 14 instructions per
token-pair: a lookup of NH per-head table values and NH float32 FMAs. Here a
token-pair costs the same for any number of query heads (up to 8):

  1. its angle code picks (cos phi_hat, sin phi_hat) as one float16x2 word from
     a per-group table in shared memory (4 bytes a lookup, shared by all heads);
  2. its radius code becomes r_hat in float16x2 arithmetic, two tokens at a
     time: the code is OR-ed into the mantissa of 2**(10 - t_bits) (whose ulp
     is 2**-t_bits: no shift, no conversion), that is subtracted (exact) and
     one fma applies step and offset;
  3. k = r_hat * (cos, sin) is one float16x2 multiply, and the float16 pair is
     exactly the (x, y) element pair an mma.sync.m16n8k16 A fragment holds;
  4. one mma.sync per 16 tokens x 8 pairs multiplies the keys with the float16
     queries of up to 8 heads (the B fragment: registers in v2.2, shared memory in v2.3) and adds in
     float32.

Variants (mma_scores_kernel): lean=True (v2.3, the launcher's default) and
v2.2 (lean=False): the same arithmetic, v2.3 in fewer registers (B fragments in shared memory, the next
group's index loaded into the registers of finished words) for more warps a
SM; lean with slots=2 (v2.5, the default for up to 4 query heads a KV head): two
tokens a row of A, half the columns of B and C each, so that no column is wasted
and a lookup is one shared-memory wavefront. Since v2.7 lean orders a group's loads
around ptxas's one scoreboard for global loads (no wait right after the index
loads), and since v2.8 (prmt_lookup, the default up to 6 angle bits) a lookup
address is one byte permute; see the factory's docstring.

Fragment layout (PTX ISA, mma.m16n8k16 with .f16 A/B, .f32 C/D): lane =
4 * gid + tig holds A rows gid and gid + 8, columns 2 tig, 2 tig + 1 (a0, a1)
and 2 tig + 8, 2 tig + 9 (a2, a3); B columns (heads) gid, rows 2 tig, 2 tig + 1
(b0) and 2 tig + 8, 2 tig + 9 (b1); C rows gid, gid + 8, columns 2 tig,
2 tig + 1. A column pair (2c, 2c + 1) is one (x, y) pair of a key. The sum
over pairs does not care about their order, so each k-step's 8 column pairs
are chosen to suit the index loads: lane tig decodes one chunk of P / 4 index
bytes of its two tokens (one token slot; see the factory for more), and k-step
s gives column pair tig row 2 s and column pair tig + 4 row 2 s + 1 of that
chunk. Since v2.9 the chunks take turns by the loads' pieces (16 bytes for
d = 128: piece v of chunk c is bytes 16 (4 v + c) ..), so that the lanes of a
token read whole 32-byte sectors in one load; before, chunk c was the
contiguous bytes [c P / 4, (c + 1) P / 4). The queries go into B with the same
map (_pair_map).

Precision: keys and queries are rounded to float16 (products exact, sums
float32); polarref.tolerances.float16_key_bound derives the extra error.
Radii or queries beyond the float16 range set an overflow flag that the
launcher turns into an error. Under NUMBA_ENABLE_CUDASIM=1 the inline PTX
below has Python twins; the mma twin exchanges fragments through a shared
array and two block barriers, so every thread of a block must reach every
mma (the kernel's loops have block-uniform trip counts).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda, float32, int64, uint32

from .kernels import (F0, FHALF, PI32, SHARED_ALIGN, SIM, fast_cos, fast_sin, fma, ld_u32, ld_u32x4,
                      ldg_f32, stg)

F16_MAX = np.float32(np.finfo(np.float16).max)       # 65504


def radius_magic(t_bits: int) -> np.uint32:
    """(2**(10 - t_bits), same) as float16x2: its ulp is 2**-t_bits, so OR-ing the code byte's
    radius bits (rho << t_bits) into its mantissa gives 2**(10 - t_bits) + rho exactly."""
    bits = (25 - t_bits) << 10                       # exponent field 15 + 10 - t_bits, mantissa 0
    return np.uint32(bits * 0x00010001)
MMA_K_PAIRS = 8                                      # one m16n8k16 k-step = 16 dims = 8 pairs
MMA_HEADS = 8                                        # n = 8 columns: up to 8 query heads per launch row
LEAN_RPAD = 2                                        # lean: words between radius constants of chunks
SLOTS = (1, 2, 4)                                    # tokens a row of A (see mma_scores_kernel)


# --------------------------------------------------------------------------
# float16x2 and mma: inline PTX on the GPU, numpy twins in the simulator.
# A float16x2 travels as a uint32, first element in the low 16 bits.
# --------------------------------------------------------------------------
if SIM:
    def _halves(u):
        return np.array([u], np.uint32).view(np.float16).astype(np.float64)

    def _word(lo, hi):
        with np.errstate(over="ignore"):           # beyond 65504 rounds to inf, as on the GPU
            return np.array([lo, hi], np.float16).view(np.uint32)[0]

    def h2_pack(lo, hi):
        """float16x2 (lo, hi) of two float32 values, round to nearest."""
        return _word(np.float32(lo), np.float32(hi))

    def h2_sub(a, b):
        x, y = _halves(a), _halves(b)
        return _word(x[0] - y[0], x[1] - y[1])

    def h2_fma_lohi(a, rc):
        """Elementwise a * rc.lo + rc.hi, one rounding (the float64 sum of float16 products and
        float16 values is exact)."""
        x, r = _halves(a), _halves(rc)
        return _word(x[0] * r[0] + r[1], x[1] * r[0] + r[1])

    def h2_mul_lo(a, b):
        """(a.lo * b.lo, a.lo * b.hi): the low half of a broadcast, times b."""
        x, y = _halves(a), _halves(b)
        return _word(x[0] * y[0], x[0] * y[1])

    def h2_mul_hi(a, b):
        x, y = _halves(a), _halves(b)
        return _word(x[1] * y[0], x[1] * y[1])

    def prmt(a, b, sel):
        """PTX prmt.b32 (default mode): byte i of the result is byte sel[i] of {b, a}."""
        v = int(a) | (int(b) << 32)
        out = 0
        for i in range(4):
            k = (int(sel) >> (4 * i)) & 7
            out |= ((v >> (8 * k)) & 0xFF) << (8 * i)
        return np.uint32(out)

    def mma_16816(xch, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        """D = A B + C of one warp (m16n8k16, float16 in, float32 out), lane by lane.

        xch: a (threads, 6) uint32 shared array. Each lane posts its fragments,
        a barrier, each lane computes its four outputs from the warp's
        fragments (tensor_core_sum), a barrier.
        """
        tid = cuda.threadIdx.x
        lane, w0 = tid % 32, tid - tid % 32
        for k, v in enumerate((a0, a1, a2, a3, b0, b1)):
            xch[tid, k] = v
        cuda.syncthreads()
        a = np.zeros((16, 16))
        b = np.zeros((16, 8))
        for ln in range(32):
            gid, tig = ln >> 2, ln & 3
            h = [_halves(xch[w0 + ln, k]) for k in range(6)]
            a[gid, 2 * tig:2 * tig + 2] = h[0]
            a[gid + 8, 2 * tig:2 * tig + 2] = h[1]
            a[gid, 2 * tig + 8:2 * tig + 10] = h[2]
            a[gid + 8, 2 * tig + 8:2 * tig + 10] = h[3]
            b[2 * tig:2 * tig + 2, gid] = h[4]
            b[2 * tig + 8:2 * tig + 10, gid] = h[5]
        cuda.syncthreads()
        gid, tig = lane >> 2, lane & 3
        return (tensor_core_sum(a[gid], b[:, 2 * tig], c0), tensor_core_sum(a[gid], b[:, 2 * tig + 1], c1),
                tensor_core_sum(a[gid + 8], b[:, 2 * tig], c2),
                tensor_core_sum(a[gid + 8], b[:, 2 * tig + 1], c3))

    def tensor_core_sum(a_row, b_col, c):
        """float32 c + sum(a_row * b_col) the way a tensor core adds (the model of Fasi et al.,
        "Numerical behavior of NVIDIA tensor cores", 2021): the exact products and c are aligned
        to the largest exponent and truncated to 24 bits, summed, and the sum truncated to
        float32. Pessimistic on purpose, so that simulator runs exercise the accumulation term
        of tolerances.float16_key_bound as the GPU does."""
        with np.errstate(all="ignore"):            # inf * 0 -> NaN, as on the GPU
            terms = np.append(a_row * b_col, np.float64(c))
            big = np.max(np.abs(terms))
            if not np.isfinite(big) or big == 0.0:
                return np.float32(np.sum(terms))
            quantum = 2.0 ** (np.floor(np.log2(big)) - 23)
            total = np.sum(np.trunc(terms / quantum)) * quantum      # exact in float64
            f = np.float32(total)
            if abs(float(f)) > abs(total):         # round toward zero
                f = np.nextafter(f, np.float32(0.0))
            return np.float32(f)

    SIM_SMEM_BASE = 4096     # a simulated shared address of arr[0]: aligned like the GPU's, not 0,
    #                          so that the (bits & mask) | base addressing is really exercised
    #                          (its low byte is 0: the prmt lookup's cb then comes from the chunk
    #                          and buffer offsets alone)

    def smem_addr(arr):
        """Shared-window byte address of arr[0] (simulated: SIM_SMEM_BASE)."""
        return np.uint32(SIM_SMEM_BASE)

    def lds_at(arr, addr):
        """The uint32 at shared byte address addr (arr: the array it lies in; the GPU ignores it)."""
        return np.uint32(arr[(int(addr) - SIM_SMEM_BASE) // 4])

    def lds_u32x2(arr, i):
        return np.uint32(arr[i]), np.uint32(arr[i + 1])

    def mul_lo(a, b):
        """The low 32 bits of a * b (numpy warns where the GPU wraps)."""
        return np.uint32((int(a) * int(b)) & 0xFFFFFFFF)

    def ld_u32x2(arr, i):
        """Two little-endian uint32 words from bytes arr[i:i+8] (i 8-byte aligned)."""
        return ld_u32(arr, i), ld_u32(arr, i + 4)

    def sts_u32x2(arr, i, a, b):
        arr[i] = a
        arr[i + 1] = b

    def sts_u32x4(arr, i, a, b, c, d):
        arr[i] = a
        arr[i + 1] = b
        arr[i + 2] = c
        arr[i + 3] = d

else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    from .kernels import _I32, _item_ptr, _vector_load, _vector_store

    _F = ir.FloatType()

    def _asm_u32(text, n_args):
        """Intrinsic: uint32 result of inline PTX on n_args uint32 operands ($0 out, $1.. in)."""
        constraints = ",".join(["=r"] + ["r"] * n_args)

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(_I32, [_I32] * n_args)
            return builder.asm(fnty, text, constraints, list(args), False)

        if n_args == 2:
            @intrinsic
            def op(typingctx, a, b):
                return types.uint32(types.uint32, types.uint32), codegen
        else:
            @intrinsic
            def op(typingctx, a, b, c):
                return types.uint32(types.uint32, types.uint32, types.uint32), codegen
        return op

    h2_sub = _asm_u32("sub.rn.f16x2 $0, $1, $2;", 2)
    h2_fma_lohi = _asm_u32("{ .reg .b16 l, h; .reg .b32 s, c; mov.b32 {l, h}, $2; mov.b32 s, {l, l}; "
                           "mov.b32 c, {h, h}; fma.rn.f16x2 $0, $1, s, c; }", 2)
    h2_mul_lo = _asm_u32("{ .reg .b16 l, h; .reg .b32 t; mov.b32 {l, h}, $1; mov.b32 t, {l, l}; "
                         "mul.rn.f16x2 $0, t, $2; }", 2)
    h2_mul_hi = _asm_u32("{ .reg .b16 l, h; .reg .b32 t; mov.b32 {l, h}, $1; mov.b32 t, {h, h}; "
                         "mul.rn.f16x2 $0, t, $2; }", 2)
    prmt = _asm_u32("prmt.b32 $0, $1, $2, $3;", 3)

    @intrinsic
    def h2_pack(typingctx, lo, hi):
        """float16x2 (lo, hi) of two float32 values (cvt.rn.f16x2.f32 puts its first source high)."""
        sig = types.uint32(types.float32, types.float32)

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(_I32, [_F, _F])
            return builder.asm(fnty, "cvt.rn.f16x2.f32 $0, $2, $1;", "=r,f,f", list(args), False)

        return sig, codegen

    @intrinsic
    def mma_16816(typingctx, xch, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        """mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32; xch is unused here (simulator only)."""
        u, f = types.uint32, types.float32
        sig = types.UniTuple(f, 4)(xch, u, u, u, u, u, u, f, f, f, f)

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(ir.LiteralStructType([_F] * 4), [_I32] * 6 + [_F] * 4)
            text = ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                    "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};")
            res = builder.asm(fnty, text, "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", list(args[1:]), False)
            vals = [builder.extract_value(res, k) for k in range(4)]
            return context.make_tuple(builder, sig.return_type, vals)

        return sig, codegen

    lds_u32x2 = _vector_load(_I32, types.uint32, 2, 3, 8)
    ld_u32x2 = _vector_load(_I32, types.uint32, 2, 1, 8)

    @intrinsic
    def smem_addr(typingctx, arr):
        """The 32-bit shared-window byte address of arr[0] (arr a shared array)."""
        sig = types.uint32(arr)

        def codegen(context, builder, sig, args):
            ptr = _item_ptr(context, builder, sig.args[0], args[0], types.intp, ir.Constant(ir.IntType(64), 0))
            ptr = builder.addrspacecast(builder.bitcast(ptr, ir.PointerType(_I32)), ir.PointerType(_I32, 3))
            return builder.ptrtoint(ptr, _I32)

        return sig, codegen

    @intrinsic
    def lds_at(typingctx, arr, addr):
        """The uint32 at shared byte address addr: address arithmetic stays 32-bit, so that
        (bits & mask) | base is one LOP3 and constant offsets fold into the load."""
        sig = types.uint32(arr, types.uint32)

        def codegen(context, builder, sig, args):
            return builder.load(builder.inttoptr(args[1], ir.PointerType(_I32, 3)), align=4)

        return sig, codegen

    sts_u32x2 = _vector_store(_I32, 2, 8, value=types.uint32)
    sts_u32x4 = _vector_store(_I32, 4, 16, value=types.uint32)

    @cuda.jit(device=True, inline=True)
    def mul_lo(a, b):
        """The low 32 bits of a * b."""
        return uint32(a * b)


def table_layout(n_pairs: int, t_bits: int, chunks: int = 4) -> tuple[int, int]:
    """(ALIGN, STRIDE) in bytes of the angle table (see mma_scores_kernel): `chunks` chunks of STRIDE."""
    row = 4 << t_bits
    align = max(64, row)                 # chunk bases: the bits of theta * 4 (2 .. t_bits + 1) clear
    return align, -(-(n_pairs // chunks * row) // align) * align + align


def shared_bytes(n_pairs: int, t_bits: int, lean: bool = False, slots: int = 1) -> int:
    """Static shared memory of mma_scores_kernel: two tables, two sets of radius constants (lean:
    padded, and the B fragments of every lane and k-step)."""
    chunks = 4 // slots
    k_steps = n_pairs * slots // MMA_K_PAIRS
    extra = 2 * chunks * LEAN_RPAD * 4 + 2 * 32 * k_steps * 4 if lean else 0
    return 2 * chunks * table_layout(n_pairs, t_bits, chunks)[1] + 2 * n_pairs * 4 + 24 + extra


def mma_eligible(n_pairs: int, t_bits: int, group_size: int, slots: int = 1) -> bool:
    """Shapes the tensor-core kernel takes: P / (4 / slots) pairs a lane a multiple of 4 (4-byte
    index words; slots = 1: P a multiple of 16), G a multiple of 16 * slots (mma tiles of 16 rows,
    `slots` tokens a row), t_bits >= 2 (table rows are written 4 entries a store), and its shared
    memory within the 48 KiB a block may declare statically."""
    return (slots in SLOTS and n_pairs * slots % 16 == 0 and group_size % (16 * slots) == 0
            and t_bits >= 2 and shared_bytes(n_pairs, t_bits, slots=slots) <= 48 * 1024)


def lean_fits(n_pairs: int, t_bits: int, slots: int = 1) -> bool:
    """v2.3 (lean) on top of mma_eligible: its larger shared memory within 48 KiB, and the padded
    radius constants of the lane groups (words chunk * (CP + LEAN_RPAD) + 0, 1) in disjoint
    banks, so that each half-warp phase of an LDS.64 is one wavefront (true for every P that is a
    multiple of 16: the stride is 2 mod 4)."""
    chunks = 4 // slots
    stride = n_pairs // chunks + LEAN_RPAD
    banks = {(c * stride + k) % 32 for c in range(chunks) for k in range(2)}
    return len(banks) == 2 * chunks and shared_bytes(n_pairs, t_bits, lean=True, slots=slots) <= 48 * 1024


def default_slots(n_heads: int, n_pairs: int, t_bits: int, group_size: int) -> int:
    """Token slots of the launcher's kernel: 2 where the query heads of a KV head fit half the mma's
    8 columns (n_heads <= 4) and the lean kernel takes the shape, else 1. With 2 slots a row of A
    holds two tokens and each half of B the same heads (v2.5): no column is wasted on a missing head,
    and a lookup's lanes read 2 table rows in opposite bank halves, one shared-memory wavefront
    instead of 2."""
    if n_heads <= MMA_HEADS // 2 and mma_eligible(n_pairs, t_bits, group_size, 2) and lean_fits(n_pairs, t_bits, 2):
        return 2
    return 1


def mma_warps(group_size: int, warps: int = 0, slots: int = 1) -> int:
    """Warps of a block: `warps` if it divides the group's tiles (16 * slots tokens each), else the
    most of 4, 3, 2, 1 that do."""
    n_tiles = group_size // (16 * slots)
    if warps and n_tiles % warps == 0:
        return warps
    return next(w for w in (4, 3, 2, 1) if n_tiles % w == 0)


def default_warps(n_pairs: int, t_bits: int, group_size: int, slots: int = 1) -> int:
    """The launcher's warps a block: 64 tokens a warp (4 tiles of 16, or 2 of 32 with 2 slots) where
    that divides the group and each thread then builds at most 4 table stores a group, else
    mma_warps' choice. A warp's k-step loads of B fragments and radius constants serve all its
    tiles, so more tiles a warp spend fewer shared-memory wavefronts a token (W-GPU, 1 slot: 2 warps
    of 4 tiles 0.269 ms, 128 registers, against 4 warps of 2 tiles 0.288 ms, 72 registers; the
    kernel is bound by L1 wavefronts). With 2 slots, 2 warps of 2 tiles: 0.2425 ms, against 4
    warps of 1 tile 0.2617 and 1 warp of 4 tiles 0.52 (that warp builds the whole table alone)."""
    quads = n_pairs * (1 << t_bits) // 4
    w = group_size // 64
    # at most 4 such warps: 128 threads x ~128 registers stay far inside a block's 1024 threads
    # and 64 K registers (G = 2048 would ask for 32 warps and 128 K registers)
    if group_size % 64 == 0 and 1 <= w <= 4 and quads <= 4 * 32 * w:
        return w
    return mma_warps(group_size, slots=slots)


PRMT_LOOKUP_MAX_T_BITS = 6    # prmt lookup addresses need theta * 4 within a byte
SEL0 = 0x0400                 # decode_pair's sel0: the radius prmt selector k | (4 + k) << 8 at k = 0;
#                               SEL0 >> 8 is the 4 of the prmt lookup's x * 4


@lru_cache(maxsize=None)
def _pair_decoder(r_bits: int, t_bits: int, prmt_lookup: bool = False):
    """decode_pair for these bit widths (table rows of 2**t_bits words, see mma_scores_kernel).

    prmt_lookup (v2.8): the lookup address of byte k of a word x is prmt(v, base, .): its byte 0
    is byte k of v = ((x << 2) & theta mask in every byte) | cb, bytes 1-3 those of base. v is computed once
    a word and serves its 4 bytes (LLVM merges the copies of the two k-steps that read one word),
    so 4 lookups cost 2 + 4 instructions instead of 4 x (shift, LOP3). The chunk base's bits
    below bit 8 (above theta * 4: ALIGN) travel in cb = (base & 0xFF) * 0x01010101, and base
    has them cleared (the kernel splits them once a group)."""
    NTAB = 1 << t_bits
    ROWB = 4 * NTAB                       # bytes per table row (one pair)
    TMASK4 = np.uint32((NTAB - 1) << 2)   # theta * 4
    assert not prmt_lookup or t_bits <= PRMT_LOOKUP_MAX_T_BITS, t_bits
    TMASK4B = np.uint32((((NTAB - 1) << 2) * 0x01010101) if prmt_lookup else 0)   # theta * 4, every byte
    RMASK2 = np.uint32((((1 << r_bits) - 1) << t_bits) * 0x00010001)   # radius bits of both halves

    @cuda.jit(device=True, inline=True)
    def bin_word(x, k, base):
        """Shared byte address of the (cos, sin) word of the angle code in byte k of x."""
        if k == 0:
            return ((x << uint32(2)) & TMASK4) | base
        return ((x >> uint32(8 * k - 2)) & TMASK4) | base

    @cuda.jit(device=True, inline=True)
    def lookup_address(x, k, base, cb, sel0):
        """Shared byte address of the (cos, sin) word of the angle code in byte k of x (row 0)."""
        if prmt_lookup:                     # x * 4, the 4 read from shared memory: see decode_pair
            return prmt((mul_lo(x, sel0 >> uint32(8)) & TMASK4B) | cb, base, uint32(k | 0x7650))
        return bin_word(x, k, base)

    @cuda.jit(device=True, inline=True)
    def decode_pair(tab, rc, xa, xb, k, base, cb, sel0, row, magic):
        """float16x2 keys (x, y) of a pair (table row `row`, radius constants rc) for
        tokens a and b: byte k of xa, xb (table addresses: base, and cb with prmt_lookup).

        prmt puts byte k of xa in byte 0 and byte k of xb in byte 2: the radius
        codes of both tokens land in the mantissas of one float16x2 (magic is
        radius_magic(t_bits), an argument so that the mask-and-or is one LOP3);
        subtracting magic leaves rho exactly, and -r_hat = rho * (-step) - c is one
        rounding (rc is the float16x2 -(step, c = r_min + step / 2); the fma broadcasts
        each half, which the hardware does as an operand swizzle, no instruction).
        The table holds -(cos, sin) (see build): the product is r_hat * (cos, sin), the
        signs cancelling exactly.

        sel0 (SEL0) comes from shared memory, read after the group's barrier: the first
        instructions on the index words (this prmt, and x * 4 of the prmt lookup) then cannot be
        scheduled above that barrier, where ptxas otherwise puts them and where their wait for the
        index loads has nothing in front of it (the build and the barrier cover it below).
        """
        csa = lds_at(tab, lookup_address(xa, k, base, cb, sel0) + uint32(row * ROWB))
        csb = lds_at(tab, lookup_address(xb, k, base, cb, sel0) + uint32(row * ROWB))
        sel = sel0 + uint32(k * 0x0101)                        # k | (4 + k) << 8
        hr = (prmt(xa, xb, sel) & RMASK2) | magic             # 2**(10 - t_bits) + rho
        r = h2_fma_lohi(h2_sub(hr, magic), rc)                # -r_hat of both tokens
        return h2_mul_lo(r, csa), h2_mul_hi(r, csb)

    return decode_pair


def _pair_funcs(n_pairs: int, chunks: int, piece: int):
    """(pair_at, chunk_of, row_of) as plain Python functions: which pair of a token (index byte)
    row `row` of chunk `chunk` holds, and back. A lane decodes the pairs of one chunk, in row
    order (k-step s: rows 2 s and 2 s + 1). piece = 0: chunk c is the contiguous bytes
    [c CP, (c + 1) CP). piece > 0 (v2.9): the chunks take turns by pieces of `piece` bytes, piece
    v of chunk c being bytes piece (chunks v + c) ..., so that the lanes of one token read whole
    32-byte sectors in one load (see mma_scores_kernel)."""
    CP = n_pairs // chunks
    assert piece == 0 or CP % piece == 0, (n_pairs, chunks, piece)
    SPAN = chunks * piece

    def pair_at(chunk, row):
        if piece:
            return (row // piece) * SPAN + chunk * piece + row % piece
        return chunk * CP + row

    def chunk_of(j):
        if piece:
            return (j // piece) % chunks
        return j // CP

    def row_of(j):
        if piece:
            return (j // SPAN) * piece + j % piece
        return j % CP

    return pair_at, chunk_of, row_of


@lru_cache(maxsize=None)
def _pair_map(n_pairs: int, chunks: int, piece: int):
    """_pair_funcs as device functions."""
    return tuple(cuda.jit(device=True, inline=True)(f) for f in _pair_funcs(n_pairs, chunks, piece))


@lru_cache(maxsize=None)
def _query_loader(n_pairs: int, slots: int = 1, piece: int = 0):
    """load_queries: a lane's B fragments (float16x2) of every k-step; True if a query is beyond float16."""
    CP = n_pairs * slots // 4             # pairs of a chunk
    KS = CP // 2
    HS = MMA_HEADS // slots               # heads a token slot
    pair_at = _pair_map(n_pairs, 4 // slots, piece)[0]

    @cuda.jit(device=True, inline=True)
    def load_queries(queries, bh, n_heads, gid, tig, x_stride, y_offset, b0, b1):
        # column gid: head blockIdx.z * HS + gid % HS of token slot gid // HS. k-step s: column
        # pairs tig (b0) and tig + 4 (b1) hold rows 2 s and 2 s + 1 of chunk tig // slots of token slot
        # tig % slots, so B is the query where the two slots agree and 0 elsewhere
        head = cuda.blockIdx.z * HS + gid % HS
        use = head < n_heads and gid // HS == tig % slots
        chunk = tig // slots
        qbase = (int64(bh) * n_heads + head) * (2 * n_pairs)
        big = False
        for s in range(KS):
            b0[s] = uint32(0)
            b1[s] = uint32(0)
            if use:
                j = pair_at(chunk, 2 * s)             # and j + 1: rows 2 s, 2 s + 1 (piece is even)
                qx0 = ldg_f32(queries, qbase + j * x_stride)
                qy0 = ldg_f32(queries, qbase + j * x_stride + y_offset)
                qx1 = ldg_f32(queries, qbase + (j + 1) * x_stride)
                qy1 = ldg_f32(queries, qbase + (j + 1) * x_stride + y_offset)
                big = big or not (max(max(abs(qx0), abs(qy0)), max(abs(qx1), abs(qy1))) < F16_MAX)
                b0[s] = h2_pack(qx0, qy0)
                b1[s] = h2_pack(qx1, qy1)
        return big

    return load_queries


@lru_cache(maxsize=None)
def mma_scores_kernel(n_pairs: int, r_bits: int, t_bits: int, group_size: int,
                      wide_loads: bool = True, warps: int = 0,
                      max_registers: int = 0, lean: bool = False, slots: int = 1, words_per_load: int = 0,
                      prmt_lookup: bool = True, interleave: bool = True):
    """Kernel factory: tensor-core scores of the quantized tokens.

    grid (ceil(n_groups / gpb), BH, ceil(M / (8 / slots))); block
    32 * W threads, W warps sharing the G / (16 slots) token tiles of a group. A block keeps
    its query heads' B fragments (in registers; lean: in shared memory) and scores gpb (a kernel
    argument, so that the launcher can fit the grid to the blocks a GPU holds at once)
    consecutive groups of one KV head: per group it builds the (cos, sin)
    table and radius constants in shared memory (double-buffered, one barrier
    a group), then each warp decodes and multiplies its tiles while the next
    group's index words and parameters are loading into registers. wide_loads: 16-byte index loads
    (taken where a lane's P slots / 4 index bytes a token are a multiple of 16; the launcher asks
    for them where P % 64 == 0 and the index is 16-byte aligned), else 4-byte loads.

    slots (v2.5; the launcher takes 2 where the heads of a KV head fit 4 columns,
    see default_slots): tokens a row of A. With S slots a tile is 16 S tokens,
    row m holding tokens m + 16 j (j < S), and the 8 columns of B and C are S
    slots of 8 / S heads: B column n holds the queries of head n % (8 / S) in
    the A columns of slot n // (8 / S) and zeros elsewhere, so C column n is
    the scores of that slot's token. Lane tig decodes slot tig % S and chunk
    tig // S of the 4 / S chunks (P S / 4 pairs each); a k-step covers 2 pairs
    of each chunk. What it buys at S = 2, W-GPU (M = 4): no C column wasted on
    a missing head (v2.4 left 4 of 8 columns zero), and a lookup instruction
    reads 2 table rows, which the chunk stride puts in opposite bank halves:
    one shared-memory wavefront instead of 2 (ncu: 23.2 M shared-load
    wavefronts a launch instead of 37.9 M). words_per_load: lean's index
    words a load (default 2 with one slot, 4 with more).

    Table layout (written for one slot; with S slots read chunk tig // S for
    chunk tig, and 4 / S chunks): lane tig reads only the pairs of its index
    bytes, chunk tig, whose rows (one per pair, 2**t_bits words) start at byte
    tig * STRIDE. In one lookup instruction the four tigs read the same row of
    their chunks. With 8 or 16 bins STRIDE is an odd multiple of 64 bytes, so
    chunks tig and tig + 1 fall on opposite halves of the 32 banks (one slot:
    2 wavefronts a lookup, not 4; two slots, two chunks: 1); with more bins a
    row spans all banks anyway. The bin's
    byte offset theta * 4 has bits 2 .. t_bits + 1 only and each chunk base is
    aligned past them (ALIGN), so the lookup address is (bits & mask) | base:
    with prmt_lookup (v2.8, t_bits <= 6) one byte permute of a per-word value
    (see _pair_decoder), else a shift and one LOP3.

    interleave (v2.9, lean only; the default): which index bytes (pairs) make a lane's chunk.
    A lane loads FW index words (4 FW bytes) of a token at a time, and a token's bytes are
    split among the 4 / S lanes of its chunks. With chunk c the contiguous bytes
    [c CP, (c + 1) CP) (interleave=False, v2.8), one load of a warp takes 16 bytes from each of
    two 32-byte sectors of a token, and the next load the other halves: each sector is fetched
    into L1 twice. With the chunks taking turns by pieces of 4 FW bytes (_pair_map), the lanes
    of a token read whole sectors in one load. ncu, W-GPU: 20.5 M global sectors requested
    instead of 37.2 M (the index is 16.8 M); L1 data-pipe wavefronts 39.4 M instead of 40.2 M
    (a load of a warp still touches eight 128-byte lines; why the wavefronts hardly move was not
    measured). Timed in one call, twice: 0.2190 / 0.2191 ms against 0.2208 / 0.2196; in the
    all-cases run 1-4 % faster in each of the 6 cases. Table rows,
    radius constants and B fragments follow the same map; the k-step code does not change.

    lean=True (v2.3) does the same arithmetic in fewer registers, so that more
    blocks fit a SM (W-GPU, ptxas 13.0: v2.2 127 registers, 4 blocks of 4
    warps; v2.3 72 registers and no spill, 7 blocks; v2.4, the launcher's
    default_warps, spends them again on 4 tiles a warp: 2 warps, 128 registers,
    8 blocks, fewer shared-memory loads a tile):
      - the B fragments live in shared memory (k-step s, lane l at words
        2 (32 s + l): one LDS.64 a k-step, 256 contiguous bytes a warp, 2
        wavefronts) instead of 2 KS registers a thread; warp 0 writes them;
      - a warp runs the k-steps of its tiles side by side (k-step outer): one
        LDS.64 of B and one LDS.64 of radius constants serve all its tiles and
        die at once, and as soon as a k-step pair has used the last of a load's
        index words, the next group's words are loaded into those registers
        (8-byte loads with wide_loads, else 4-byte) instead of into a second
        set; each load has about half a group's work to arrive (the k-steps
        left, or the next table build and the k-steps before its words);
      - index arithmetic starts from an unsigned thread index, and where every
        thread builds table entries (QUADS % NT == 0) their parameter loads are
        not predicated: both leave fewer values live across the group loop;
      - the radius constants of chunk tig start RPAD words later, so the four
        8-byte blocks of one LDS.64 fall in disjoint banks (CP words apart, as in
        v2.2, they can share banks: two and two if P % 64 == 0, all four if
        P % 128 == 0).
    Both versions keep a pair's radius constants as one float16x2 -(step, c): a
    k-step's two pairs are one LDS.64, 2 shared-memory wavefronts (a wavefront
    delivers at most 128 bytes, 4 a lane; ncu on v2.3 with (step, step) and (c, c)
    words counted 4 for its LDS.128), and the fma takes each half as an operand
    swizzle (HFMA2 R, R.H0_H0, R.H1_H1), no instruction.
    The k-step loop is split at the index loads (kblock: blocks of 2 FW k-steps)
    because LLVM does not fully unroll one loop of KS k-steps with the loads
    inside, and then the local arrays would live in local memory; a condition
    on the block number inside that loop has the same effect, so the blocks
    are written out around the parameter work.

    Order of a group in lean (v2.7), for the scoreboards: ptxas gives every
    global load one scoreboard, so the first use of any loaded value waits for
    all loads issued before it (SASS control bits). Before v2.7 that was a copy
    of the next group's parameters at the group's end, right after the last
    index loads: a whole DRAM latency every group (ncu: 17 % of all stall
    samples on that one instruction). Now the next group's parameters load
    after the first block (so they do not delay the first use of this group's
    words), derive() turns them into the build's inputs after the middle block,
    before the last index loads, and nothing between those loads and the
    barrier reads a loaded value or branches on a thread-dependent condition (a
    divergent branch or an EXIT also waits for the scoreboard: hence ALL_P and
    a trip count n_mine instead of an exit inside the loop; where ALL_T or ALL_P
    is false, as in shapes other than W-GPU's, the build still branches). The
    first use of the next group's words now has the build and the barrier in
    front of it. With one block (NV = 1) the parameters are derived right after
    they are fetched, with no k-steps in between: correct, but not hidden.
    """
    P, G, S = n_pairs, group_size, slots
    assert mma_eligible(P, t_bits, G, S) and (S == 1 or lean), (P, t_bits, G, S, lean)
    NCH = 4 // S                          # chunks: lane tig reads chunk tig // S of token slot tig % S
    CP = P // NCH                         # pairs of a chunk = index bytes per lane and token
    KS = CP // 2                          # k-steps a tile
    NWD = CP // 4                         # index words per lane and token
    WIDE = bool(wide_loads) and NWD % 4 == 0
    FW = (words_per_load or (2 if S == 1 else 4)) if (lean and WIDE) else 1   # lean: index words a load
    assert FW in (1, 2, 4) and NWD % FW == 0, (FW, NWD)
    PIECE = 4 * FW if (lean and interleave) else 0   # v2.9: chunks take turns by loads' bytes
    pair_at, chunk_of, row_of = _pair_map(P, NCH, PIECE)
    TT = 16 * S                           # tokens a tile: 16 rows of S tokens
    HS = MMA_HEADS // S                   # heads a token slot (columns of B and C)
    NTILE = G // TT
    NWARP = mma_warps(G, warps, S)
    TPW = NTILE // NWARP                  # tiles per warp
    NT = 32 * NWARP
    NTAB = 1 << t_bits
    ALIGN, STRIDE = table_layout(P, t_bits, NCH)
    TAB_ALIGN = None if SIM else ALIGN
    TABN = NCH * STRIDE // 4              # table words: NCH chunks of STRIDE bytes
    RPAD = LEAN_RPAD if lean else 0       # words between the radius constants of chunks c - 1 and c
    NRC = P + NCH * RPAD                  # radius constants: one float16x2 -(step, c) a pair
    TABN2, NRC2 = 2 * TABN, 2 * NRC        # double buffers (shared shapes must be plain constants)
    NBQ = 2 * 32 * KS                     # lean: B fragment words (b0, b1 of each k-step and lane)
    NXCH = NT if SIM else 1
    RSCALE = np.float32(2.0 ** r_bits)
    QUADS = P * NTAB // 4                 # table stores of 4 entries
    NIT_T = -(-QUADS // NT)
    NIT_P = -(-P // NT)
    QPR = NTAB // 4                       # stores per row
    ALL_T = lean and QUADS % NT == 0      # lean: every thread builds NIT_T quads (no predicated loads)
    RPI = NT // QPR if NT % QPR == 0 else 0   # table rows one build iteration covers, if whole
    # EVEN: a thread's quads are pairs it * RPI + t (t = tid // QPR) whose chunk and row are those
    # of pair it * RPI plus those of pair t, so their parameter loads and table stores are
    # immediate offsets from one address (W-GPU: 10 LDG took 66 instructions a group with an
    # address each, and the kernel 128 registers instead of 96). Checked here for every quad.
    py_chunk, py_row = _pair_funcs(P, NCH, PIECE)[1:]
    EVEN = ALL_T and RPI > 0 and all(
        py_chunk(it * RPI + t) == py_chunk(it * RPI) + py_chunk(t)
        and py_row(it * RPI + t) == py_row(it * RPI) + py_row(t)
        for it in range(NIT_T) for t in range(RPI) if it * RPI + t < P)
    T_IN_ROW = all(py_chunk(t) == 0 and py_row(t) == t for t in range(min(RPI, P)))   # pair t is row t
    ALL_P = P % NT == 0                   # every thread prepares NIT_P pairs' radius constants: no branch
    #                                       (a divergent branch waits for every pending load)
    NV = NWD // FW                        # lean: blocks of FW index words (k-steps 2 FW v ..)
    VH = NV // 2                          # lean: the next group's parameters are derived after block VH
    if lean and not lean_fits(P, t_bits, S):
        raise ValueError(f"mma lean: P = {P}, t_bits = {t_bits} do not fit (see lean_fits); use lean=False")

    PRMT_LOOKUP = bool(prmt_lookup) and t_bits <= PRMT_LOOKUP_MAX_T_BITS
    decode_pair = _pair_decoder(r_bits, t_bits, PRMT_LOOKUP)
    load_queries = _query_loader(P, S, PIECE)

    @cuda.jit(device=True, inline=True)
    def lane_offset(row0, warp, gid, tig, u):
        """Index offset of the first byte this lane reads of tile u (the group's first token is row
        row0 of the index): the token of row gid in slot tig % S, chunk tig // S; the token of row
        gid + 8 is 8 P further."""
        return (row0 + (warp * TPW + u) * TT + gid + 16 * (tig % S)) * P + pair_at(tig // S, 0)

    @cuda.jit(device=True, inline=True)
    def word_offset(w):
        """Byte offset of a lane's index word w from its word 0 (w a multiple of FW in lean)."""
        return pair_at(0, 4 * w)

    @cuda.jit(device=True, inline=True)
    def fetch_tile(index, row0, warp, gid, tig, u, wa, wb):
        """Start the loads of this lane's index words of its tile u of the group whose first token
        is row row0 of the index (wa, wb: the tokens of rows gid, gid + 8 in slot tig % S, chunk
        tig // S). Nothing waits for them here."""
        oa = lane_offset(row0, warp, gid, tig, u)
        ob = oa + 8 * P
        if WIDE:
            for w4 in range(NWD // 4):
                x0, x1, x2, x3 = ld_u32x4(index, oa + 16 * w4)
                wa[u, 4 * w4] = x0
                wa[u, 4 * w4 + 1] = x1
                wa[u, 4 * w4 + 2] = x2
                wa[u, 4 * w4 + 3] = x3
                y0, y1, y2, y3 = ld_u32x4(index, ob + 16 * w4)
                wb[u, 4 * w4] = y0
                wb[u, 4 * w4 + 1] = y1
                wb[u, 4 * w4 + 2] = y2
                wb[u, 4 * w4 + 3] = y3
        else:
            for w in range(NWD):
                wa[u, w] = ld_u32(index, oa + 4 * w)
                wb[u, w] = ld_u32(index, ob + 4 * w)

    @cuda.jit(device=True, inline=True)
    def fetch_words(index, row0, warp, gid, tig, w, wa, wb):
        """lean: start the loads of index words w .. w + FW - 1 of every tile of this lane (group
        starting at index row row0)."""
        for u in range(TPW):
            oa = lane_offset(row0, warp, gid, tig, u) + word_offset(w)
            ob = oa + 8 * P
            if FW == 4:
                wa[u, w], wa[u, w + 1], wa[u, w + 2], wa[u, w + 3] = ld_u32x4(index, oa)
                wb[u, w], wb[u, w + 1], wb[u, w + 2], wb[u, w + 3] = ld_u32x4(index, ob)
            elif FW == 2:
                wa[u, w], wa[u, w + 1] = ld_u32x2(index, oa)
                wb[u, w], wb[u, w + 1] = ld_u32x2(index, ob)
            else:
                wa[u, w] = ld_u32(index, oa)
                wb[u, w] = ld_u32(index, ob)

    @cuda.jit(device=True, inline=True)
    def fetch_params(r_min, r_step, phi_min, phi_step, bh, g, n_groups, tid, pq, rq):
        """Start the loads of group g's angle parameters of the table entries this thread builds
        (pq) and radius parameters of the pair it prepares (rq)."""
        pbase = (int64(bh) * n_groups + g) * P
        if EVEN:
            pb = pbase + tid // QPR                 # the row of quad 0; quad it is it * RPI rows on
            for it in range(NIT_T):
                pq[it, 0] = ldg_f32(phi_min, pb + it * RPI)
                pq[it, 1] = ldg_f32(phi_step, pb + it * RPI)
        else:
            for it in range(NIT_T):
                e = it * NT + tid
                if ALL_T or e < QUADS:
                    pq[it, 0] = ldg_f32(phi_min, pbase + e // QPR)
                    pq[it, 1] = ldg_f32(phi_step, pbase + e // QPR)
        for it in range(NIT_P):
            j = it * NT + tid
            if ALL_P or j < P:
                rq[it, 0] = ldg_f32(r_min, pbase + j)
                rq[it, 1] = ldg_f32(r_step, pbase + j)

    @cuda.jit(device=True, inline=True)
    def fetch(index, r_min, r_step, phi_min, phi_step, bh, g, n_groups, warp, gid, tig, tid, wa, wb, pq, rq):
        """Start all loads of group g: the index words of every tile of this lane, then the parameters."""
        row0 = (int64(bh) * n_groups + g) * G
        for u in range(TPW):
            fetch_tile(index, row0, warp, gid, tig, u, wa, wb)
        fetch_params(r_min, r_step, phi_min, phi_step, bh, g, n_groups, tid, pq, rq)

    @cuda.jit(device=True, inline=True)
    def derive(pq, rq, tid, check, flags):
        """In place: the loaded parameters become what build needs, (phi_min + step / 2 - pi, step)
        and -(r_min + step / 2, step); check: raise the overflow flag if the largest radius is beyond
        float16. Done as soon as the loads have arrived, so that build (after the next group's index
        loads are issued) reads only registers no load is pending on: ptxas puts all global loads
        on one scoreboard, so a first use of a loaded value waits for every load issued before it."""
        for it in range(NIT_T):
            ps = pq[it, 1]
            pq[it, 0] = (pq[it, 0] + FHALF * ps) - PI32
        for it in range(NIT_P):
            lo = rq[it, 0]
            st = rq[it, 1]
            if check and (ALL_P or it * NT + tid < P) and not (fma(st, RSCALE, lo) < F16_MAX):
                flags[0] = 1
            rq[it, 0] = -fma(FHALF, st, lo)         # also where nothing was loaded (j >= P, unused):
            rq[it, 1] = -st                         # conditional writes would keep the loads pending

    @cuda.jit(device=True, inline=True)
    def zero_params(pq, rq, npq, nrq):
        """Simulator only. derive also runs on parameters that were not loaded (threads with no
        table entries, e >= QUADS, or no pair, j >= P; the block's last group) and whose results
        nothing reads: harmless on the GPU, but the simulator starts local arrays with arbitrary
        bits, and the suite turns its overflow and NaN warnings into errors."""
        for it in range(NIT_T):
            pq[it, 0] = F0
            pq[it, 1] = F0
            npq[it, 0] = F0
            npq[it, 1] = F0
        for it in range(NIT_P):
            rq[it, 0] = F0
            rq[it, 1] = F0
            nrq[it, 0] = F0
            nrq[it, 1] = F0

    @cuda.jit(device=True, inline=True)
    def build(tab, rcs, buf, tid, pq, rq):
        """Table buffer buf: (cos, sin) of every bin angle minus pi, i.e. -(cos, sin) of the bin angle
        (4 consecutive bins a thread and store), and radius constants -(step, r_min + step / 2) of
        each pair as one float16x2. The two negations cancel exactly in k = r_hat * (cos, sin), and
        keep the fast sin/cos arguments in [-pi, pi] without a negation of each of their results."""
        for it in range(NIT_T):
            e = it * NT + tid
            if ALL_T or e < QUADS:
                t0 = (e % QPR) * 4
                if EVEN:                            # pair it * RPI + t: see EVEN
                    r0 = it * RPI
                    t = tid // QPR
                    if T_IN_ROW:                    # (W-GPU) spares ptxas the map of t
                        word = chunk_of(r0) * (STRIDE // 4) + (row_of(r0) + t) * NTAB + (tid % QPR) * 4
                    else:
                        word = ((chunk_of(r0) + chunk_of(t)) * (STRIDE // 4) + (row_of(r0) + row_of(t)) * NTAB
                                + (tid % QPR) * 4)
                else:
                    j = e // QPR
                    word = chunk_of(j) * (STRIDE // 4) + row_of(j) * NTAB + t0
                ps = pq[it, 1]
                x0 = fma(float32(t0), ps, pq[it, 0])
                x1 = x0 + ps
                x2 = fma(float32(2.0), ps, x0)
                x3 = fma(float32(3.0), ps, x0)
                sts_u32x4(tab, buf * TABN + word,
                          h2_pack(fast_cos(x0), fast_sin(x0)), h2_pack(fast_cos(x1), fast_sin(x1)),
                          h2_pack(fast_cos(x2), fast_sin(x2)), h2_pack(fast_cos(x3), fast_sin(x3)))
        for it in range(NIT_P):
            j = it * NT + tid
            if ALL_P or j < P:
                stg(rcs, buf * NRC + chunk_of(j) * (CP + RPAD) + row_of(j), h2_pack(rq[it, 1], rq[it, 0]))

    @cuda.jit(device=True, inline=True)
    def split_base(addr):
        """(base, cb) of decode_pair: with PRMT_LOOKUP the table chunk's address without its low
        byte, and that byte in every byte of cb; else (addr, 0)."""
        if PRMT_LOOKUP:
            return addr & uint32(0xFFFFFF00), (addr & uint32(0xFF)) * uint32(0x01010101)
        return addr, uint32(0)

    @cuda.jit(device=True, inline=True)
    def kstep(tab, xch, rc0, rc1, xa, xb, s, base, cb, sel0, magic, q0, q1, c0, c1, c2, c3):
        """k-step s of one tile (index words xa, xb of the tokens of rows gid, gid + 8 in slot
        tig % S): column pair tig <- pair 2 s of chunk tig // S (byte 2 (s % 2) of the words,
        radius constants rc0), column pair tig + 4 <- the next pair (rc1); C += A B with
        B = (q0, q1)."""
        ka0, kb0 = decode_pair(tab, rc0, xa, xb, 2 * (s & 1), base, cb, sel0, 2 * s, magic)
        ka1, kb1 = decode_pair(tab, rc1, xa, xb, 2 * (s & 1) + 1, base, cb, sel0, 2 * s + 1, magic)
        return mma_16816(xch, ka0, kb0, ka1, kb1, q0, q1, c0, c1, c2, c3)

    @cuda.jit(device=True, inline=True)
    def kblock(tab, xch, bq, rcs, acc, wa, wb, v, lane, rbase, base, cb, sel0, magic):
        """lean: k-steps 2 FW v .. 2 FW (v + 1) - 1 of every tile of this warp (index words FW v ..
        FW (v + 1) - 1), added into acc."""
        for s2 in range(2 * FW):
            s = 2 * FW * v + s2
            w = s >> 1
            q0, q1 = lds_u32x2(bq, 2 * (32 * s + lane))
            rc0, rc1 = lds_u32x2(rcs, rbase + 2 * s)
            for u in range(TPW):
                acc[u, 0], acc[u, 1], acc[u, 2], acc[u, 3] = kstep(
                    tab, xch, rc0, rc1, wa[u, w], wb[u, w], s, base, cb, sel0, magic, q0, q1,
                    acc[u, 0], acc[u, 1], acc[u, 2], acc[u, 3])

    @cuda.jit(device=True, inline=True)
    def take_params(pq, rq, npq, nrq):
        """The next group's parameters (npq, nrq, loaded during this group) become the current ones."""
        for it in range(NIT_T):
            pq[it, 0] = npq[it, 0]
            pq[it, 1] = npq[it, 1]
        for it in range(NIT_P):
            rq[it, 0] = nrq[it, 0]
            rq[it, 1] = nrq[it, 1]

    @cuda.jit(device=True, inline=True)
    def store_scores(out, out_len, n_heads, bh, g, warp, gid, tig, u, c0, c1, c2, c3):
        """C of tile u: rows gid, gid + 8, columns 2 tig, 2 tig + 1: heads (2 tig) % HS and the next
        of token slot 2 tig // HS."""
        tok = int64(g) * G + (warp * TPW + u) * TT + gid + 16 * ((2 * tig) // HS)
        h0 = cuda.blockIdx.z * HS + (2 * tig) % HS
        o = (int64(bh) * n_heads + h0) * out_len + tok
        if h0 < n_heads:
            stg(out, o, c0)
            stg(out, o + 8, c2)
        if h0 + 1 < n_heads:
            stg(out, o + out_len, c1)
            stg(out, o + out_len + 8, c3)

    jit = cuda.jit(max_registers=max_registers) if (max_registers and not SIM) else cuda.jit

    @jit
    def polar_scores_mma(index, r_min, r_step, phi_min, phi_step, queries, x_stride, y_offset,
                         n_groups, n_heads, out, out_len, flags, magic, gpb):
        # index (BH * Lq * P,) uint8; r_min.. (BH * n_groups * P,) float32
        # queries (BH * M * d,) float32; out (BH * M * out_len,) float32; flags (1,) int32;
        # gpb: groups a block (block-uniform trip count)
        # Tables and radius constants are double-buffered (group parity): one barrier a group.
        tab = cuda.shared.array(TABN2, uint32, alignment=TAB_ALIGN)
        rcs = cuda.shared.array(NRC2, uint32, alignment=SHARED_ALIGN)
        xch = cuda.shared.array((NXCH, 6), uint32)
        kc = cuda.shared.array(1, uint32)          # SEL0: decode_pair's sel0
        bh = cuda.blockIdx.y
        tid = cuda.threadIdx.x
        if tid == 0:                                # published by the group loop's first barrier
            kc[0] = uint32(SEL0)
        lane = tid % 32
        warp = tid // 32
        gid = lane >> 2
        tig = lane & 3
        g0 = cuda.blockIdx.x * gpb
        # registers for the current group and the next one (loads in flight while scoring)
        wa = cuda.local.array((TPW, NWD), uint32)
        wb = cuda.local.array((TPW, NWD), uint32)
        na = cuda.local.array((TPW, NWD), uint32)
        nb = cuda.local.array((TPW, NWD), uint32)
        pq = cuda.local.array((NIT_T, 2), float32)
        rq = cuda.local.array((NIT_P, 2), float32)
        npq = cuda.local.array((NIT_T, 2), float32)
        nrq = cuda.local.array((NIT_P, 2), float32)
        if SIM:
            zero_params(pq, rq, npq, nrq)
        if g0 < n_groups:                           # always, with the launcher's grid
            fetch(index, r_min, r_step, phi_min, phi_step, bh, g0, n_groups, warp, gid, tig, tid, wa, wb, pq, rq)
        derive(pq, rq, tid, g0 < n_groups, flags)
        b0 = cuda.local.array(KS, uint32)
        b1 = cuda.local.array(KS, uint32)
        if load_queries(queries, bh, n_heads, gid, tig, x_stride, y_offset, b0, b1):
            flags[0] = 1
        n_mine = min(gpb, n_groups - g0)            # block-uniform; a trip count, not an exit in the
        for gb in range(n_mine):                    # loop (an EXIT waits for every pending load)
            g = g0 + gb
            buf = gb & 1
            build(tab, rcs, buf, tid, pq, rq)
            cuda.syncthreads()
            sel0 = kc[0]
            if gb + 1 < n_mine:
                fetch(index, r_min, r_step, phi_min, phi_step, bh, g + 1, n_groups, warp, gid, tig, tid,
                      na, nb, npq, nrq)
            base, cb = split_base(smem_addr(tab) + uint32(buf * TABN * 4 + tig * STRIDE))
            rbase = buf * NRC
            for u in range(TPW):
                c0 = F0
                c1 = F0
                c2 = F0
                c3 = F0
                for s in range(KS):
                    w = s >> 1
                    rc0, rc1 = lds_u32x2(rcs, rbase + tig * CP + 2 * s)
                    c0, c1, c2, c3 = kstep(tab, xch, rc0, rc1, wa[u, w], wb[u, w], s, base, cb, sel0, magic,
                                           b0[s], b1[s], c0, c1, c2, c3)
                store_scores(out, out_len, n_heads, bh, g, warp, gid, tig, u, c0, c1, c2, c3)
            for u in range(TPW):
                for w in range(NWD):
                    wa[u, w] = na[u, w]
                    wb[u, w] = nb[u, w]
            derive(npq, nrq, tid, gb + 1 < n_mine, flags)
            take_params(pq, rq, npq, nrq)

    @jit
    def polar_scores_mma_lean(index, r_min, r_step, phi_min, phi_step, queries, x_stride, y_offset,
                              n_groups, n_heads, out, out_len, flags, magic, gpb):
        # arguments as polar_scores_mma's
        tab = cuda.shared.array(TABN2, uint32, alignment=TAB_ALIGN)
        rcs = cuda.shared.array(NRC2, uint32, alignment=SHARED_ALIGN)
        bq = cuda.shared.array(NBQ, uint32, alignment=SHARED_ALIGN)
        xch = cuda.shared.array((NXCH, 6), uint32)
        kc = cuda.shared.array(1, uint32)          # SEL0: decode_pair's sel0
        bh = cuda.blockIdx.y
        tid = uint32(cuda.threadIdx.x)              # unsigned: index arithmetic needs no sign fixes
        if tid == 0:                                # published by the group loop's first barrier
            kc[0] = uint32(SEL0)
        lane = tid % 32
        warp = tid // 32
        gid = lane >> 2
        tig = lane & 3
        chunk = tig // uint32(S)                    # the pairs a lane decodes
        g0 = cuda.blockIdx.x * gpb
        wa = cuda.local.array((TPW, NWD), uint32)
        wb = cuda.local.array((TPW, NWD), uint32)
        pq = cuda.local.array((NIT_T, 2), float32)
        rq = cuda.local.array((NIT_P, 2), float32)
        npq = cuda.local.array((NIT_T, 2), float32)
        nrq = cuda.local.array((NIT_P, 2), float32)
        if SIM:
            zero_params(pq, rq, npq, nrq)
        acc = cuda.local.array((TPW, 4), float32)
        if g0 < n_groups:                           # always, with the launcher's grid
            for v in range(NWD // FW):
                fetch_words(index, (int64(bh) * n_groups + g0) * G, warp, gid, tig, FW * v, wa, wb)
            fetch_params(r_min, r_step, phi_min, phi_step, bh, g0, n_groups, tid, pq, rq)
        if warp == 0:                               # the group loop's first barrier publishes bq
            b0 = cuda.local.array(KS, uint32)
            b1 = cuda.local.array(KS, uint32)
            if load_queries(queries, bh, n_heads, gid, tig, x_stride, y_offset, b0, b1):
                flags[0] = 1
            for s in range(KS):
                sts_u32x2(bq, 2 * (32 * s + lane), b0[s], b1[s])
        # after the query loads (one wait for both), and unconditional: under a branch ptxas would
        # keep the loads pending into the group loop and wait for the scoreboard at every build
        derive(pq, rq, tid, g0 < n_groups, flags)
        n_mine = min(gpb, n_groups - g0)            # block-uniform; a trip count, not an exit in the
        for gb in range(n_mine):                    # loop (an EXIT waits for every pending load)
            g = g0 + gb
            buf = gb & 1
            build(tab, rcs, buf, tid, pq, rq)
            cuda.syncthreads()
            sel0 = kc[0]
            more = gb + 1 < n_mine
            row1 = (int64(bh) * n_groups + g + 1) * G
            base, cb = split_base(smem_addr(tab) + uint32(buf * TABN * 4 + chunk * STRIDE))
            rbase = buf * NRC + (CP + RPAD) * chunk
            for u in range(TPW):
                for k in range(4):
                    acc[u, k] = F0
            # k-steps 2 FW v .. 2 FW (v + 1) - 1 read words FW v .. FW (v + 1) - 1; once a block of
            # them is done, the next group's words are loaded into those registers. All global loads
            # share one scoreboard (ptxas), so a first use of a loaded value waits for every load
            # issued before it: the next group's parameters are loaded only after the first use of
            # this group's words (the first block), and derived after the middle block, so that the
            # build after the last loads reads only resolved registers.
            kblock(tab, xch, bq, rcs, acc, wa, wb, 0, lane, rbase, base, cb, sel0, magic)
            if more:
                fetch_params(r_min, r_step, phi_min, phi_step, bh, g + 1, n_groups, tid, npq, nrq)
            for v in range(1, VH + 1):
                if more:
                    fetch_words(index, row1, warp, gid, tig, FW * (v - 1), wa, wb)
                kblock(tab, xch, bq, rcs, acc, wa, wb, v, lane, rbase, base, cb, sel0, magic)
            derive(npq, nrq, tid, more, flags)
            for v in range(VH + 1, NV):
                if more:
                    fetch_words(index, row1, warp, gid, tig, FW * (v - 1), wa, wb)
                kblock(tab, xch, bq, rcs, acc, wa, wb, v, lane, rbase, base, cb, sel0, magic)
            if more:
                fetch_words(index, row1, warp, gid, tig, FW * (NV - 1), wa, wb)
            for u in range(TPW):
                store_scores(out, out_len, n_heads, bh, g, warp, gid, tig, u, acc[u, 0], acc[u, 1], acc[u, 2],
                             acc[u, 3])
            take_params(pq, rq, npq, nrq)

    return polar_scores_mma_lean if lean else polar_scores_mma
