"""Integer dot-product schedules: int8 convs and matmuls on the CPU's int8 instructions.

Without them an int8 x int8 -> int32 kernel vectorizes as 8 int32 lanes, each product
widened first: about half as fast as the float kernel it replaces. On x86 with AVX2 (and
no VNNI, like this project's machines) the instruction pair onnxruntime's MLAS uses does
four products per int32 lane:

    vpmaddubsw  uint8 x int8 -> int16, adjacent pairs summed (saturating)
    vpmaddwd    int16 x 1    -> int32, adjacent pairs summed

so one step accumulates an 8 (output channels) x 4 (input channels) block. The int16
pair sum is exact only while ``|a0*w0 + a1*w1| <= 32767``: uint8 activations (0..255)
with weights in [-64, 64], i.e. 7-bit weights (``quantize{reduce-range}``).

The contract with ``int8.py``: an integer kernel reads **uint8** activations only when
its weights fit in [-64, 64]; it shifts other activations to int8. So the schedule can
decide from dtypes alone (it never sees the weights' values): a uint8 x int8 kernel
takes the dot product, an int8 x int8 one keeps the generic rule.
"""

from __future__ import annotations

from functools import cache

DOT_LANES = 8
"""int32 accumulators per 256-bit register."""
DOT_DEPTH = 4
"""Input channels (products) each int32 lane sums per step."""
DOT_U8I8_AVX2 = "edgec_dot_8x4_u8i8i32_avx2"
DOT_WEIGHT_LIMIT = 64
"""The largest |weight| for which the int16 pair sums cannot saturate with uint8 activations."""


@cache
def register_intrinsics() -> None:
    """Register the AVX2 8x4 uint8 x int8 -> int32 dot product with TVM (once per process)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(A: T.Buffer((4,), "uint8", offset_factor=1),
                    B: T.Buffer((8, 4), "int8", offset_factor=1),
                    C: T.Buffer((8,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    @T.prim_func(s_tir=True)
    def implementation(A: T.Buffer((4,), "uint8", offset_factor=1),
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

    TensorIntrin.register(DOT_U8I8_AVX2, description, implementation)


def is_u8i8_dot(sch, block) -> bool:
    """A block reading uint8 activations and an int8 weight into int32: the dot product's shape."""
    realize = sch.get(block)
    if len(realize.reads) != 2 or len(realize.writes) != 1 or str(realize.writes[0].source.dtype) != "int32":
        return False
    return [str(r.source.dtype) for r in realize.reads] == ["uint8", "int8"]


def dot_tile(width: int, channels: int) -> tuple[int, int]:
    """(channel vectors, output pixels) of the register tile: the most accumulators, up to 12
    (swept on znver3: 4 vectors x 3 pixels and 2 x 6 were best, one vector x 3 lost 20-35%),
    with a pixel count that divides the width. A ragged tile would put a condition on the
    block, and tensorize only matches the bare dot product: a 7-wide map takes 1 vector x 7."""
    best = (0, 1, 1)
    for vectors, limit in ((4, 3), (2, 6), (1, 12)):
        if channels % (vectors * DOT_LANES) == 0:
            pixels = max(p for p in range(1, min(limit, width) + 1) if width % p == 0)
            best = max(best, (vectors * pixels, vectors, pixels))
    return best[1], best[2]


def conv2d_nhwc_u8i8(sch, conv, epilogue) -> bool:
    """The conv rule's register tile with the 8x4 dot product inside: ``pixels`` output pixels x
    ``vectors`` x 8 output channels of int32 accumulators, the kernel window and input channels
    (in steps of 4) outside. False, with the schedule untouched, when the shape does not fit
    (input channels not a multiple of 4, like an RGB stem; output channels not of 8)."""
    from .cpu_schedules import (
        _extent,
        _is_parameter,
        _pack_weight,
        _parallel,
        _vectorize_innermost,
        _work,
    )

    _, _, w, co, _, _, rc = sch.get_loops(conv)
    width, channels, depth = _extent(sch, w), _extent(sch, co), _extent(sch, rc)
    if None in (width, channels, depth) or channels % DOT_LANES or depth % DOT_DEPTH:
        return False
    if not _is_parameter(sch, sch.get(conv).reads[1].source):
        return False
    register_intrinsics()
    work = _work(sch, conv)
    vectors, pixels = dot_tile(width, channels)
    tile = vectors * DOT_LANES
    # HWIO -> (channel block, H, W, input / 4, channel in block, input % 4): each 8 x 4 block the
    # instruction reads is 32 contiguous bytes.
    _pack_weight(sch, conv, lambda kh, kw, ci, c: (c // tile, kh, kw, ci // DOT_DEPTH, c % tile, ci % DOT_DEPTH))
    n, h, w, co, rh, rw, rc = sch.get_loops(conv)
    co_o, co_v, co_lanes = sch.split(co, [None, vectors, DOT_LANES])
    w_o, w_i = sch.split(w, [None, pixels])
    rc_o, rc_i = sch.split(rc, [None, DOT_DEPTH])
    sch.reorder(n, co_o, h, w_o, rh, rw, rc_o, w_i, co_v, co_lanes, rc_i)
    _parallel(sch, sch.fuse(n, co_o, h), work)
    if epilogue is not None:
        sch.set_scope(conv, 0, "local")
        sch.reverse_compute_at(epilogue, w_o)
        _vectorize_innermost(sch, epilogue, DOT_LANES)
    else:
        store = sch.cache_write(conv, 0, "local")
        sch.reverse_compute_at(store, w_o)
        _vectorize_innermost(sch, store, DOT_LANES)
    init = sch.decompose_reduction(conv, rh)
    _vectorize_innermost(sch, init, DOT_LANES)
    sch.unroll(w_i)
    sch.unroll(co_v)
    sch.tensorize(co_lanes, DOT_U8I8_AVX2)
    return True
