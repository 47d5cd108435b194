"""Rule-based CPU schedules (targets/cpu_schedules.py) keep results: each rule is
checked against onnxruntime on the shapes it treats specially (odd channel counts,
strides, padding, 1x1, groups, depthwise, dense), plus a zoo model end to end.
No timing here: benchmarks/bench_latency.py and roofline.py measure."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.models import make_model, ort_run, random_feeds, zoo_model

tvm = pytest.importorskip("tvm")


def host_spec():
    from edgec.targets import get_target

    return get_target("x86-64")


def compile_scheduled(model, spec):
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    from edgec.targets.cpu_schedules import schedule_for_cpu

    from edgec.compiler.pass_manager import PassManager, Pipeline
    from edgec.compiler.pipelines import DEFAULT_PIPELINE
    from edgec.frontend.importer import import_proto
    from edgec.targets.lowering import onnx_for_tvm

    # What lower() hands TVM: edgec's import and default passes, then its ONNX export.
    imported = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(import_proto(model))
    mod = from_onnx(onnx_for_tvm(imported)[0], keep_params_in_input=True)
    mod, notes = schedule_for_cpu(mod, spec)
    mod, params = detach_params(mod)
    return mod, list(params.get("main", [])), notes


def run_scheduled(model, feeds):
    from tvm import relax

    mod, weights, notes = compile_scheduled(model, host_spec())
    executable = tvm.compile(mod, target=tvm.target.Target(host_spec().tvm_target))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()], *weights)
    outputs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outputs], notes, mod


def conv_model(cin, cout, size, kernel, stride=1, pad=0, groups=1, bias=True, relu=True, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, cin // groups, kernel, kernel)) / np.sqrt(cin // groups * kernel * kernel))
    inits = [numpy_helper.from_array(w.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        inputs.append("b")
    nodes = [helper.make_node("Conv", inputs, ["c"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pad] * 4, group=groups)]
    out = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
        out = "y"
    out_size = (size + 2 * pad - kernel) // stride + 1
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cout, out_size, out_size])],
        inits,
    )


def kernel_names(mod) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def assert_matches_ort(model, rtol=1e-4, atol=1e-5):
    feeds = random_feeds(model)
    actual, notes, mod = run_scheduled(model, feeds)
    expected = list(ort_run(model, feeds).values())
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    return notes, mod


CONVS = {
    # name: (cin, cout, size, kernel, stride, pad, groups)
    "3x3-pad1": (16, 64, 14, 3, 1, 1, 1),
    "1x1": (64, 32, 7, 1, 1, 0, 1),
    "1x1-stride2": (32, 64, 14, 1, 2, 0, 1),
    "7x7-stride2-pad3-rgb": (3, 64, 32, 7, 2, 3, 1),
    "odd-channels": (5, 13, 9, 3, 1, 1, 1),
    "odd-out-channels-1x1": (32, 1000, 13, 1, 1, 0, 1),
    "one-vector-of-out-channels": (8, 48, 10, 3, 1, 0, 1),
    "width-not-a-tile-multiple": (8, 32, 23, 3, 1, 1, 1),
    "stride2-pad1": (16, 32, 15, 3, 2, 1, 1),
    "asymmetric-no-pad-5x5": (4, 16, 12, 5, 1, 0, 1),
    "groups": (16, 32, 10, 3, 1, 1, 4),
    "groups-1x1-unaligned": (16, 24, 9, 1, 1, 0, 4),
    "groups-at-the-densify-limit": (16, 16, 6, 3, 2, 1, 8),
    "groups-above-the-densify-limit": (18, 36, 6, 3, 1, 1, 9),
    "depthwise": (32, 32, 12, 3, 1, 1, 32),
    "depthwise-stride2": (24, 24, 13, 3, 2, 1, 24),
    "depthwise-half-vectors": (136, 136, 9, 3, 1, 1, 136),
    "depthwise-5x5-stride2-no-pad": (48, 48, 15, 5, 2, 0, 48),
    "depthwise-odd-channels": (7, 7, 9, 3, 1, 1, 7),
    "1x1-half-vectors-out": (24, 40, 14, 1, 1, 0, 1),
    "3x3-half-vectors-out": (16, 72, 10, 3, 1, 1, 1),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_conv_matches_onnxruntime(case):
    cin, cout, size, kernel, stride, pad, groups = CONVS[case]
    notes, mod = assert_matches_ort(conv_model(cin, cout, size, kernel, stride, pad, groups))
    # Every conv gets a vectorized rule except grouped ones that are neither few (densified) nor
    # a whole number of 128-bit vectors per group (nor depthwise over such a channel count).
    if groups == 1 or (cout // groups) % 4 == 0 or (groups <= 8 and cin != groups):
        assert notes == [], notes
        assert any("conv2d" in name for name in kernel_names(mod))


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4"])
@pytest.mark.parametrize("channels, groups", [(136, 4), (136, 8), (144, 4), (144, 9), (144, 16), (64, 32)])
def test_grouped_convs_get_whole_vectors_per_group(target, channels, groups):
    """A grouped conv whose output channels per group fill no whole vector of the target is
    widened (each group padded with zero channels to whole vectors: ShuffleNet's 34 per group
    to 48 on AVX-512, 40 on AVX2) or, when padding would cost more than the groups, densified;
    the padded weight is built at compile time. Whole vectors per group stay as they are."""
    import math

    from edgec.targets import get_target
    from edgec.targets.cpu_schedules import Tiles, grouped_conv_plan

    spec = get_target(target)
    lanes = Tiles.for_target(spec).lanes
    per_group = channels // groups
    plan = grouped_conv_plan(groups, channels, per_group, lanes)
    mod, weights, notes = compile_scheduled(conv_model(channels, channels, 6, 1, groups=groups), spec)
    conv_weight = max(weights, key=lambda w: np.prod(w.shape))
    widened = math.ceil(per_group / lanes) * lanes
    expected = {"widen": groups * widened * per_group, "densify": channels * channels,
                None: channels * channels // groups}[plan]
    assert np.prod(conv_weight.shape) == expected
    assert [note for note in notes if "conv" in note] == []
    if per_group % lanes == 0:
        assert plan is None
    if (channels, groups) == (136, 4):
        assert plan == "widen"


def shufflenet_unit(channels=136, groups=4, size=10, seed=0):
    """ShuffleNet v1's unit as onnx's zoo model has it: grouped 1x1 conv, ReLU, channel shuffle,
    depthwise 3x3, grouped 1x1 conv, residual add, ReLU."""
    rng = np.random.default_rng(seed)
    per_group = channels // groups

    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    inits = [weight("w1", (channels, per_group, 1, 1)), weight("w2", (channels, 1, 3, 3)),
             weight("w3", (channels, per_group, 1, 1)),
             numpy_helper.from_array(np.array([1, groups, per_group, size, size], np.int64), "split"),
             numpy_helper.from_array(np.array([1, channels, size, size], np.int64), "merged")]
    inits += [numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), f"b{i}") for i in (1, 2, 3)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=groups),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "split"], ["s1"]),
             helper.make_node("Transpose", ["s1"], ["s2"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["s2", "merged"], ["shuffled"]),
             helper.make_node("Conv", ["shuffled", "w2", "b2"], ["c2"], group=channels, pads=[1] * 4),
             helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], group=groups),
             helper.make_node("Add", ["c3", "x"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["y"])]
    shape = [1, channels, size, size]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)


@pytest.mark.parametrize("channels, groups", [(136, 4), (272, 4)])
def test_shufflenet_unit_matches_onnxruntime_with_division_free_copies(channels, groups):
    """The widened convs' compactions and the channel shuffle are copies that gather channels; their
    innermost loop is split at the group size (the shuffle's at the group count), so no element
    divides to find its source."""
    import re

    model = shufflenet_unit(channels, groups)
    notes, mod = assert_matches_ort(model)
    assert [note for note in notes if "conv" in note] == []
    per_group = channels // groups
    # The copies that write channels last (the model's NCHW output is a transpose besides).
    copies = [f.script() for gv, f in mod.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and "strided_slice" in gv.name_hint
              and int(f.params[-1].shape[-1]) == channels]
    assert copies
    for script in copies:
        innermost = re.findall(r"for \w+ in (?:range|T\.vectorized)\(T\.int64\((\d+)\)\)", script)[-1]
        assert per_group % int(innermost) == 0 or groups % int(innermost) == 0, script


@pytest.mark.parametrize("channels, tiled", [(32, True), (136, True), (20, True), (7, False)])
def test_depthwise_convs_inline_their_padding_and_take_the_register_tile(channels, tiled):
    """No padded copy is written; where a vector width divides the channels, the depthwise rule
    takes the conv, otherwise it falls to parallel loops and the notes say so."""
    mod, _, notes = compile_scheduled(conv_model(channels, channels, 10, 3, pad=1, groups=channels), host_spec())
    (kernel,) = [f.script() for gv, f in mod.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and "group_conv2d_nhwc" in f.script()]
    assert "pad_temp" not in kernel
    kernel_notes = [note for note in notes if "group_conv2d_nhwc" in note]
    if tiled:
        assert "T.vectorized" in kernel and kernel_notes == []
    else:
        assert kernel_notes and "not vectorizable" in kernel_notes[0]


def test_conv_without_bias_or_relu_writes_through_a_local_tile():
    notes, _ = assert_matches_ort(conv_model(16, 32, 8, 3, pad=1, bias=False, relu=False))
    assert notes == []


def test_residual_add_after_conv():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8])], [w])
    assert_matches_ort(model)


@pytest.mark.parametrize("out_features", [1000, 64, 10])
def test_gemm_matches_onnxruntime(out_features):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((out_features, 256)) * 0.1).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(out_features).astype(np.float32), "b")]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_features])], inits)
    assert_matches_ort(model)


def test_pooling_and_sum_match_onnxruntime():
    """MaxPool (padded, strided), AveragePool, ONNX Sum (the stack/sum import) and GlobalAveragePool."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((32, 8, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sum", ["m", "a", "a"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["y"]),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 1, 1])], [w])
    assert_matches_ort(model)


def test_every_kernel_is_marked_scheduled():
    mod, _, _ = compile_scheduled(conv_model(16, 32, 8, 3, pad=1), host_spec())
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert funcs and all(bool(f.attrs["tirx.is_scheduled"]) for f in funcs)


def channel_block(spec) -> int:
    """The rules' output-channel block: two float32 vectors of the target."""
    return 2 * spec.vector_bits // 32


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4"])
def test_weight_transforms_run_at_compile_time(target):
    """The OIHW->HWIO permute and the packing by two-vector channel block (16 channels on
    AVX2, 32 on AVX-512) are applied to the attached weights, not left in main."""
    from edgec.targets import get_target

    spec = get_target(target)
    block = channel_block(spec)
    mod, weights, _ = compile_scheduled(conv_model(16, 32, 8, 3, pad=1), spec)
    assert [tuple(w.shape) for w in weights][0] == (32 // block, 3, 3, 16, block)
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert "main_transform_params" not in names and not any(name.endswith("_weight_prepack") for name in names)
    assert any(name.endswith("_prepacked") for name in names)


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4"])
def test_dense_weights_are_packed_by_column_block_but_activations_are_not(target):
    """A constant 2-D matmul operand is packed at compile time by two-vector column block;
    attention's two activations are not."""
    from edgec.targets import get_target

    spec = get_target(target)
    block = channel_block(spec)
    mod, weights, _ = compile_scheduled(matmul_model(*MATMULS["dense-ffn-gelu"]), spec)
    assert (256 // block, 128, block) in [tuple(w.shape) for w in weights]
    mod, _, _ = compile_scheduled(matmul_model(*MATMULS["attention-context"]), spec)
    assert not any("prepack" in gv.name_hint for gv in mod.get_global_vars())


def test_compiles_for_arm64_neon():
    """Tiles follow the target: 128-bit NEON, compile only (no arm64 machine here)."""
    from edgec.targets import get_target

    spec = get_target("arm64-a72")
    mod, _, notes = compile_scheduled(conv_model(16, 40, 10, 3, stride=1, pad=1), spec)
    assert notes == []
    tvm.compile(mod, target=tvm.target.Target(spec.tvm_target))


def test_zoo_squeezenet_matches_onnxruntime():
    model = zoo_model("squeezenet")
    feeds = random_feeds(model)
    actual, notes, _ = run_scheduled(model, feeds)
    expected = list(ort_run(model, feeds).values())
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-3, atol=1e-4)


def matmul_model(batch: list[int], rows: int, inner: int, columns: int, weight: bool, epilogue: str = "") -> object:
    """``x @ w`` (a constant weight, dense) or ``x @ y`` (two activations, attention's QK^T)."""
    rng = np.random.default_rng(0)
    inits, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*batch, rows, inner])]
    if weight:
        inits.append(numpy_helper.from_array((rng.standard_normal((inner, columns)) / np.sqrt(inner)).astype(np.float32), "w"))
    else:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [*batch, inner, columns]))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"])]
    if epilogue == "gelu":  # PyTorch's export of exact GELU
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sqrt2", np.sqrt(2)), ("one", 1.0), ("half", 0.5))]
        nodes += [helper.make_node("Div", ["m", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["m", "p"], ["q"]),
                  helper.make_node("Mul", ["q", "half"], ["y"])]
    elif epilogue == "softmax":
        nodes.append(helper.make_node("Softmax", ["m"], ["y"], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    return make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*batch, rows, columns])], inits)


MATMULS = {
    # name: (batch, rows, inner, columns, constant weight, epilogue)
    "dense-ffn-gelu": ([1], 64, 128, 256, True, "gelu"),
    "dense-odd-sizes": ([1], 7, 33, 37, True, ""),
    "dense-one-row": ([1], 1, 64, 10, True, ""),
    "dense-rows-not-a-tile-multiple": ([1], 23, 16, 64, True, ""),
    "attention-scores-softmax": ([1, 4], 17, 16, 19, False, "softmax"),
    "attention-context": ([1, 4], 32, 32, 16, False, ""),
}


@pytest.mark.parametrize("case", list(MATMULS))
def test_matmul_matches_onnxruntime(case):
    notes, mod = assert_matches_ort(matmul_model(*MATMULS[case]), rtol=1e-4, atol=2e-5)
    kernel_notes = [note for note in notes if not note.startswith("weights are not attached")]  # no weights
    assert kernel_notes == [], kernel_notes


@pytest.mark.parametrize("case", ["dense-ffn-gelu", "attention-scores-softmax"])
def test_matmul_kernels_get_the_register_tile_rule(case):
    """The matmul rule, not the generic reduction rule, takes dense and batched matmul kernels."""
    from tvm import s_tir
    from tvm.relax.frontend.onnx import from_onnx

    from edgec.frontend.importer import import_proto
    from edgec.targets.cpu_schedules import Tiles, _is_matmul, prepare_for_schedules
    from edgec.targets.lowering import onnx_for_tvm

    mod = prepare_for_schedules(from_onnx(onnx_for_tvm(import_proto(matmul_model(*MATMULS[case])))[0],
                                          keep_params_in_input=True), [], Tiles.for_target(host_spec()).lanes)
    kernels = [f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]
    assert kernels
    for func in kernels:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        (block,) = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if "matmul" in sch.get(b).name_hint]
        assert _is_matmul(sch, block)


def test_transformer_encoder_matches_onnxruntime():
    """Attention with a -10000 mask, LayerNormalization and GELU, through every rule and fast math."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_models", Path(__file__).parent.parent / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.transformer_encoder(tokens=32, width=64, heads=4, layers=1, ffn=128)
    feeds = random_feeds(model)
    feeds["mask"] = np.where(np.arange(32) < 24, 0.0, -10000.0).astype(np.float32)[None]
    actual, notes, _ = run_scheduled(model, feeds)
    assert notes == [], notes
    np.testing.assert_allclose(actual[0], ort_run(model, feeds)["hidden"], rtol=1e-3, atol=1e-4)


def clip_model(lo, hi, nan_bound=False):
    """Conv then Clip(lo, hi) (ReLU6 when 0, 6); ``None`` leaves a bound out."""
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((16, 8, 3, 3)) * 0.5).astype(np.float32), "w")
    inits = [w]
    bounds = []
    for name, value in (("lo", lo), ("hi", hi)):
        bounds.append(name if value is not None else "")
        if value is not None:
            inits.append(numpy_helper.from_array(np.array(np.nan if nan_bound else value, np.float32), name))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", *bounds], ["y"], name="relu6")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])], inits, opset=13)


@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (None, 1.0), (-1.0, None)])
def test_clip_with_constant_bounds_fuses_into_the_conv(lo, hi):
    """ReLU6 and one-sided clips run in the conv's epilogue, not between two transposes."""
    _, mod = assert_matches_ort(clip_model(lo, hi))
    names = kernel_names(mod)
    op = "minimum" if hi is not None else "maximum"
    assert any("conv2d" in name and op in name for name in names), names
    assert not any("transpose" in name and op in name for name in names), names


def test_clip_with_a_nan_bound_is_left_to_tvm():
    """onnxruntime treats a NaN bound as no bound; the rewrite leaves such a Clip alone."""
    from edgec.frontend.importer import import_proto
    from edgec.targets.lowering import onnx_for_tvm

    proto = onnx_for_tvm(import_proto(clip_model(0.0, 6.0, nan_bound=True)))[0]
    assert [n.op_type for n in proto.graph.node if n.op_type in ("Clip", "Max", "Min")] == ["Clip"]
    assert_matches_ort(clip_model(0.0, 6.0, nan_bound=True))


@pytest.mark.parametrize("target, packed", [("x86-64-v3", (5, 1, 1, 24, 8)), ("x86-64-v4", (1, 1, 1, 24, 40))])
def test_channels_no_full_vector_divides_take_narrower_vectors(target, packed):
    """40 output channels: five 8-lane vectors per tile on AVX-512, where no 16-lane vector
    divides them (packed by 40), and AVX2's own 8-lane vector (packed by 8); no ragged block."""
    from edgec.targets import get_target

    _, weights, notes = compile_scheduled(conv_model(24, 40, 14, 1), get_target(target))
    assert tuple(weights[0].shape) == packed
    assert notes == []


def squeeze_excite_model(activation: str, gate: str):
    """MobileNetV3's and EfficientNet's block: conv, activation (HardSwish, or SiLU as Sigmoid and
    Mul), global pool, two 1x1 convs (ReLU between), a HardSigmoid or Sigmoid gate, scale."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
             for name, shape in (("w", (40, 16, 3, 3)), ("fc1", (8, 40, 1, 1)), ("fc2", (40, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if activation == "HardSwish":
        nodes.append(helper.make_node("HardSwish", ["c"], ["a"]))
    else:
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["a"])]
    nodes += [helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Conv", ["p", "fc1"], ["f1"]),
              helper.make_node("Relu", ["f1"], ["r"]), helper.make_node("Conv", ["r", "fc2"], ["f2"]),
              helper.make_node(gate, ["f2"], ["g"]), helper.make_node("Mul", ["a", "g"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40, 12, 12])], inits)


def test_hard_swish_and_hard_sigmoid_stay_in_the_convs_layout():
    """HardSwish and HardSigmoid import as clip, which TVM's layout conversion cannot see through;
    as maximum and minimum they fuse into the NHWC conv, with no transpose kernel."""
    notes, mod = assert_matches_ort(squeeze_excite_model("HardSwish", "HardSigmoid"))
    assert notes == [], notes
    names = kernel_names(mod)
    # Transposes only at the model's NCHW input and output, none with the activation or the gate.
    assert sorted(name for name in names if "transpose" in name or "clip" in name) == ["transpose", "transpose1"], names
    assert any("conv2d" in name and "maximum" in name for name in names), names


def test_sigmoid_runs_on_fast_exp():
    """SiLU and a sigmoid gate take the vectorizable exp, not libm's per lane, and keep results."""
    notes, mod = assert_matches_ort(squeeze_excite_model("SiLU", "Sigmoid"), rtol=1e-4, atol=1e-5)
    assert notes == [], notes
    names = kernel_names(mod)
    assert any("fast_sigmoid" in name for name in names) and not any("tir_sigmoid" in name for name in names), names


def test_gelu_op_runs_on_fast_erf():
    """ONNX's Gelu (opset 20, as torch exports ConvNeXt's) takes the polynomial erf and keeps results."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((64, 96)) / 8).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Gelu", ["m"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 49, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 49, 96])], [w], opset=20)
    notes, mod = assert_matches_ort(model, rtol=1e-4, atol=1e-5)
    assert notes == [], notes
    names = kernel_names(mod)
    assert any("fast_gelu" in name for name in names), names
    assert not any("gelu" in name.replace("fast_gelu", "") for name in names), names
