"""The quantize pass and ``edgec quantize``: placement, scale sharing, numbers against float
and against onnxruntime, the compiled artifact against onnxruntime, and bad calibration data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.cli import main
from edgec.frontend.exporter import export_model
from edgec.frontend.importer import import_proto
from edgec.ir import Model, Value, parse_model
from tests.conftest import without_progress
from tests.models import make_model, ort_run, small_cnn
from tests.passes.helpers import assert_golden, run_pass

BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,2]
  init %w: float32[2,2] = [0.5, -1.0, 0.25, 2.0]
  %y = MatMul(%x, %w) : float32[1,2]
  output %y
}
"""

# x spans [-1, 2]: scale 3/255, zero point round(-128 + 1/scale) = -43. The weight's columns
# (MatMul's output channels) have |max| 0.5 and 2: scales 0.5/127 and 2/127, so -1 -> -63.5
# and 0.25 -> 63.5 round half to even.
AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,2]
  init %x_scale0: float32[] = [0.011764706]
  init %x_zero_point1: int8[] = [-43]
  init %w_quantized6: int8[2,2] = [127, -64, 64, 127]
  init %w_scale7: float32[2] = [0.003937008, 0.015748031]
  %x_quantized2 = QuantizeLinear(%x, %x_scale0, %x_zero_point1) : int8[1,2] @"x/QuantizeLinear4"
  %x_dequantized3 = DequantizeLinear(%x_quantized2, %x_scale0, %x_zero_point1) : float32[1,2] @"x/DequantizeLinear5"
  %w_dequantized8 = DequantizeLinear(%w_quantized6, %w_scale7) {axis=1} : float32[2,2] @"w/DequantizeLinear9"
  %y = MatMul(%x_dequantized3, %w_dequantized8) : float32[1,2]
  output %y
}
"""


def save_calib(path, **arrays):
    np.savez(path, **{name: np.asarray(a, np.float32) for name, a in arrays.items()})
    return path


def quantize(model: Model, calib, **options):
    text = ",".join([f"calib={calib}"] + [f"{k.replace('_', '-')}={v}" for k, v in options.items()])
    return run_pass(f"quantize{{{text}}}", model)


def producer_op(value: Value) -> str | None:
    return value.producer.op_type if value.producer is not None else None


def qdq_params(node):
    """(scale, zero point) initializers of the DequantizeLinear feeding ``node``'s first input."""
    dq = node.inputs[0].producer
    assert dq.op_type == "DequantizeLinear"
    return dq.inputs[1], dq.inputs[2]


def test_golden_and_idempotent(tmp_path):
    calib = save_calib(tmp_path / "c.npz", x=[[1.0, -1.0], [0.5, 2.0]])
    first = quantize(parse_model(BEFORE), calib)
    assert first.modified
    assert_golden(first.model, AFTER)
    assert first.stats["quantized-ops"] == 1 and first.stats["qdq-pairs"] == 1
    second = quantize(first.model, calib)
    assert not second.modified
    assert_golden(second.model, AFTER)


def sharing_model() -> onnx.ModelProto:
    """Conv-Relu-MaxPool-Reshape, concatenated with a second input, into a Gemm."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array([1, 8], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="reshape"),
        helper.make_node("Concat", ["flat", "side"], ["cat"], axis=1, name="concat"),
        helper.make_node("Gemm", ["cat", "w2", "b2"], ["y"], transB=1, name="fc"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
              helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8])]
    return make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)


def test_scales_are_shared_through_data_movement_ops(tmp_path):
    rng = np.random.default_rng(1)
    calib = save_calib(tmp_path / "c.npz", x=rng.standard_normal((16, 1, 4, 4)), side=rng.uniform(-5, 5, (16, 8)))
    proto = sharing_model()
    result = quantize(import_proto(proto), calib)
    graph = result.model.graph
    nodes = {n.name: n for n in graph.nodes}
    shared = {name: qdq_params(nodes[name]) for name in ("pool", "reshape", "fc")}
    concat_inputs = [qdq_params_of(v) for v in nodes["concat"].inputs]
    scale, zero = shared["fc"]
    for s, z in [*shared.values(), *concat_inputs]:
        assert s is scale and z is zero
    # One range covers both branches: the union of the Relu's (which MaxPool and Reshape keep) and the side input's.
    data = np.load(calib)
    exposed = make_model(proto.graph.node, proto.graph.input, [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
                         proto.graph.initializer)
    relu = np.concatenate([ort_run(exposed, {"x": data["x"][i : i + 1], "side": data["side"][i : i + 1]})["r"] for i in range(16)])
    hi, lo = max(relu.max(), data["side"].max()), min(data["side"].min(), 0.0)
    assert relu.max() != hi or data["side"].max() != hi
    assert scale.const * 255 == pytest.approx(hi - lo, rel=1e-5)
    # The reshape's target shape stays a plain int64 constant.
    assert nodes["reshape"].inputs[1].name == "shape"
    assert result.stats["shared-groups"] == 1 and result.stats["qdq-pairs"] == 6
    # Float inputs and the graph's meaning are unchanged apart from rounding.
    feeds = {"x": rng.standard_normal((1, 1, 4, 4)).astype(np.float32), "side": rng.uniform(-5, 5, (1, 8)).astype(np.float32)}
    expected, actual = ort_run(proto, feeds)["y"], ort_run(export_model(result.model), feeds)["y"]
    np.testing.assert_allclose(actual, expected, atol=0.1 * np.abs(expected).max())


def qdq_params_of(value: Value):
    dq = value.producer
    assert dq.op_type == "DequantizeLinear"
    return dq.inputs[1], dq.inputs[2]


def test_weights_per_channel_biases_int32_and_options(tmp_path):
    model = import_proto(small_cnn())
    calib = save_calib(tmp_path / "c.npz", x=np.random.default_rng(2).standard_normal((4, 1, 3, 16, 16)))
    result = run_pass("fold-batchnorm", model)
    result = quantize(result.model, calib)
    nodes = {n.name: n for n in result.model.graph.nodes}
    weight_dq, bias_dq = nodes["conv2"].inputs[1].producer, nodes["conv2"].inputs[2].producer
    assert weight_dq.inputs[0].dtype == "int8" and weight_dq.inputs[1].shape == (16,) and weight_dq.attr("axis") == 0
    assert bias_dq.inputs[0].dtype == "int32"
    x_scale = qdq_params(nodes["conv2"])[0].const
    np.testing.assert_array_equal(bias_dq.inputs[1].const, (x_scale * weight_dq.inputs[1].const).astype(np.float32))
    assert nodes["fc"].inputs[1].producer.attr("axis") == 0  # transB=1: output channels are rows
    assert "conv1.w" not in result.model.graph.initializers  # the float weight is gone

    per_tensor = quantize(run_pass("fold-batchnorm", import_proto(small_cnn())).model, calib,
                          per_tensor_weights="true", unsigned="true", reduce_range="true")
    nodes = {n.name: n for n in per_tensor.model.graph.nodes}
    weight_dq = nodes["conv2"].inputs[1].producer
    assert weight_dq.inputs[1].shape == () and "axis" not in weight_dq.attrs
    assert np.abs(weight_dq.inputs[0].const).max() == 63
    assert qdq_params(nodes["conv2"])[1].dtype == "uint8"


def test_excluded_nodes_stay_float(tmp_path):
    model = run_pass("fold-batchnorm", import_proto(small_cnn())).model
    calib = save_calib(tmp_path / "c.npz", x=np.random.default_rng(3).standard_normal((2, 1, 3, 16, 16)))
    result = quantize(model, calib, exclude="conv2;fc")
    nodes = {n.name: n for n in result.model.graph.nodes}
    assert producer_op(nodes["conv2"].inputs[0]) == "MaxPool" and nodes["conv2"].inputs[1].dtype == "float32"
    assert producer_op(nodes["conv1"].inputs[0]) == "DequantizeLinear"
    assert result.stats["excluded"] == 2
    assert [str(d) for d in result.diagnostics] == [
        "note: node 'conv2' (Conv): kept in float (--no-quantize)", "note: node 'fc' (Gemm): kept in float (--no-quantize)"]


def residual_model() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32) * 0.5, n) for n in ("w1", "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Add", ["r1", "x"], ["sum"], name="residual"),
        helper.make_node("Conv", ["sum", "w2"], ["y"], name="conv2"),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)


def test_residual_add_inputs_are_quantized(tmp_path):
    calib = save_calib(tmp_path / "c.npz", x=np.random.default_rng(5).standard_normal((8, 1, 4, 4, 4)))
    result = quantize(import_proto(residual_model()), calib)
    add = next(n for n in result.model.graph.nodes if n.op_type == "Add")
    assert [producer_op(v) for v in add.inputs] == ["DequantizeLinear", "DequantizeLinear"]
    assert result.stats["residual-adds"] == 1 and result.stats["quantized-ops"] == 2


def attention_model() -> onnx.ModelProto:
    """One attention head whose padding mask is (1 - m) * -1e9, added to the scores."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.3).astype(np.float32), n) for n in ("wq", "wk", "wv")]
    inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array(np.array(-1e9, np.float32), "big")]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Sub", ["one", "mask"], ["inverted"], name="invert"),
        helper.make_node("Mul", ["inverted", "big"], ["bias"], name="mask_bias"),
        helper.make_node("Add", ["scores", "bias"], ["masked"], name="masked"),
        helper.make_node("Softmax", ["masked"], ["weights"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["weights", "v"], ["y"], name="context"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
              helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 4, 4])]
    return make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], inits)


def test_mask_values_stay_out_of_activation_ranges(tmp_path):
    rng = np.random.default_rng(7)
    mask = np.ones((16, 4, 4), np.float32)
    mask[:, :, 3] = 0  # the last position is padding in every sample
    calib = save_calib(tmp_path / "c.npz", x=rng.standard_normal((16, 4, 8)), mask=mask)
    proto = attention_model()
    result = quantize(import_proto(proto), calib)
    nodes = {n.name: n for n in result.model.graph.nodes}
    assert [producer_op(v) for v in nodes["masked"].inputs] == ["MatMul", "Mul"]  # the Add stays float
    assert "holds mask-like values" in str(result.diagnostics[0])
    scales = [n.inputs[1].const for n in result.model.graph.nodes if n.op_type == "QuantizeLinear"]
    assert len(scales) == 6  # x, q, kt and k (shared through the Transpose), the softmax output, v
    assert max(float(s) for s in scales) < 0.1
    feeds = {"x": rng.standard_normal((1, 4, 8)).astype(np.float32), "mask": mask[:1]}
    expected, actual = ort_run(proto, feeds)["y"].ravel(), ort_run(export_model(result.model), feeds)["y"].ravel()
    assert np.dot(expected, actual) / (np.linalg.norm(expected) * np.linalg.norm(actual)) > 0.999


# -- the command line and the compiled artifact -------------------------------------------


def edgec(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("arrays, message", [
    ({"input": np.zeros((2, 1, 3, 16, 16), np.float32)}, "no array for input(s) x"),
    ({"x": np.zeros((2, 1, 3, 8, 8), np.float32)}, "input 'x' has shape [2, 1, 3, 8, 8]"),
    ({"x": np.zeros((2, 1, 3, 16, 16), np.float16)}, "input 'x' has dtype float16"),
    ({"x": np.zeros((0, 3, 16, 16), np.float32)}, "input 'x' has no samples"),
    ({"x": np.full((2, 3, 16, 16), np.nan, np.float32)}, "NaN/Inf values"),
])
@pytest.mark.parametrize("command", ["quantize", "compile"])
def test_bad_calibration_data_is_a_usage_error(capsys, tmp_path, arrays, message, command):
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", **arrays)
    extra = ["-t", "x86-64"] if command == "compile" else []
    code, _, err = edgec(capsys, command, tmp_path / "m.onnx", "--calib", tmp_path / "bad.npz", *extra, "-o", tmp_path / "out")
    err = without_progress(err)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"edgec: error: --calib {tmp_path / 'bad.npz'}: ") and message in err
    assert not (tmp_path / "out").exists()


def test_quantize_flags_need_calib(capsys, tmp_path):
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    code, _, err = edgec(capsys, "compile", tmp_path / "m.onnx", "-t", "x86-64", "--unsigned", "-o", tmp_path / "m.edgec")
    assert code == 2 and "need --calib" in err
    code, _, err = edgec(capsys, "quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx")
    assert code == 2 and "--calib" in err


@pytest.fixture(scope="module")
def digits(request, tmp_path_factory):
    """(float .onnx, held-out .npz, calibration .npz of 300 training images)."""
    from tests.digits_cnn import INPUT, digits_fixture, digits_split

    model_path, data_path = digits_fixture(request, tmp_path_factory)
    calib = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(calib, **{INPUT: digits_split()[0][:300]})
    return model_path, data_path, calib


def ort_reference(path, feeds):
    """onnxruntime with graph optimizations off: the QDQ graph's meaning, op by op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def logits(path, images, run=lambda p, f: ort_run(p, f)["logits"]):
    return np.concatenate([run(path, {"image": images[i : i + 1]}) for i in range(len(images))])


@pytest.mark.parametrize("calibrator", ["minmax", "entropy", "percentile"])
def test_digits_qdq_accuracy_close_to_float(tmp_path, digits, calibrator):
    model_path, data_path, calib = digits
    out = tmp_path / "q.onnx"
    assert api.quantize(model_path, calib=calib, calibrator=calibrator, output=out).activation_pairs == 6
    held_out = np.load(data_path)
    images, labels = held_out["image"], held_out["labels"]
    float_top1 = np.mean(logits(model_path, images).argmax(1) == labels)
    qdq_top1 = np.mean(logits(out, images, ort_reference).argmax(1) == labels)
    assert float_top1 - qdq_top1 <= 0.005 + 1e-9, (float_top1, qdq_top1)
    # Per-channel scales and int32 biases are a large share of so small a model: 3x, not 4x.
    assert weight_bytes(model_path) / weight_bytes(out) > 3.0


def weight_bytes(path) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(path).graph.initializer)


def test_reduce_range_makes_onnxruntime_fused_kernels_exact(tmp_path, digits):
    """Without VNNI, onnxruntime's fused int8 conv saturates int16 pair sums with 8-bit weights;
    with 7-bit weights its optimized run equals the op-by-op meaning of the graph."""
    model_path, data_path, calib = digits
    out = tmp_path / "q7.onnx"
    api.quantize(model_path, calib=calib, reduce_range=True, output=out)
    images = np.load(data_path)["image"][:64]
    np.testing.assert_allclose(logits(out, images), logits(out, images, ort_reference), atol=1e-4)


def test_compiled_qdq_matches_onnxruntime(tmp_path, digits):
    """edgec's artifact, from the QDQ file or from --calib with the same weight bits (compile's
    default on AVX2 is 7), equals onnxruntime running the QDQ file."""
    from edgec.runtime import load

    model_path, data_path, calib = digits
    qdq = tmp_path / "q.onnx"
    api.quantize(model_path, calib=calib, output=qdq)
    for source, options in [(qdq, {}), (model_path, {"calib": calib, "reduce_range": False})]:
        artifact = tmp_path / f"{source.stem}.edgec"
        compiled = load(api.compile(source, "x86-64", output=artifact, **options).output)
        images = np.load(data_path)["image"][:32]
        actual = logits(artifact, images, lambda _, feeds, compiled=compiled: compiled.run(feeds)["logits"])
        np.testing.assert_allclose(actual, logits(qdq, images, ort_reference), rtol=1e-4, atol=1e-4)


def test_profile_per_tensor_scheme_reaches_compile_quantization(capsys, tmp_path):
    """A profile with quantization.scheme = per-tensor gets one weight scale per tensor from --calib."""
    from edgec.deploy.artifact import open_artifact

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(8).standard_normal((2, 1, 3, 16, 16)).astype(np.float32))
    (tmp_path / "p.toml").write_text('schema = 1\nname = "per-tensor"\n[quantization]\nrequired = true\nscheme = "per-tensor"\n')
    code, _, err = edgec(capsys, "compile", tmp_path / "m.onnx", "-t", "x86-64", "--calib", tmp_path / "c.npz",
                         "--profile", tmp_path / "p.toml", "-o", tmp_path / "m.edgec", "-q")
    assert code == 0, err
    manifest = open_artifact(tmp_path / "m.edgec").manifest
    assert "per-tensor-weights=true" in manifest["pipeline"]
    checks = {c["attribute"]: c for c in manifest["compliance"]["checks"]}
    assert checks["quantization.required"]["ok"] and checks["quantization.scheme"]["ok"]


def test_opt_checks_calibration_data_before_running(capsys, tmp_path):
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", y=np.zeros((2, 3, 16, 16), np.float32))
    code, _, err = edgec(capsys, "opt", tmp_path / "m.onnx", "--passes", f"quantize{{calib={tmp_path / 'c.npz'}}}")
    assert code == 2 and "no array for input(s) x" in err


def test_report_lists_placement_scales_and_sqnr(capsys, tmp_path):
    import json

    onnx.save(small_cnn(), tmp_path / "m.onnx")
    save_calib(tmp_path / "c.npz", x=np.random.default_rng(9).standard_normal((8, 1, 3, 16, 16)))
    code, out, err = edgec(capsys, "quantize", tmp_path / "m.onnx", "--calib", tmp_path / "c.npz", "--report",
                           "--no-quantize", "conv2", "-o", tmp_path / "q.onnx")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert list(rows) == ["conv1", "conv2", "fc"]
    assert " int8 " in rows["conv1"] and rows["conv2"].split()[2] == "float" and rows["conv2"].endswith("--no-quantize")
    record = json.loads({p.key: p.value for p in onnx.load(tmp_path / "q.onnx").metadata_props}["edgec.quantization"])
    layers = {row["node"]: row for row in record["layers"]}
    assert layers["conv1"]["weight_scales"][2] == 8 and layers["conv1"]["activation_zero_point"] is not None
    assert layers["conv2"]["activation_scale"] is None
    assert all(10 < row["sqnr_db"] < 80 for row in record["layers"])  # 8-bit noise, cumulative, is finite

    # Compiling the QDQ file carries the record into the artifact, for 'edgec report --quantization'.
    code, _, err = edgec(capsys, "compile", tmp_path / "q.onnx", "-t", "x86-64", "-o", tmp_path / "q.edgec", "-q")
    assert code == 0, err
    code, out, _ = edgec(capsys, "report", tmp_path / "q.edgec", "--quantization")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["conv1", "Conv", "int8"]
    assert "integer kernels: 2 (" in out and "SQNR: cumulative, against float, over c.npz" in out


def test_calibration_data_is_a_compile_input(capsys, tmp_path):
    """The depfile (and the cache key) include the calibration file: changing it recompiles."""
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    save_calib(tmp_path / "c.npz", x=np.random.default_rng(10).standard_normal((2, 1, 3, 16, 16)))
    code, _, err = edgec(capsys, "compile", tmp_path / "m.onnx", "-t", "x86-64", "--calib", tmp_path / "c.npz",
                         "--depfile", tmp_path / "m.d", "-o", tmp_path / "m.edgec", "-q")
    assert code == 0, err
    assert str(tmp_path / "c.npz") in (tmp_path / "m.d").read_text()


def test_compile_takes_the_targets_weight_bits(capsys, tmp_path):
    """AVX2 targets ask for 7-bit weights (their uint8 x int8 dot product saturates with 8-bit
    ones); --full-range overrides, and either flag without --calib is a usage error."""
    from edgec.deploy.artifact import open_artifact
    from edgec.targets import get_target

    assert get_target("x86-64-v3").int8_weight_bits == 7 and get_target("arm64-a72").int8_weight_bits == 8
    onnx.save(small_cnn(), tmp_path / "m.onnx")
    save_calib(tmp_path / "c.npz", x=np.random.default_rng(11).standard_normal((2, 1, 3, 16, 16)))
    seven_bit = get_target("x86-64").int8_weight_bits == 7
    for flags, reduced in (((), seven_bit), (("--full-range",), False), (("--reduce-range",), True)):
        code, _, err = edgec(capsys, "compile", tmp_path / "m.onnx", "-t", "x86-64", "--calib", tmp_path / "c.npz",
                             *flags, "-o", tmp_path / "m.edgec", "-q")
        assert code == 0, err
        assert ("reduce-range=true" in open_artifact(tmp_path / "m.edgec").manifest["pipeline"]) == reduced, flags
    code, _, err = edgec(capsys, "compile", tmp_path / "m.onnx", "-t", "x86-64", "--full-range", "-o", tmp_path / "n.edgec")
    assert code == 2 and "need --calib" in err


def test_checking_an_int8_artifact_against_the_float_model_points_to_the_qdq_file(capsys, tmp_path, digits):
    """int8 outputs differ from the float model's by design: the mismatch says what to compare."""
    model_path, _, calib = digits
    artifact = api.compile(model_path, "x86-64", calib=calib, output=tmp_path / "d.edgec").output
    code, _, err = edgec(capsys, "check", artifact, "--model", model_path, "--rtol", "0", "--atol", "1e-6")
    assert code == 1
    assert "the artifact is quantized (int8) and the model is float: compare it with the QDQ model" in err
