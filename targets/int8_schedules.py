"""Integer dot-product schedules: int8 convs on the CPU's int8 dot-product instructions.

Without them an int8 x int8 -> int32 conv vectorizes as int32 lanes, each product
widened first: about half as fast as the float kernel it replaces. Each instruction here
sums four products into every int32 lane, so one step accumulates a block of output
channels (one register of int32 lanes) x 4 input channels:

- x86 with AVX2 (no VNNI, like this project's machines), the pair onnxruntime's MLAS uses:
  ``vpmaddubsw`` (uint8 x int8 -> int16, adjacent pairs summed, saturating), then
  ``vpmaddwd`` with ones (int16 -> int32, pairs summed): 8 channels x 4. The int16 pair
  sum is exact only while ``|a0*w0 + a1*w1| <= 32767``: uint8 activations (0..255) with
  weights in [-64, 64], i.e. 7-bit weights (``quantize{reduce-range}``).
- x86 with AVX-512 VNNI: ``vpdpbusd``, uint8 x int8 summed straight into int32, exact for
  any weights: 16 channels x 4; on 256-bit registers (AVX512VL) 8 channels x 4, for output
  channel counts 16 does not divide (24, 40, 1000).
- arm64 with ``+dotprod`` (Cortex-A76 and later): ``sdot``, int8 x int8 summed straight
  into int32, exact for any weights: 4 channels x 4.

The contract with ``int8.py`` (``dot_operand``): an integer conv reads the activation
dtype of the target's dot product only when the product is exact for its weights; it
shifts other activations by 128 to the other dtype. So the schedule can decide from
dtypes alone (it never sees the weights' values): on AVX2 a uint8 x int8 conv takes the
dot product and an int8 x int8 one the generic rule; with VNNI every conv reads uint8 and
takes ``vpdpbusd``; on arm64 every int8 x int8 conv takes ``sdot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class DotProduct:
    """One target's int8 dot-product instruction, as a TVM tensor intrinsic."""

    intrinsic: str
    activation: str
    """The activation dtype it multiplies (the weight is int8)."""
    lanes: int
    """int32 accumulators per vector register: the output channels of one step."""
    depth: int
    """Input channels (products) each lane sums per step."""
    weight_limit: int | None
    """The largest |weight| for which it is exact; None: any int8."""
    registers: int
    """Vector registers, of which about three quarters hold the tile's accumulators."""
    narrow: DotProduct | None = None
    """The same instruction on half-width registers, for output channels that its lanes divide
    and the full width's do not (MobileNetV2's 24-channel projections: 1/4 of its int8 time on
    the generic widened int32 loop, Zen 4)."""

    def exact_for(self, weight) -> bool:
        import numpy as np

        return self.weight_limit is None or int(np.abs(weight.astype(np.int32)).max(initial=0)) <= self.weight_limit


AVX2_U8I8 = DotProduct("edgec_dot_8x4_u8i8i32_avx2", "uint8", lanes=8, depth=4, weight_limit=64, registers=16)
AVX512_VNNI_256 = DotProduct("edgec_dot_8x4_u8i8i32_vnni256", "uint8", lanes=8, depth=4, weight_limit=None, registers=32)
AVX512_VNNI = DotProduct("edgec_dot_16x4_u8i8i32_vnni", "uint8", lanes=16, depth=4, weight_limit=None, registers=32,
                         narrow=AVX512_VNNI_256)
NEON_SDOT = DotProduct("edgec_dot_4x4_i8i8i32_sdot", "int8", lanes=4, depth=4, weight_limit=None, registers=32)


def dot_product_for(target) -> DotProduct | None:
    """The dot product a CPU target's features offer, if any."""
    if target.device != "cpu":
        return None
    if "avx512_vnni" in target.features:
        return AVX512_VNNI
    if "avx2" in target.features:
        return AVX2_U8I8
    if "asimddp" in target.features:
        return NEON_SDOT
    return None


@cache
def register_intrinsics() -> None:
    """Register the dot products with TVM (once per process). The accumulator buffer is
    ``local``, the scope the register tile keeps it in."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    def description(activation: str, lanes: int):
        @T.prim_func(s_tir=True)
        def desc(A: T.Buffer((4,), activation, offset_factor=1),
                 B: T.Buffer((lanes, 4), "int8", offset_factor=1),
                 C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
                T.writes(C[0:lanes])
                for i in T.serial(0, lanes):
                    for k in T.serial(0, 4):
                        with T.sblock("update"):
                            vi, vk = T.axis.remap("SR", [i, k])
                            C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

        return desc

    @T.prim_func(s_tir=True)
    def avx2(A: T.Buffer((4,), "uint8", offset_factor=1),
             B: T.Buffer((8, 4), "int8", offset_factor=1),
             C: T.Buffer((8,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            quad = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            activations = T.reinterpret(T.broadcast(quad, 8), dtype="uint8x32")
            pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                                            activations, B.vload([0, 0], dtype="int8x32"), dtype="int16x16")
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1), dtype="int32x8")

    def summed_into_int32(activation: str, lanes: int, instruction: str):
        """``C = instruction(C, A broadcast, B)``: each lane's four products summed straight into
        int32 in one instruction (VNNI's vpdpbusd, arm64's sdot)."""
        quad_dtype, wide_dtype, out_dtype = f"{activation}x4", f"{activation}x{4 * lanes}", f"int32x{lanes}"
        weight_dtype = f"int8x{4 * lanes}"

        @T.prim_func(s_tir=True)
        def impl(A: T.Buffer((4,), activation, offset_factor=1),
                 B: T.Buffer((lanes, 4), "int8", offset_factor=1),
                 C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
                T.writes(C[0:lanes])
                quad = T.reinterpret(A.vload([0], quad_dtype), dtype="int32")
                activations = T.reinterpret(T.broadcast(quad, lanes), dtype=wide_dtype)
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(instruction), C.vload([0], dtype=out_dtype), activations,
                    B.vload([0, 0], dtype=weight_dtype), dtype=out_dtype)

        return impl

    TensorIntrin.register(AVX2_U8I8.intrinsic, description("uint8", 8), avx2)
    TensorIntrin.register(AVX512_VNNI.intrinsic, description("uint8", 16),
                          summed_into_int32("uint8", 16, "llvm.x86.avx512.vpdpbusd.512"))
    TensorIntrin.register(AVX512_VNNI_256.intrinsic, description("uint8", 8),
                          summed_into_int32("uint8", 8, "llvm.x86.avx512.vpdpbusd.256"))
    TensorIntrin.register(NEON_SDOT.intrinsic, description("int8", 4),
                          summed_into_int32("int8", 4, "llvm.aarch64.neon.sdot.v4i32.v16i8"))


def is_dot_block(sch, block, dot: DotProduct) -> bool:
    """A block reading ``dot``'s activation dtype and an int8 weight into int32."""
    realize = sch.get(block)
    if len(realize.reads) != 2 or len(realize.writes) != 1 or str(realize.writes[0].source.dtype) != "int32":
        return False
    return [str(r.source.dtype) for r in realize.reads] == [dot.activation, "int8"]


def dot_tile(width: int, channels: int, dot: DotProduct) -> tuple[int, int]:
    """(channel vectors, output pixels) of the register tile: the most accumulators, up to
    three quarters of the registers (AVX2, swept on znver3: 4 vectors x 3 pixels and 2 x 6
    were best, one vector x 3 lost 20-35%), with a pixel count that divides the width. A
    ragged tile would put a condition on the block, and tensorize only matches the bare dot
    product: a 7-wide map on AVX2 takes 1 vector x 7."""
    accumulators = dot.registers * 3 // 4
    best = (0, 1, 1)
    for vectors in (4, 3, 2, 1):
        if channels % (vectors * dot.lanes) == 0:
            limit = accumulators // vectors
            pixels = max(p for p in range(1, min(limit, width) + 1) if width % p == 0)
            best = max(best, (vectors * pixels, vectors, pixels))
    return best[1], best[2]


def conv2d_nhwc_dot(sch, conv, epilogue, dot: DotProduct) -> bool:
    """The conv rule's register tile with the dot product inside: ``pixels`` output pixels x
    ``vectors`` registers of int32 accumulators, the kernel window and input channels (in steps
    of 4) outside. False, with the schedule untouched, when the shape does not fit (input
    channels not a multiple of 4, output channels not of a register's lanes)."""
    from .cpu_schedules import (
        _accumulate_locally,
        _extent,
        _is_parameter,
        _pack_weight,
        _parallel,
        _vectorize_innermost,
        _work,
    )

    _, _, w, co, _, _, rc = sch.get_loops(conv)
    width, channels, depth = _extent(sch, w), _extent(sch, co), _extent(sch, rc)
    if channels and channels % dot.lanes and dot.narrow and channels % dot.narrow.lanes == 0:
        dot = dot.narrow
    if None in (width, channels, depth) or channels % dot.lanes or depth % dot.depth:
        return False
    if not _is_parameter(sch, sch.get(conv).reads[1].source):
        return False
    register_intrinsics()
    work = _work(sch, conv)
    vectors, pixels = dot_tile(width, channels, dot)
    tile = vectors * dot.lanes
    # HWIO -> (channel block, H, W, input / 4, channel in block, input % 4): each lanes x 4 block
    # the instruction reads is contiguous.
    _pack_weight(sch, conv, lambda kh, kw, ci, c: (c // tile, kh, kw, ci // dot.depth, c % tile, ci % dot.depth))
    n, h, w, co, rh, rw, rc = sch.get_loops(conv)
    co_o, co_v, co_lanes = sch.split(co, [None, vectors, dot.lanes])
    w_o, w_i = sch.split(w, [None, pixels])
    rc_o, rc_i = sch.split(rc, [None, dot.depth])
    sch.reorder(n, co_o, h, w_o, rh, rw, rc_o, w_i, co_v, co_lanes, rc_i)
    _parallel(sch, sch.fuse(n, co_o, h), work)
    _accumulate_locally(sch, conv, epilogue, w_o, dot.lanes)
    init = sch.decompose_reduction(conv, rh)
    _vectorize_innermost(sch, init, dot.lanes)
    sch.unroll(w_i)
    sch.unroll(co_v)
    sch.tensorize(co_lanes, dot.intrinsic)
    return True
