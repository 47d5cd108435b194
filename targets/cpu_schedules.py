"""Rule-based CPU schedules: fast code from TVM without tuning.

TVM 0.27's default CPU pipeline schedules nothing: conv2d and dense run as naive
serial loop nests, about 100x slower than onnxruntime. ``schedule_for_cpu``
rewrites a freshly imported Relax module so that every kernel is scheduled by a
small set of rules before ``tvm.compile``, which then leaves them alone
(``tirx.is_scheduled``).

Pipeline, in order (each step named in the notes when it fails):

1. ``sum-of-stack``: ONNX ``Sum`` (and ``Max``, ``Min``) imports as ``sum(stack(broadcast_to(x)...))``;
   it becomes a chain of ``add`` (ConvertLayout cannot handle the 5-D stack).
   Then ``densify-grouped-conv``: the rare grouped conv that ``grouped_conv_plan``
   densifies becomes a dense one with a block-diagonal weight; and ``clip-as-max-min``:
   clip (HardSwish, HardSigmoid) as maximum and minimum, which ConvertLayout sees through.
2. ``convert-layout``: conv2d to NHWC activations and HWIO weights, so output
   channels are the contiguous, vectorized axis. Then ``widen-grouped-conv``: a grouped
   conv whose channels per group fill no whole vector gets each group padded to whole
   vectors, the padding dropped after its bias and ReLU.
3. ``lift-weight-transforms``: computations on weights alone (the OIHW->HWIO
   permutes, bias reshapes) move to ``main_transform_params``; it is compiled for
   the host and run once, here, and the module's attached weights are replaced by
   its results. The compiled ``main`` takes the transformed weights.
4. ``fast-math``, then ``legalize-and-fuse``: LegalizeOps, FoldConstant, FuseOps, FuseTIR.
5. ``schedule``: each PrimFunc gets the first rule that applies:

   - ``conv2d-nhwc``: register-blocked output tile of ``ow`` pixels x 2 (1x1: 4) vectors of
     output channels (accumulators in a local buffer), reduction loops outside
     the tile, tile loops unrolled and vectorized, ``(n, co-block, oh)``
     parallel, epilogue (bias, residual add, relu) computed per tile, padding
     materialized by its own parallel loop.
     An integer conv in the dtypes of the target's int8 dot product (AVX2: uint8 x int8
     with 7-bit weights; arm64 ``+dotprod``: int8 x int8; see ``int8.dot_operand``) takes
     ``int8_schedules``' tile instead: the same shape, its inner step one register of
     output channels x 4 input channels on the dot-product instruction.
   - ``depthwise-nhwc``: the same tile for depthwise convs, with the padding
     inlined (the input is read as whole vectors, so the bounds check is cheap);
     and for grouped convs with whole 128-bit vectors per group, within a group.
   - ``matmul``: the same register tile over rows x columns for dense and
     batched matmul.
   - ``reduction-vector-inner``: any reduction whose innermost spatial axis is
     the output's contiguous axis (grouped conv in NHWC, pooling, dense/matmul
     with a KxN weight, reductions over H and W): that axis split into vectors
     and moved inside the reduction loops, outer axes parallel.
   - ``reduction-parallel``: other reductions get parallel outer spatial loops.
   - ``injective``: every other block is fused flat, vectorized and parallel; a copy that
     gathers channels (a widened conv's compaction, a channel shuffle, a concat) first has
     its innermost axis split where its indices divide it.

   Tile sizes come from ``TargetSpec.vector_bits`` (lanes) and
   ``TargetSpec.vector_registers`` (how many output pixels fit the tile). The conv
   and matmul rules also ask for their weights packed by channel block.
6. ``prepack-weights``: those packings become kernels of their own, which lifting
   runs once, here, like step 3.

A kernel no rule can schedule still compiles (TVM's default, serial) and is
reported in the returned notes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .int8_schedules import DotProduct

logger = logging.getLogger(__name__)

PARALLEL_MIN_ELEMENTS = 4096
"""Injective kernels smaller than this run serial: a parallel launch costs more."""
PARALLEL_MIN_WORK = 65536
"""Reductions with fewer loop iterations than this (a tiny dense, a small pool) run serial:
waking the thread pool costs several microseconds, more than the work."""


@dataclass(frozen=True)
class Tiles:
    """Register tile parameters for one target."""

    lanes: int
    """float32 lanes in one vector register."""
    registers: int
    dot: DotProduct | None = None
    """The target's int8 dot product (``int8_schedules``), if it has one."""

    @classmethod
    def for_target(cls, target) -> Tiles:
        from .int8_schedules import dot_product_for

        return cls(lanes=max(1, int(target.vector_bits) // 32), registers=int(target.vector_registers),
                   dot=dot_product_for(target))

    def max_output_pixels(self, channel_vectors: int) -> int:
        """Output pixels whose accumulators fit the register file, leaving room for
        the weight vectors and one broadcast input."""
        free = self.registers - channel_vectors - 2
        return max(1, min(12, free // max(1, channel_vectors)))


def schedule_for_cpu(mod, target, database=None, tuned: list[str] | None = None) -> tuple[object, list[str]]:
    """Rewrite an imported Relax module into one whose kernels are all scheduled.

    ``mod`` is what ``from_onnx(..., keep_params_in_input=True)`` returns, before
    ``detach_params``: the weights, attached to ``main`` as its ``params``
    attribute, are transformed here (weight layouts) and the result carries the
    transformed weights the same way, so ``detach_params`` afterwards yields the
    arrays the compiled ``main`` takes, in its parameter order. Without attached
    weights the weight transforms stay in ``main`` (run on every call) and a note
    says so.

    ``database`` (``tuning.TuningRecords``) supplies measured schedules; kernels
    without a record faster than their rule-based schedule get the rules. The names of the
    kernels scheduled from records are appended to ``tuned``.

    Returns the module to hand to ``tvm.compile`` and human-readable notes on the
    kernels left to TVM's default (slow) code.
    """
    notes: list[str] = []
    tiles = Tiles.for_target(target)
    mod = prepare_for_schedules(mod, notes, tiles.lanes)
    mod = _step("schedule", lambda m: _schedule_module(m, tiles, notes, database, target, tuned), mod)
    return _step("prepack-weights", lambda m: _prepack_weights(m, notes), mod), notes


def _prepack_weights(mod, notes: list[str]):
    """Run the weight re-layouts the conv rule asked for once, at compile time.

    The rule marks a block that copies a weight into its packed layout
    (``meta_schedule.layout_rewrite_preproc``); SplitLayoutRewritePreproc moves it into
    its own kernel called on the weight, which lifting then computes now. Without such a
    block there is nothing to do, and the pass is not run: it fails on kernels with no
    compute block under the root (Slice, ScatterElements and MaxUnpool with shapes computed
    at run time)."""
    import tvm
    from tvm import relax

    if not any(isinstance(func, tvm.tirx.PrimFunc) and "layout_rewrite_preproc" in func.script(show_meta=False)
               for _, func in mod.functions_items()):
        return mod
    split = relax.transform.SplitLayoutRewritePreproc()(mod)
    lifted = _lift_weight_transforms(relax.transform.DeadCodeElimination()(split), notes)
    return relax.transform.DeadCodeElimination(["main"])(lifted)  # the packing kernels ran here


def prepare_for_schedules(mod, notes: list[str], lanes: int):
    """The graph-level rewrites before scheduling, ending in fused, unscheduled PrimFuncs.

    Tuning extracts its tasks from this module, so a tuned record matches the
    kernel a later compile schedules exactly."""
    import tvm
    from tvm import relax

    mod = _step("sum-of-stack", _rewrite_sum_of_stack, mod)
    mod = _step("densify-grouped-conv", lambda m: _densify_grouped_conv(m, lanes), mod)
    mod = _step("clip-as-max-min", _clip_as_max_min, mod)
    mod = _step("convert-layout", lambda m: _convert_layout(m, notes), mod)
    mod = _step("widen-grouped-conv", lambda m: _widen_grouped_conv(m, lanes), mod)
    mod = _step("lift-weight-transforms", lambda m: _lift_weight_transforms(m, notes), mod)
    # erf, exp, sigmoid, GELU, tanh and softmax as polynomials that vectorize (LLVM calls libm per lane); the
    # same kind of approximation onnxruntime's MLAS kernels use.
    mod = _step("fast-math", _fast_math, mod)
    return _step("legalize-and-fuse", lambda m: tvm.transform.Sequential([
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])(m), mod)


def _convert_layout(mod, notes: list[str]):
    """conv2d to NHWC/HWIO. TVM's ConvertLayout fails on some ops it meets on the way (Unsqueeze, Squeeze, Range...: "exactly one of the layouts is
    unknown"); then the convs keep NCHW, which is slower but the same result, and a note says so."""
    import tvm
    from tvm import relax

    try:
        return tvm.transform.Sequential([
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}),
            relax.transform.Normalize(),
            relax.transform.DeadCodeElimination(),
        ])(mod)
    except Exception as exc:  # TVM raises many types
        notes.append(f"convs kept in NCHW: TVM's ConvertLayout failed ({str(exc).strip().splitlines()[-1]})")
        return mod


def _fast_math(mod):
    """TVM's FastMathTransform, minus its crash on calls of packed functions (``call.op`` an
    ExternFunc, as Expand with a shape computed at run time imports)."""
    import tvm
    from tvm import relax, topi

    def fast_sigmoid(x):
        """1 / (1 + exp(-x)) on fast_exp: SiLU (EfficientNet's x * sigmoid(x)) and squeeze-and-excitation
        gates otherwise call libm's expf per lane, 5-10x the cost of the conv they are fused into."""
        one = tvm.tirx.const(1.0, x.dtype)
        return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))

    def fast_gelu(x):
        """x * (1 + erf(x / sqrt 2)) / 2 on fast_erf: ONNX's Gelu op (opset 20, ConvNeXt as torch
        exports it) imports as nn.gelu, whose erf is libm's per lane, 4-12x its matmul."""
        half, one = tvm.tirx.const(0.5, x.dtype), tvm.tirx.const(1.0, x.dtype)
        erf = topi.fast_erf(topi.multiply(x, tvm.tirx.const(1 / math.sqrt(2), x.dtype)))
        return topi.multiply(topi.multiply(x, half), topi.add(one, erf))

    fast = {"relax.nn.softmax": lambda call: (topi.nn.fast_softmax, call.args[0], call.attrs.axis),
            "relax.sigmoid": lambda call: (fast_sigmoid, call.args[0]),
            "relax.nn.gelu": lambda call: (fast_gelu, call.args[0]),
            "relax.exp": lambda call: (topi.fast_exp, call.args[0]),
            "relax.erf": lambda call: (topi.fast_erf, call.args[0]),
            "relax.tanh": lambda call: (topi.fast_tanh, call.args[0])}

    @relax.expr_functor.mutator
    class FastMath(relax.PyExprMutator):
        def visit_call_(self, call):
            if isinstance(call.op, tvm.ir.Op) and call.op.name in fast:
                return self.builder_.call_te(*fast[call.op.name](call))
            return super().visit_call_(call)

    mutator = FastMath(mod)
    for global_var, function in mod.functions_items():
        if isinstance(function, relax.Function):
            mutator.builder_.update_func(global_var, mutator.visit_expr(function))
    return mutator.builder_.get()


def _step(name: str, fn, mod):
    try:
        return fn(mod)
    except Exception as exc:  # TVM raises many types; say which step failed
        raise RuntimeError(f"cpu schedules: step '{name}' failed: {exc}") from exc


# --- Relax-level rewrites -------------------------------------------------------------------


def _rewrite_sum_of_stack(mod):
    """``sum(stack([broadcast_to(x_i, s)...], axis=0), axis=0)`` -> ``x_0 + x_1 + ...``, and
    the same for max and min (ONNX Max and Min, e.g. a rewritten ReLU6) with maximum, minimum."""
    import tvm
    import tvm_ffi
    from tvm import relax

    from .int8 import op_name

    PAIRWISE = {"relax.sum": relax.op.add, "relax.max": relax.op.maximum, "relax.min": relax.op.minimum}

    @relax.expr_functor.mutator
    class SumOfStack(relax.PyExprMutator):
        def bound(self, expr):
            if isinstance(expr, relax.Var):
                value = self.lookup_binding(expr)
                return value if value is not None else expr
            return expr

        def visit_call_(self, original):
            call = self.builder_.normalize(super().visit_call_(original))
            pairwise = PAIRWISE.get(op_name(call))
            if pairwise is None or call.attrs.keepdims or call.attrs.axis is None:
                return call
            if [int(a) for a in call.attrs.axis] != [0]:
                return call
            stacked = self.bound(call.args[0])
            if op_name(stacked) != "relax.stack" or int(stacked.attrs.axis) != 0:
                return call
            items = self.bound(stacked.args[0])
            if not isinstance(items, relax.Tuple) or not items.fields:
                return call
            shape = call.ty.shape
            terms = []
            for item in items.fields:
                value = self.bound(item)
                terms.append(value.args[0] if op_name(value) == "relax.broadcast_to" else item)
            total = terms[0]
            for term in terms[1:]:
                total = self.builder_.normalize(pairwise(total, term))
            if shape is not None and not tvm_ffi.structural_equal(total.ty.shape, shape):
                total = self.builder_.normalize(relax.op.broadcast_to(total, shape))
            return total

    updated = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function):
            updated[gvar] = SumOfStack().visit_expr(func)
    return relax.transform.DeadCodeElimination()(updated)


def _clip_as_max_min(mod):
    """``clip(x, lo, hi)`` -> ``minimum(maximum(x, lo), hi)``: ConvertLayout does not see through
    clip, so the HardSwish and HardSigmoid TVM imports (MobileNetV3's every block) sat between two
    transposes, NHWC to NCHW and back, in their own strided kernels. maximum and minimum take any
    layout and fuse into the conv before them (``lowering._clip_as_max_min`` does the same for ONNX
    Clip, before import)."""
    import tvm
    from tvm import relax

    def constant(arg) -> float | None:
        """A bound's number (an IntImm or FloatImm, bare or in a PrimValue), None if not constant."""
        for _ in range(2):
            arg = getattr(arg, "value", None)
            if isinstance(arg, int | float):
                return float(arg)
        return None

    @relax.expr_functor.mutator
    class ClipAsMaxMin(relax.PyExprMutator):
        def visit_call_(self, original):
            call = self.builder_.normalize(super().visit_call_(original))
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.clip"):
                return call
            data, low, high = (constant(arg) for arg in call.args)
            dtype = str(getattr(call.args[0].ty, "dtype", ""))
            if low is None or high is None or math.isnan(low) or math.isnan(high) or "float" not in dtype:
                return call
            lower = self.builder_.normalize(relax.op.maximum(call.args[0], relax.const(low, dtype)))
            return self.builder_.normalize(relax.op.minimum(lower, relax.const(high, dtype)))

    updated = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            updated[gvar] = ClipAsMaxMin().visit_expr(func)
    return updated


DENSIFY_MAX_GROUPS = 8
"""Grouped convs with at most this many groups may become dense ones (see ``grouped_conv_plan``)."""
WIDEN_MAX_OVERHEAD = 1.5
"""A grouped conv is widened when the padded groups cost at most this factor more FLOPs."""


def _whole_vectors(channels: int, lanes: int) -> int:
    """``channels`` rounded up to whole vectors of ``lanes``."""
    return -(-channels // lanes) * lanes


def grouped_conv_plan(groups: int, in_channels: int, out_per_group: int, lanes: int) -> str | None:
    """How a grouped (not depthwise) conv is computed: "widen" (each group's output channels
    padded to whole vectors of ``lanes``), "densify" (a dense conv with a block-diagonal weight),
    or None (the grouped conv rule, within a group). Measured on Zen 4, 16 lanes, ShuffleNet's
    1x1 convs: 68 channels per group widened to 80 ran 2.4x faster than on 4-lane vectors, 34
    widened to 48 2.6x faster than densified (4x the FLOPs at 175 GF/s)."""
    if groups == 1 or in_channels == groups or out_per_group % lanes == 0:
        return None
    overhead = _whole_vectors(out_per_group, lanes) / out_per_group
    if overhead <= WIDEN_MAX_OVERHEAD or (out_per_group % 4 and overhead < groups):
        return "widen"
    if out_per_group % 4 and groups <= DENSIFY_MAX_GROUPS:
        return "densify"
    return None


def _grouped_conv(call, layout: str, lanes: int):
    """(plan, groups, output channels per group) of a grouped conv2d call in ``layout`` (NCHW
    with OIHW weights, or NHWC with HWIO), or None when it is not one."""
    import tvm

    from .int8 import op_name

    if op_name(call) != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    kernel_layout = {"NCHW": "OIHW", "NHWC": "HWIO"}[layout]
    data_shape, weight_shape = call.args[0].ty.shape, call.args[1].ty.shape
    if (int(attrs.groups) == 1 or attrs.data_layout != layout or attrs.kernel_layout != kernel_layout
            or attrs.out_layout != layout or data_shape is None or weight_shape is None or len(data_shape) != 4
            or not all(isinstance(d, tvm.tirx.IntImm) for d in [*weight_shape, data_shape[layout.index("C")]])):
        return None
    groups = int(attrs.groups)
    in_channels = int(data_shape[layout.index("C")])
    per_group = int(weight_shape[kernel_layout.index("O")]) // groups
    return grouped_conv_plan(groups, in_channels, per_group, lanes), groups, per_group


def _map_functions(mod, mutator_class, *args):
    import tvm
    from tvm import relax

    updated = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            updated[gvar] = mutator_class(*args).visit_expr(func)
    return relax.transform.DeadCodeElimination()(updated)


def _densify_grouped_conv(mod, lanes: int):
    """A grouped conv ``grouped_conv_plan`` densifies, as a dense conv with a block-diagonal
    weight: ``groups`` times the FLOPs, but on the register-tiled conv rule, where the grouped
    form's vectors would straddle groups and run ~20x slower. The block-diagonal weight is built
    from the weight alone, so lifting computes it once at compile time. Exact: the added terms are 0*x."""
    import numpy as np
    from tvm import relax

    @relax.expr_functor.mutator
    class Densify(relax.PyExprMutator):
        def visit_call_(self, original):
            call = self.builder_.normalize(super().visit_call_(original))
            grouped = _grouped_conv(call, "NCHW", lanes)
            if grouped is None or grouped[0] != "densify":
                return call
            _, groups, per_group = grouped
            attrs = call.attrs
            out_channels, in_per_group, kh, kw = (int(d) for d in call.args[1].ty.shape)
            blocks = relax.op.reshape(call.args[1], (groups, per_group, 1, in_per_group, kh, kw))
            eye = relax.const(np.eye(groups, dtype="float32").reshape(groups, 1, groups, 1, 1, 1))
            dense = relax.op.reshape(relax.op.multiply(blocks, eye), (out_channels, groups * in_per_group, kh, kw))
            return self.builder_.normalize(relax.op.nn.conv2d(
                call.args[0], dense, attrs.strides, attrs.padding, attrs.dilation, 1, attrs.data_layout,
                attrs.kernel_layout, attrs.out_layout, attrs.out_dtype))

    return _map_functions(mod, Densify)


def _widen_grouped_conv(mod, lanes: int):
    """A grouped NHWC conv ``grouped_conv_plan`` widens, with each group's output channels
    padded to whole vectors (zero weights), so the conv rule's tile never straddles a group or
    runs on narrow vectors. The per-channel ops that follow (bias, ReLU) run padded, in the
    conv's epilogue; the padded channels are dropped after them (reshape, slice, reshape: a
    copy, channels innermost, see ``_injective``). The padded weight is built from the weight
    alone, so lifting computes it once at compile time. Exact: padded channels reach no output."""
    import tvm
    from tvm import relax

    from .int8 import op_name

    def static_shape(expr) -> list[int] | None:
        shape = expr.ty.shape if isinstance(expr.ty, relax.TensorType) else None
        if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
            return None
        return [int(d) for d in shape]

    @relax.expr_functor.mutator
    class Widen(relax.PyExprMutator):
        def __init__(self):
            super().__init__()
            self.padded = {}
            """Var of a compacted result -> (the padded tensor, groups, channels per group, padded per group)."""

        def resolve(self, expr):
            """The var ``expr`` aliases (the mutator binds a returned var to a new one)."""
            while isinstance(expr, relax.Var) and isinstance(self.lookup_binding(expr), relax.Var):
                expr = self.lookup_binding(expr)
            return expr

        def visit_call_(self, original):
            call = self.builder_.normalize(super().visit_call_(original))
            grouped = _grouped_conv(call, "NHWC", lanes)
            if grouped is not None and grouped[0] == "widen":
                return self.widen(call, *grouped[1:])
            return self.through_compaction(call)

        def widen(self, call, groups: int, per_group: int):
            attrs = call.attrs
            kh, kw, in_per_group, _ = (int(d) for d in call.args[1].ty.shape)
            widened = _whole_vectors(per_group, lanes)
            by_group = relax.op.reshape(call.args[1], (kh, kw, in_per_group, groups, per_group))
            weight = relax.op.reshape(relax.op.nn.pad(by_group, [0, 0] * 4 + [0, widened - per_group]),
                                      (kh, kw, in_per_group, groups * widened))
            padded = self.builder_.emit(relax.op.nn.conv2d(
                call.args[0], weight, attrs.strides, attrs.padding, attrs.dilation, groups,
                attrs.data_layout, attrs.kernel_layout, attrs.out_layout, attrs.out_dtype))
            return self.compacted(padded, groups, per_group, widened)

        def compacted(self, padded, groups: int, per_group: int, widened: int):
            batch, height, width, _ = padded.ty.shape
            split = relax.op.reshape(padded, (batch, height, width, groups, widened))
            kept = self.builder_.normalize(relax.op.strided_slice(split, axes=[4], begin=[0], end=[per_group]))
            result = self.builder_.emit(relax.op.reshape(kept, (batch, height, width, groups * per_group)))
            self.padded[result] = (padded, groups, per_group, widened)
            return result

        def through_compaction(self, call):
            """``relu``, and ``add``/``multiply`` by a per-channel vector, of a compacted conv
            output run on the padded one (the vector padded with zeros)."""
            name = op_name(call)
            source = self.resolve(call.args[0]) if call.args else None
            if name not in ("relax.nn.relu", "relax.add", "relax.multiply") or source not in self.padded:
                return call
            padded, groups, per_group, widened = self.padded[source]
            if name == "relax.nn.relu":
                return self.compacted(self.builder_.emit(relax.op.nn.relu(padded)), groups, per_group, widened)
            vector = call.args[1]
            if static_shape(vector) != [1, 1, 1, groups * per_group]:
                return call
            vector = relax.op.nn.pad(relax.op.reshape(vector, (groups, per_group)), [0, 0, 0, widened - per_group])
            vector = relax.op.reshape(vector, (1, 1, 1, groups * widened))
            op = relax.op.add if name == "relax.add" else relax.op.multiply
            return self.compacted(self.builder_.emit(op(padded, vector)), groups, per_group, widened)

    return _map_functions(mod, Widen)


def _lift_weight_transforms(mod, notes: list[str]):
    """Move weight-only computations out of ``main`` and run them once, now."""
    import tvm
    from tvm import relax

    main = mod["main"]
    attrs = main.attrs or {}
    if "num_input" not in attrs:
        notes.append("main has no num_input attribute: weight transforms run on every call")
        return mod
    params = attrs.get("params")
    lifted = relax.transform.LiftTransformParams()(mod)
    if not any(gv.name_hint == "main_transform_params" for gv in lifted.get_global_vars()):
        return mod
    if params is None:
        notes.append("weights are not attached to main: weight layout transforms run on every call")
        return mod
    # The transform with the kernels it calls (packing kernels, when lifted after scheduling),
    # and only those: the others may hold the target's intrinsics, which the host build
    # below (generic llvm) cannot compile.
    transform_mod = tvm.IRModule({gv: f for gv, f in lifted.functions_items() if gv.name_hint != "main"})
    transform_mod = relax.transform.DeadCodeElimination(["main_transform_params"])(transform_mod)
    host = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(transform_mod, target=host)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main_transform_params"]([tvm.runtime.tensor(p.numpy()) for p in params])
    new_params = [tvm.runtime.tensor(r.numpy()) for r in result]

    new_main = lifted["main"]
    num_input = int(new_main.attrs["num_input"])
    if len(new_main.params) - num_input != len(new_params):
        raise RuntimeError(
            f"lifted main takes {len(new_main.params) - num_input} weights, transform gave {len(new_params)}")
    new_main = new_main.with_attr("params", new_params)
    out = tvm.IRModule({gv: f for gv, f in lifted.functions_items() if gv.name_hint != "main_transform_params"},
                       attrs=lifted.attrs)
    out[out.get_global_var("main")] = new_main
    return out


# --- TIR schedules --------------------------------------------------------------------------


def _schedule_module(mod, tiles: Tiles, notes: list[str], database=None, target=None, tuned=None):
    import tvm

    tvm_target = tvm.target.Target(target.tvm_target) if database is not None else None
    updated = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        scheduled = database.schedule_for(func, tvm_target) if database is not None else None
        if scheduled is not None:
            if tuned is not None:
                tuned.append(gvar.name_hint)
            updated[gvar] = scheduled.with_attr("tirx.is_scheduled", True)
            continue
        scheduled, problem = schedule_primfunc(func, tiles)
        if problem:
            notes.append(f"{gvar.name_hint}: {problem}")
            logger.info("kernel %s left to TVM's default: %s", gvar.name_hint, problem)
        if scheduled is not None:
            updated[gvar] = scheduled
    return updated


def has_reduction(func) -> bool:
    """Whether a PrimFunc computes a reduction (conv, dense, pooling): what tuning measures."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    return any("R" in _iter_kinds(sch, block) for block in sch.get_child_blocks(sch.get_sblock("root")))


def _is_scheduled(func) -> bool:
    attrs = func.attrs
    return attrs is not None and "tirx.is_scheduled" in attrs and bool(attrs["tirx.is_scheduled"])


def schedule_primfunc(func, tiles: Tiles):
    """(scheduled function or None, a note when some block was left unscheduled)."""
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    try:
        problems = _schedule(sch, tiles)
    except Exception as exc:  # a rule refused: retry with parallel-only loops
        logger.debug("rule failed: %s", exc)
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            problems = _schedule(sch, tiles, simple=True)
            problems.append(f"full schedule failed ({_first_line(exc)}), parallel loops only")
        except Exception as exc2:
            return None, f"no rule applies ({_first_line(exc2)})"
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), "; ".join(problems)


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _iter_kinds(sch, block) -> str:
    """'S'/'R' per block iterator, e.g. 'SSSSRRR' for conv2d."""
    kinds = []
    for iv in sch.get(block).iter_vars:
        kinds.append("S" if iv.iter_type == 0 else "R" if iv.iter_type == 2 else "O")
    return "".join(kinds)


def _extent(sch, loop) -> int | None:
    import tvm

    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tvm.tirx.IntImm) else None


def _is_padding(sch, block) -> bool:
    """A block that copies its input with a condition (zero or -inf padding)."""
    stmt = sch.get(block)
    return stmt.name_hint.startswith("pad") and "if_then_else" in str(stmt.body)


def _schedule(sch, tiles: Tiles, simple: bool = False) -> list[str]:
    problems: list[str] = []
    root = sch.get_sblock("root")
    blocks = sch.get_child_blocks(root)
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}

    # Inline injective intermediates. Not a dense conv's padding: evaluating its condition per
    # broadcast input scalar in the innermost loop costs more than materializing it once.
    # Depthwise convs and pooling read whole vectors, so there the condition is cheap and the
    # padded copy (written and read again) was most of their time.
    for block in blocks:
        name = sch.get(block).name_hint
        if name in outputs or "R" in _iter_kinds(sch, block):
            continue
        if not simple and _is_padding(sch, block) and any(
                sch.get(c).name_hint.startswith("conv2d_nhwc") or _group_channels(sch, c)
                for c in sch.get_consumers(block)):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - not inlinable: scheduled on its own below
            pass

    # Names, not block handles: scheduling adds blocks (caches, inits) under loops.
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
    handled: set[str] = set()
    for name in names:
        block = sch.get_sblock(name)
        if name in handled:
            continue
        kinds = _iter_kinds(sch, block)
        if "R" not in kinds:
            continue
        consumers = sch.get_consumers(block)
        epilogue = consumers[0] if len(consumers) == 1 and "R" not in _iter_kinds(sch, consumers[0]) else None
        if epilogue is not None and len(sch.get_producers(epilogue)) > 1:
            # A residual add's other producer must be finished before the epilogue runs per tile.
            others = [p for p in sch.get_producers(epilogue) if sch.get(p).name_hint != name]
            if any(sch.get(p).name_hint not in handled for p in others):
                epilogue = None
        if epilogue is not None:
            handled.add(sch.get(epilogue).name_hint)
        handled.add(name)
        if simple:
            _parallel_outer(sch, block, tiles)
            if epilogue is not None:
                _injective(sch, epilogue, tiles)
        elif name.startswith("conv2d_nhwc") and kinds == "SSSSRRR":
            _conv2d_nhwc(sch, block, epilogue, tiles)
        elif depthwise_tile := _depthwise_tile(sch, block, tiles):
            _depthwise_nhwc(sch, block, epilogue, tiles, depthwise_tile)
        elif group_channels := _group_channels(sch, block):
            _conv2d_nhwc(sch, block, epilogue, tiles, group_channels)
        elif _is_matmul(sch, block):
            _matmul(sch, block, epilogue, tiles)
        elif not _reduction_vector_inner(sch, block, epilogue, tiles):
            problems.append(f"block {name}: innermost axis not vectorizable, parallel only")
            _parallel_outer(sch, block, tiles)
            if epilogue is not None:
                _injective(sch, epilogue, tiles)

    for name in names:
        if name in handled:
            continue
        block = sch.get_sblock(name)
        if "R" not in _iter_kinds(sch, block):
            _injective(sch, block, tiles)
    return problems


def _channel_tile(channels: int, lanes: int, wide: bool = False, registers: int = 16) -> tuple[int, int]:
    """(output channels per register tile, lanes per vector). Full vectors: two when they divide
    (``wide``: four), else one. Where no full vector divides the channels (AVX-512's 16 lanes on
    MobileNetV3's and EfficientNet's 24, 40, 72, 120 channels, a 1000-way classifier), the widest
    half or quarter vector that does, as many as hold the same channels, up to ``registers // 6``
    (5 of AVX-512's 32): a full-width tile there ends each row in a ragged, masked block and
    leaves the weights unpacked."""
    if channels % lanes == 0:
        return next(m * lanes for m in ((4, 2, 1) if wide else (2, 1)) if channels % (m * lanes) == 0), lanes
    for width in (lanes // 2, lanes // 4):
        if width >= 4 and channels % width == 0:
            cap = min((4 if wide else 2) * lanes // width, max(1, registers // 6))
            vectors = max(m for m in range(1, cap + 1) if (channels // width) % m == 0)
            return vectors * width, width
    return (lanes if channels > lanes else channels), lanes


def _pixel_tile(width: int, limit: int, even: bool = False) -> int:
    """Output pixels per tile: a divisor of ``width`` near ``limit``, else an even split
    (``even``: rounded up to an even tile).

    Not one pixel more than the registers hold: a 7-pixel tile where 6 fit (to avoid the
    ragged tail of 7- and 14-wide maps) made ResNet50's kernels 1.2x and DenseNet121's 1.6x
    slower, so the spill costs more than the tail."""
    if width <= limit:
        return width
    for tile in range(limit, max(min(limit, 2), (limit + 1) // 2) - 1, -1):
        if width % tile == 0:
            return tile
    pieces = math.ceil(width / limit)
    tile = math.ceil(width / pieces)
    return min(limit, tile + tile % 2) if even else tile


def _work(sch, block) -> int:
    """Loop iterations of a block, before any split: the parallel-or-not measure."""
    return math.prod(_extent(sch, loop) or PARALLEL_MIN_WORK for loop in sch.get_loops(block))


def _parallel(sch, loop, work: int) -> None:
    if work >= PARALLEL_MIN_WORK:
        sch.parallel(loop)


def _conv2d_nhwc(sch, conv, epilogue, tiles: Tiles, group_channels: int | None = None) -> None:
    """The register-tiled conv; for a grouped conv, ``group_channels`` (output channels per
    group) caps the channel tile, so that a tile reads one group's input (narrower vectors
    where a full one does not divide it)."""
    from .int8_schedules import conv2d_nhwc_dot, is_dot_block

    dot = tiles.dot
    if group_channels is None and dot and is_dot_block(sch, conv, dot) and conv2d_nhwc_dot(sch, conv, epilogue, dot):
        return
    work = _work(sch, conv)
    _, _, w, co, rh, rw, _ = sch.get_loops(conv)
    width, channels = _extent(sch, w), _extent(sch, co)
    lanes = tiles.lanes
    if group_channels is not None:
        lanes = _vector_width(group_channels, tiles)
        channels = group_channels
    # 1x1 convs (AVX2, znver3): four channel vectors by two pixels beat two vectors by four to
    # six pixels on every ResNet50 shape, 2x on 14- and 7-wide maps. With two vectors, an odd
    # ragged tile (5 pixels on a 14-wide map) ran at 40% of the speed of an even one: LLVM keeps
    # the accumulators of the tile's conditional last pixel in memory. 3x3 convs showed neither.
    one_by_one = _extent(sch, rh) == 1 and _extent(sch, rw) == 1
    oc_tile, lanes = _channel_tile(channels, lanes, wide=one_by_one, registers=tiles.registers)
    vectors = max(1, oc_tile // lanes)
    ow_tile = _pixel_tile(width, tiles.max_output_pixels(vectors), even=one_by_one and vectors > 1)

    if _extent(sch, co) % oc_tile == 0 and _is_parameter(sch, sch.get(conv).reads[1].source):
        # Weights HWIO -> (channel block, H, W, I, channel in block): a tile streams its weights
        # contiguously, not one cache line per input channel; 2-4x on wide layers (see
        # _prepack_weights for when the packing runs).
        _pack_weight(sch, conv, lambda kh, kw, ci, co_: (co_ // oc_tile, kh, kw, ci, co_ % oc_tile))
    _tile_conv(sch, conv, epilogue, work, lanes, oc_tile, ow_tile, channel_blocks_outer=True)


def _pack_weight(sch, block, index_map) -> None:
    """Read the block's weight (its second input) in the layout ``index_map`` gives, through a
    copy marked for ``_prepack_weights`` to run once at compile time."""
    packed = sch.cache_read(block, 1, "global")
    sch.transform_layout(block, ("read", 1), index_map)
    sch.annotate(packed, "meta_schedule.layout_rewrite_preproc", True)


def _tile_conv(sch, conv, epilogue, work: int, lanes: int, oc_tile: int, ow_tile: int,
               channel_blocks_outer: bool) -> None:
    """An NHWC conv's register tile: ``ow_tile`` output pixels x ``oc_tile`` channels, the
    kernel window and input channels outside it, (batch, channel block, row) parallel."""
    n, h, w, co, rh, rw, rc = sch.get_loops(conv)
    co_o, co_i = sch.split(co, [None, oc_tile])
    w_o, w_i = sch.split(w, [None, ow_tile])
    outer = (n, co_o, h) if channel_blocks_outer else (n, h, co_o)
    sch.reorder(*outer, w_o, rh, rw, rc, w_i, co_i)
    fused = sch.fuse(*outer)
    _parallel(sch, fused, work)
    _finish_register_tile(sch, conv, epilogue, w_o, w_i, co_i, lanes, rh)


def _finish_register_tile(sch, block, epilogue, anchor, rows, columns, lanes: int, first_reduction) -> None:
    """Accumulate in a local tile, written out (through the epilogue, if any) once per
    ``anchor`` iteration; ``rows`` unrolled, ``columns`` as unrolled vectors of ``lanes``."""
    _accumulate_locally(sch, block, epilogue, anchor, lanes)
    sch.unroll(rows)
    vectors = max(1, (_extent(sch, columns) or lanes) // lanes)
    if vectors > 1:
        outer, inner = sch.split(columns, [vectors, lanes])
        sch.unroll(outer)
        sch.vectorize(inner)
    else:
        sch.vectorize(columns)
    init = sch.decompose_reduction(block, first_reduction)
    _vectorize_innermost(sch, init, lanes)


def _accumulate_locally(sch, block, epilogue, anchor, lanes: int) -> None:
    """The block's output in a local buffer, written out (through the epilogue, if any) in
    vectors of ``lanes`` once per ``anchor`` iteration."""
    if epilogue is not None:
        sch.set_scope(block, 0, "local")
        sch.reverse_compute_at(epilogue, anchor)
        _vectorize_innermost(sch, epilogue, lanes)
    else:
        store = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(store, anchor)
        _vectorize_innermost(sch, store, lanes)


def _vector_width(channels: int, tiles: Tiles) -> int:
    """The widest vector (down to 4 lanes, a 128-bit register) whose lanes divide ``channels``."""
    return next((w for w in (tiles.lanes, tiles.lanes // 2) if w >= 4 and channels % w == 0), 4)


def _group_channels(sch, block) -> int | None:
    """Output channels per group of a grouped (not depthwise) NHWC conv, when a 128-bit vector
    divides them; None otherwise."""
    realize = sch.get(block)
    if not (realize.name_hint.startswith("group_conv2d_nhwc") and _iter_kinds(sch, block) == "SSSSRRR"):
        return None
    data, weight = realize.reads[0].source, realize.reads[1].source
    in_per_group, out_channels = int(weight.shape[2]), int(weight.shape[3])
    groups = int(data.shape[3]) // in_per_group
    if in_per_group == 1 or groups <= 1 or out_channels % groups:
        return None
    per_group = out_channels // groups
    return per_group if per_group % 4 == 0 else None


def _depthwise_tile(sch, block, tiles: Tiles) -> int | None:
    """Channels per register tile of a depthwise NHWC conv (one input channel per output
    channel, so the input is read as whole vectors), or None: not one, or no vector divides."""
    realize = sch.get(block)
    if not (realize.name_hint.startswith("group_conv2d_nhwc") and _iter_kinds(sch, block) == "SSSSRRR"):
        return None
    loops = sch.get_loops(block)
    data, out = realize.reads[0].source, realize.writes[0].source
    if len(loops) != 7 or _extent(sch, loops[6]) != 1 or len(data.shape) != 4:
        return None
    channels = _extent(sch, loops[3])
    if channels is None or int(data.shape[3]) != channels or int(out.shape[3]) != channels:
        return None
    widths = [2 * tiles.lanes, tiles.lanes] + [tiles.lanes // d for d in (2, 4) if tiles.lanes // d >= 4]
    return next((width for width in widths if channels % width == 0), None)


def _depthwise_nhwc(sch, conv, epilogue, tiles: Tiles, oc_tile: int) -> None:
    """The conv rule's register tile (pixels x ``oc_tile`` channels, kernel window outside the
    tile) for depthwise convs; the padding is inlined (see ``_schedule``). 2-6x over the
    generic reduction rule on MobileNetV2's depthwise layers."""
    lanes = min(tiles.lanes, oc_tile)
    width = _extent(sch, sch.get_loops(conv)[2])
    ow_tile = _pixel_tile(width, tiles.max_output_pixels(oc_tile // lanes))
    _tile_conv(sch, conv, epilogue, _work(sch, conv), lanes, oc_tile, ow_tile, channel_blocks_outer=False)


def _is_matmul(sch, block) -> bool:
    """``C[..., i, j] += A[..., i, k] * B[..., k, j]``: one reduction, innermost, and the output's
    last two indices are the last two spatial iterators (rows, contiguous columns). The row
    reductions of softmax and layer norm have the same loop nest and take the same tile."""
    import tvm

    kinds = _iter_kinds(sch, block)
    if not kinds.endswith("SSR") or kinds.count("R") != 1 or len(sch.get_loops(block)) != len(kinds):
        return False
    realize = sch.get(block)
    region = realize.writes[0].region
    if len(region) < 2:
        return False
    rows, columns = realize.iter_vars[-3].var, realize.iter_vars[-2].var
    return all(isinstance(r.min, tvm.tirx.Var) and r.min.same_as(v)
               for r, v in ((region[-2], rows), (region[-1], columns)))


def _matmul(sch, block, epilogue, tiles: Tiles) -> None:
    """The conv rule's register tile for matmul/dense: a few rows x two vectors of columns in
    registers, the reduction outside the tile, weights reused across the tile's rows."""
    work = _work(sch, block)
    *batch, rows, columns, reduction = sch.get_loops(block)
    col_tile, lanes = _channel_tile(_extent(sch, columns), tiles.lanes, registers=tiles.registers)
    vectors = max(1, col_tile // lanes)
    row_tile = _pixel_tile(_extent(sch, rows), tiles.max_output_pixels(vectors))

    reads = sch.get(block).reads
    if (_extent(sch, columns) % col_tile == 0 and len(reads) == 2 and len(reads[1].region) == 2
            and _is_parameter(sch, reads[1].source)):
        # A 2-D (weight) operand packed like the conv's: column blocks contiguous.
        _pack_weight(sch, block, lambda k, n: (n // col_tile, k, n % col_tile))
    c_o, c_i = sch.split(columns, [None, col_tile])
    r_o, r_i = sch.split(rows, [None, row_tile])
    sch.reorder(*batch, c_o, r_o, reduction, r_i, c_i)
    outer = sch.fuse(*batch, c_o, r_o)
    _parallel(sch, outer, work)
    _finish_register_tile(sch, block, epilogue, outer, r_i, c_i, lanes, reduction)


def _is_parameter(sch, buffer) -> bool:
    """Whether a buffer is the kernel's argument (a weight can be packed outside), not computed in it."""
    return any(buffer.same_as(param) for param in sch.mod["main"].params)


def _vectorize_innermost(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = _extent(sch, inner)
    if extent is None or extent == 1:
        return
    if extent % lanes == 0 and extent > lanes:
        outer, inner = sch.split(inner, [None, lanes])
        sch.unroll(outer)
    sch.vectorize(inner)


def _reduction_vector_inner(sch, block, epilogue, tiles: Tiles) -> bool:
    """Vectorize the innermost spatial axis inside the reduction loops. False if it is not contiguous."""
    import tvm

    work = _work(sch, block)
    loops = sch.get_loops(block)
    kinds = _iter_kinds(sch, block)
    if len(loops) != len(kinds):
        return False
    realize = sch.get(block)
    spatial = [i for i, k in enumerate(kinds) if k == "S"]
    reduce = [i for i, k in enumerate(kinds) if k == "R"]
    if not spatial or not reduce or spatial[-1] > reduce[0]:
        return False
    last = spatial[-1]
    # The output's last index must be the innermost spatial iterator (contiguous writes).
    write = realize.writes[0]
    last_index = write.region[-1].min
    if not (isinstance(last_index, tvm.tirx.Var) and last_index.same_as(realize.iter_vars[last].var)):
        return False
    extent = _extent(sch, loops[last])
    if extent is None:
        return False
    # Up to four vectors of accumulators; narrower vectors when the axis is not a multiple of one.
    candidates = [tiles.lanes * m for m in (4, 2, 1)] + [tiles.lanes // d for d in (2, 4) if tiles.lanes // d >= 4]
    vector_tile = next((c for c in candidates if extent % c == 0), None)
    if vector_tile is None:
        return False
    lanes = min(tiles.lanes, vector_tile)
    s_o, s_i = sch.split(loops[last], [None, vector_tile])
    outer_spatial = [loops[i] for i in spatial[:-1]] + [s_o]
    reductions = [loops[i] for i in reduce]
    sch.reorder(*outer_spatial, *reductions, s_i)
    fused = sch.fuse(*outer_spatial) if len(outer_spatial) > 1 else outer_spatial[0]
    _parallel(sch, fused, work)
    if epilogue is not None:
        sch.set_scope(block, 0, "local")
        sch.reverse_compute_at(epilogue, fused)
        _vectorize_innermost(sch, epilogue, lanes)
    else:
        store = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(store, fused)
        _vectorize_innermost(sch, store, lanes)
    v_o, v_i = sch.split(s_i, [None, lanes])
    sch.unroll(v_o)
    sch.vectorize(v_i)
    init = sch.decompose_reduction(block, reductions[0])
    _vectorize_innermost(sch, init, lanes)
    return True


def _parallel_outer(sch, block, tiles: Tiles) -> None:
    """Parallelize the spatial loops outside the first reduction loop."""
    work = _work(sch, block)
    loops = sch.get_loops(block)
    kinds = _iter_kinds(sch, block)
    outer = []
    for loop, kind in zip(loops, kinds):
        if kind != "S":
            break
        outer.append(loop)
    if not outer:
        return
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    _parallel(sch, fused, work)


def _injective(sch, block, tiles: Tiles) -> None:
    """Flatten, vectorize the contiguous tail, parallelize the rest when it is big enough; a
    gather across the innermost axis first splits that axis where its indices divide it."""
    loops = sch.get_loops(block)
    if not loops:
        return
    split = _division_free_split(sch, block)
    if split is not None:
        _split_injective(sch, block, tiles, *split)
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = _extent(sch, fused)
    if total is None:
        sch.parallel(fused)
        return
    lanes = tiles.lanes
    if total % lanes == 0 and total > lanes:
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    else:
        outer = fused
    if total >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)


def _division_free_split(sch, block) -> tuple[int, bool] | None:
    """``(factor, contiguous)``: the factor to split the innermost axis by so that the block's
    reads index with fewer divisions, and whether they are then contiguous in the inner part;
    None when no split removes one. A copy that gathers channels (a widened conv's compaction,
    g*48 + c % 34 for c < 136; ShuffleNet's channel shuffle) otherwise divides and takes the
    remainder per element, and its vectors become gathers: 5-20x slower than the copy."""
    import tvm
    from tvm import sym, tirx

    realized = sch.get(block)
    iters = list(realized.iter_vars)
    if not iters or len(iters) != len(sch.get_loops(block)):
        return None
    innermost = iters[-1]
    if not isinstance(innermost.dom.extent, tirx.IntImm):
        return None
    extent = int(innermost.dom.extent)
    indices = [r.min for read in realized.reads for r in read.region]

    def nodes(expr):
        """``expr`` and its subexpressions (TVM's Python API has no expression visitor)."""
        yield expr
        for field in ("a", "b", "value", "condition", "true_value", "false_value"):
            child = getattr(expr, field, None)
            if isinstance(child, tvm.ir.expr.Expr):
                yield from nodes(child)
        for child in getattr(expr, "args", []):
            if isinstance(child, tvm.ir.expr.Expr):
                yield from nodes(child)

    def is_division(node) -> bool:
        return isinstance(node, (tirx.FloorDiv, tirx.FloorMod)) and isinstance(node.b, tirx.IntImm)

    dtype = str(innermost.var.ty.dtype)
    outer, inner = tirx.Var("outer", dtype), tirx.Var("inner", dtype)

    def split_analyzer(factor: int):
        """An analyzer where the innermost iterator is ``outer * factor + inner``."""
        analyzer = sym.Analyzer()
        for iv in iters[:-1]:
            analyzer.bind(iv.var, iv.dom)
        analyzer.bind(outer, tvm.ir.Range(0, extent // factor))
        analyzer.bind(inner, tvm.ir.Range(0, factor))
        analyzer.bind(innermost.var, outer * tirx.const(factor, dtype) + inner)
        return analyzer

    def simplified(factor: int) -> list:
        analyzer = split_analyzer(factor)
        return [analyzer.simplify(e) for e in indices]

    def divisions(factor: int) -> int:
        """Divisions per element once the innermost axis is split by ``factor``: those of the inner part
        (the rest are computed once per ``factor`` elements)."""
        return sum(1 for e in simplified(factor) for node in nodes(e)
                   if is_division(node) and any(n.same_as(inner) for n in nodes(node.a)))

    denominators = {int(node.b.value) for e in indices for node in nodes(e) if is_division(node)}
    candidates = {math.gcd(d, extent) for d in denominators} | {d for d in denominators if extent % d == 0}
    candidates = sorted(k for k in candidates if 1 < k < extent)
    if not candidates:
        return None
    baseline = divisions(extent)
    cost, factor = min((divisions(k), -k) for k in candidates)
    factor = -factor
    if cost >= baseline:
        return None
    split = simplified(factor)
    at = {}
    following = tirx.Var("following", dtype)
    for name, value in (("before", following), ("after", following + tirx.const(1, dtype))):
        analyzer = split_analyzer(factor)
        analyzer.bind(following, tvm.ir.Range(0, factor - 1))
        analyzer.bind(inner, value, allow_override=True)
        at[name] = [analyzer.simplify(e) for e in split]
    steps = [analyzer.simplify(after - before) for after, before in zip(at["after"], at["before"])]
    contiguous = all(isinstance(d, tirx.IntImm) and int(d) in (0, 1) for d in steps)
    return factor, contiguous


def _split_injective(sch, block, tiles: Tiles, factor: int, contiguous: bool) -> None:
    """The innermost axis split by ``factor``, the inner part vectorized where the reads are
    contiguous in it (else left to LLVM), the rest fused and parallel."""
    loops = sch.get_loops(block)
    outer, inner = sch.split(loops[-1], [None, factor])
    fused = sch.fuse(*loops[:-1], outer) if len(loops) > 1 else outer
    width = next((w for w in (tiles.lanes, tiles.lanes // 2, tiles.lanes // 4) if w >= 4 and factor % w == 0), None)
    if contiguous and width is not None:
        _, vector = sch.split(inner, [None, width])
        sch.vectorize(vector)
    if (_extent(sch, fused) or PARALLEL_MIN_ELEMENTS) * factor >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(fused)