"""onnxruntime's quantized formats: its QOperator ops (QLinearConv, com.microsoft's QLinearAdd,
QGemm...) and its dynamic quantization (DynamicQuantizeLinear, MatMulInteger, ConvInteger)
compile to integer kernels and match onnxruntime run op by op (graph optimizations off)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main
from edgec.errors import ModelError
from edgec.frontend.importer import load_model
from tests.models import make_model

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

U8, I8, I32, F32 = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.FLOAT
RNG = np.random.default_rng(3)


def reference(model: onnx.ModelProto | str, feeds: dict, optimized: bool = False) -> dict[str, np.ndarray]:
    """onnxruntime's outputs; op by op unless ``optimized`` (its fused AVX2 kernels saturate
    with 8-bit weights, so they are not the reference for 8-bit QOperator models)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def compiled(model: onnx.ModelProto | str, folder, *flags):
    """The loaded artifact and its manifest's integer kernels."""
    from edgec.deploy.artifact import open_artifact
    from edgec.runtime import load

    path = folder / "model.onnx"
    if isinstance(model, onnx.ModelProto):
        onnx.save(model, path)
    else:
        path = model
    artifact = folder / "model.edgec"
    assert main(["compile", str(path), "-t", "x86-64", "-o", str(artifact), "-q", *flags]) == 0
    return load(artifact), open_artifact(artifact).manifest["target"].get("integer_kernels")


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def quantized(name: str, dtype: int, shape) -> tuple[onnx.ValueInfoProto, np.ndarray]:
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(dtype))
    return (helper.make_tensor_value_info(name, dtype, shape),
            RNG.integers(info.min, int(info.max) + 1, shape).astype(helper.tensor_dtype_to_np_dtype(dtype)))


def integer_ops_model():
    """QLinearConv (per-channel int8 weight, bias, odd strides/pads/dilations; depthwise with a
    uint8 weight, zero point 128), QLinearMatMul (3-D int8), QGemm (transB, bias; and a float
    result with alpha, untransposed), ConvInteger (uint8 weights, zero points 128, 10
    and 200, grouped; a grouped one with a run-time weight, which stays int32), MatMulInteger
    (uint8 weight, zero point 17) and DynamicQuantizeLinear into MatMulInteger."""
    (x_info, x), (a_info, a), (g_info, g) = quantized("x", U8, [1, 5, 7, 9]), quantized("a", I8, [2, 3, 7]), quantized("g", U8, [3, 7])
    rw_info, rw = quantized("rw", U8, [10, 1, 2, 2])
    f = RNG.standard_normal((4, 7)).astype(np.float32)
    inits = [
        const("xs", np.float32(0.05)), const("xz", np.uint8(131)), const("as", np.float32(0.04)), const("az", np.int8(-4)),
        const("gs", np.float32(0.03)), const("gz", np.uint8(120)),
        const("w", RNG.integers(-127, 128, (6, 5, 3, 2)).astype(np.int8)), const("ws", RNG.uniform(0.002, 0.01, 6).astype(np.float32)),
        const("wz", np.zeros(6, np.int8)), const("bias", RNG.integers(-2000, 2000, 6).astype(np.int32)),
        const("ys", np.float32(0.4)), const("yz", np.uint8(118)),
        const("dw", RNG.integers(0, 256, (5, 1, 3, 3)).astype(np.uint8)), const("dws", np.float32(0.01)), const("dwz", np.uint8(128)),
        const("mw", RNG.integers(-128, 128, (7, 9)).astype(np.int8)), const("mws", np.float32(0.02)), const("mwz", np.int8(0)),
        const("mys", np.float32(0.3)), const("myz", np.int8(5)),
        const("qw", RNG.integers(-128, 128, (9, 7)).astype(np.int8)), const("qws", np.float32(0.01)), const("qwz", np.int8(0)),
        const("qw2", RNG.integers(-128, 128, (7, 9)).astype(np.int8)), const("qb", RNG.integers(-500, 500, 9).astype(np.int32)), const("qys", np.float32(0.2)), const("qyz", np.uint8(100)),
        const("cw", RNG.integers(0, 256, (4, 5, 3, 3)).astype(np.uint8)), const("cwz", np.uint8(10)),
        const("cw2", RNG.integers(0, 256, (3, 5, 2, 2)).astype(np.uint8)), const("cwz2", np.uint8(128)),
        const("gw", RNG.integers(0, 256, (10, 1, 3, 3)).astype(np.uint8)), const("gwz", np.uint8(200)),
        const("iw", RNG.integers(0, 256, (7, 9)).astype(np.uint8)), const("iwz", np.uint8(17)),
        const("fw", RNG.integers(-128, 128, (7, 5)).astype(np.int8)),
    ]
    nodes = [
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"], ["conv"],
                         strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2]),
        helper.make_node("QLinearConv", ["x", "xs", "xz", "dw", "dws", "dwz", "ys", "yz"], ["depthwise"], group=5, pads=[1, 1, 1, 1]),
        helper.make_node("QLinearMatMul", ["a", "as", "az", "mw", "mws", "mwz", "mys", "myz"], ["matmul"]),
        helper.make_node("QGemm", ["g", "gs", "gz", "qw", "qws", "qwz", "qb", "qys", "qyz"], ["gemm"], transB=1, domain="com.microsoft"),
        helper.make_node("QGemm", ["g", "gs", "gz", "qw2", "qws", "qwz", "qb"], ["gemm_float"], alpha=0.5,
                         domain="com.microsoft"),
        helper.make_node("ConvInteger", ["x", "cw", "xz", "cwz"], ["conv_integer"], pads=[1, 1, 1, 1]),
        helper.make_node("ConvInteger", ["x", "cw2", "xz", "cwz2"], ["conv_integer_fits"], strides=[2, 3]),
        helper.make_node("ConvInteger", ["x", "gw", "xz", "gwz"], ["conv_integer_grouped"], group=5, pads=[2, 1, 0, 1],
                         strides=[1, 2], dilations=[2, 1]),
        helper.make_node("ConvInteger", ["x", "rw", "xz"], ["conv_integer_runtime"], group=5),
        helper.make_node("MatMulInteger", ["g", "iw", "gz", "iwz"], ["matmul_integer"]),
        helper.make_node("DynamicQuantizeLinear", ["f"], ["fq", "fs", "fz"]),
        helper.make_node("MatMulInteger", ["fq", "fw", "fz"], ["dynamic"]),
    ]
    outputs = [("conv", U8), ("depthwise", U8), ("matmul", I8), ("gemm", U8), ("gemm_float", F32), ("conv_integer", I32),
               ("conv_integer_fits", I32), ("conv_integer_grouped", I32), ("conv_integer_runtime", I32), ("matmul_integer", I32), ("dynamic", I32), ("fq", U8)]
    model = make_model(nodes, [x_info, a_info, g_info, rw_info, helper.make_tensor_value_info("f", F32, [4, 7])],
                       [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs], inits)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, {"x": x, "a": a, "g": g, "rw": rw, "f": f}


def test_integer_ops_become_integer_kernels_and_match_onnxruntime(tmp_path):
    model, feeds = integer_ops_model()
    artifact, kernels = compiled(model, tmp_path)
    assert sorted(kernels["lowered"]) == ["conv2d-integer"] * 5 + ["matmul-integer"] * 5
    assert kernels["kept_int32"] == ["conv2d: the weight is not a constant"]
    assert kernels["kept_float"] == []
    expected, actual = reference(model, feeds), artifact.run(feeds)
    # Integer ops exact; requantized ones too, since the requantize is onnxruntime's float32 one.
    for name in ("conv_integer", "conv_integer_fits", "conv_integer_grouped", "conv_integer_runtime", "matmul_integer",
                 "dynamic", "fq", "conv", "depthwise", "matmul", "gemm"):
        assert actual[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    for name in ("conv", "depthwise", "matmul", "gemm"):
        assert len(np.unique(expected[name])) > 10, name  # not saturated
    np.testing.assert_allclose(actual["gemm_float"], expected["gemm_float"], rtol=1e-6)


def contrib_ops_model():
    """com.microsoft's QLinear elementwise, pooling and concat ops, with broadcasting, odd sizes
    and attributes."""
    (x_info, x), (y_info, y), (z_info, z) = (quantized("x", U8, [1, 3, 7, 9]), quantized("y", U8, [1, 3, 1, 9]),
                                             quantized("z", U8, [1, 2, 7, 9]))
    inits = [const("xs", np.float32(0.05)), const("xz", np.uint8(128)), const("ys", np.float32(0.03)), const("yz", np.uint8(90)),
             const("zs", np.float32(0.07)), const("zz", np.uint8(10)), const("os", np.float32(0.06)), const("oz", np.uint8(100)),
             const("ss", np.float32(1 / 256)), const("sz", np.uint8(0))]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("QLinearAdd", ["x", "xs", "xz", "y", "ys", "yz", "os", "oz"], ["add"], domain=ms),
        helper.make_node("QLinearMul", ["x", "xs", "xz", "y", "ys", "yz", "os", "oz"], ["mul"], domain=ms),
        helper.make_node("QLinearSigmoid", ["x", "xs", "xz", "ss", "sz"], ["sigmoid"], domain=ms),
        helper.make_node("QLinearLeakyRelu", ["x", "xs", "xz", "os", "oz"], ["leaky"], alpha=0.2, domain=ms),
        helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "os", "oz"], ["gap"], channels_last=0, domain=ms),
        helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "os", "oz"], ["avg"], kernel_shape=[3, 2], strides=[2, 2],
                         pads=[1, 0, 1, 1], count_include_pad=1, domain=ms),
        helper.make_node("QLinearConcat", ["os", "oz", "x", "xs", "xz", "z", "zs", "zz"], ["concat"], axis=1, domain=ms),
    ]
    names = ["add", "mul", "sigmoid", "leaky", "gap", "avg", "concat"]
    model = make_model(nodes, [x_info, y_info, z_info], [helper.make_tensor_value_info(n, U8, None) for n in names], inits)
    model.opset_import.append(helper.make_opsetid(ms, 1))
    return model, {"x": x, "y": y, "z": z}


def test_contrib_ops_import_as_qdq_and_match_onnxruntime(tmp_path):
    model, feeds = contrib_ops_model()
    onnx.save(model, tmp_path / "contrib.onnx")
    imported = load_model(tmp_path / "contrib.onnx")
    assert {n.domain for n in imported.graph.nodes} <= {"", "ai.onnx"}
    assert {"Add", "Mul", "Sigmoid", "LeakyRelu", "GlobalAveragePool", "AveragePool", "Concat"} <= {n.op_type for n in imported.graph.nodes}
    artifact, _ = compiled(model, tmp_path)
    expected, actual = reference(model, feeds), artifact.run(feeds)
    for name, value in expected.items():
        assert actual[name].shape == value.shape and actual[name].dtype == value.dtype, name
        assert np.abs(actual[name].astype(np.int32) - value.astype(np.int32)).max() <= 1, name


@pytest.mark.parametrize("node, message", [
    (helper.make_node("QLinearAveragePool", ["x", "s", "z", "s", "z"], ["y"], kernel_shape=[2, 2], channels_last=1,
                      domain="com.microsoft"), "channels_last=1"),
    (helper.make_node("QLinearSoftmax", ["x", "s", "z", "s", "z"], ["y"], axis=1, domain="com.microsoft"),
     "unknown op domain 'com.microsoft'"),
    (helper.make_node("QLinearAdd", ["x", "s", "z"], ["y"], domain="com.microsoft"), "3 inputs is not a valid number"),
    (helper.make_node("QLinearConcat", ["s", "z", "x", "s", "z"], ["y"], domain="com.microsoft"), "axis attribute is required"),
    (helper.make_node("QLinearLeakyRelu", ["x", "s", "z", "s", "z"], ["y"], alpha=[1, 2], domain="com.microsoft"),
     "attribute 'alpha'"),
])
def test_unsupported_qoperator_forms_are_refused_in_one_line(tmp_path, node, message):
    model = make_model([node], [helper.make_tensor_value_info("x", U8, [1, 2, 4, 4])], [helper.make_tensor_value_info("y", U8, None)],
                       [const("s", np.float32(0.1)), const("z", np.uint8(3))])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=message) as error:
        load_model(tmp_path / "m.onnx")
    assert "\n" not in str(error.value)


def mobilenet_v2_style():
    """Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, ReLU6, residual adds),
    global average pooling and a linear head: MobileNetV2's structure, small, random weights."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU6(),
                                      nn.Conv2d(mid, mid, 3, stride, 1, groups=mid), nn.BatchNorm2d(mid), nn.ReLU6(),
                                      nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
            self.blocks = nn.Sequential(Block(8, 8, 1, 2), Block(8, 16, 2, 3), Block(16, 16, 1, 3))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
            return self.head(x.flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    for module in net.modules():  # trained-looking batch norms, so activations spread
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def qoperator_cnn(tmp_path_factory):
    """The MobileNetV2-style CNN quantized by onnxruntime's tool in QOperator format: 7-bit
    per-channel weights (reduce_range), uint8 activations, calibrated on 8 samples."""
    pytest.importorskip("torch")
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    folder = tmp_path_factory.mktemp("qoperator")
    torch.onnx.export(mobilenet_v2_style(), torch.randn(1, 3, 32, 32), str(folder / "cnn.onnx"), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["logits"])

    class Samples(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.samples = iter([{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.samples, None)

    quantize_static(str(folder / "cnn.onnx"), str(folder / "q.onnx"), Samples(), quant_format=QuantFormat.QOperator,
                    per_channel=True, reduce_range=True)
    return folder / "q.onnx"


def test_qoperator_mobilenet_compiles_to_integer_kernels_within_one_lsb(qoperator_cnn, tmp_path, capsys):
    proto = onnx.load(qoperator_cnn)
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert ("com.microsoft", "QLinearAdd") in ops and ("com.microsoft", "QGemm") in ops  # what the tool writes
    artifact, kernels = compiled(qoperator_cnn, tmp_path)
    convs = ops.count(("", "QLinearConv"))
    assert sorted(kernels["lowered"]) == ["conv2d-integer"] * convs + ["matmul-integer"] and convs >= 10
    assert kernels["kept_float"] == [] and kernels["kept_int32"] == []
    assert main(["report", "--quantization", str(tmp_path / "model.edgec")]) == 0
    assert f"integer kernels: {convs + 1} (conv2d-integer x{convs}, matmul-integer x1)" in capsys.readouterr().out
    from edgec.deploy.artifact import open_artifact
    from edgec.reports.report import macs

    float_macs = sum(macs(node) for node in load_model(qoperator_cnn.parent / "cnn.onnx").graph.nodes)
    assert open_artifact(tmp_path / "model.edgec").manifest["report"]["totals"]["macs"] == float_macs > 0  # integer ops counted

    dequantize = next(n for n in proto.graph.node if n.output[0] == "logits")
    lsb = float(numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == dequantize.input[1])))
    rng = np.random.default_rng(7)
    for _ in range(4):
        feeds = {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
        expected, actual = reference(qoperator_cnn, feeds)["logits"], artifact.run(feeds)["logits"]
        assert np.abs(actual - expected).max() <= lsb * 1.001
        assert np.abs(expected).max() > 10 * lsb  # the logits are not all one step


def test_qoperator_mobilenet_runs_on_a_cortex_m4_within_one_lsb(qoperator_cnn, tmp_path):
    """The translated requantization casts float to int8, which TVM writes with isfinite, and
    isfinite with fabs: the microcontroller's C kernels need both spelled in C."""
    import shutil

    from edgec.runtime import load

    missing = [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "make") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the Cortex-M targets need {', '.join(missing)}")
    artifact = tmp_path / "m4.edgec"
    assert main(["compile", str(qoperator_cnn), "-t", "cortex-m4", "-o", str(artifact), "-q"]) == 0
    proto = onnx.load(qoperator_cnn)
    dequantize = next(n for n in proto.graph.node if n.output[0] == "logits")
    lsb = float(numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == dequantize.input[1])))
    firmware, rng = load(artifact), np.random.default_rng(11)
    for _ in range(2):
        feeds = {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
        expected, actual = reference(qoperator_cnn, feeds)["logits"], firmware.run(feeds)["logits"]
        assert np.abs(actual - expected).max() <= lsb * 1.001 and np.abs(expected).max() > 10 * lsb


@pytest.fixture(scope="module")
def dynamic_bert(tmp_path_factory):
    """A 2-layer BERT (hidden size 32) quantized by onnxruntime's quantize_dynamic."""
    pytest.importorskip("transformers")
    from onnxruntime.quantization import quantize_dynamic

    from tests.transformer_models import export

    folder = tmp_path_factory.mktemp("dynamic")
    path, feeds = export("bert", "torchscript", folder / "bert.onnx")
    quantize_dynamic(str(path), str(folder / "q.onnx"))
    return folder / "q.onnx", feeds


def test_dynamic_quantized_transformer_runs_integer_matmuls_close_to_onnxruntime(dynamic_bert, tmp_path, capsys):
    path, feeds = dynamic_bert
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "DynamicQuantizeLinear" in ops
    artifact, kernels = compiled(path, tmp_path, "--dim", "batch=1", "--dim", "seq=8")
    assert kernels["lowered"] == ["matmul-integer"] * ops.count("MatMulInteger")
    assert kernels["kept_float"] == [] and kernels["kept_int32"] == []
    assert main(["report", "--quantization", "--json", str(tmp_path / "model.edgec")]) == 0
    assert json.loads(capsys.readouterr().out)["integer_kernels"]["lowered"] == kernels["lowered"]
    expected = next(iter(reference(path, feeds, optimized=True).values())).ravel()
    actual = next(iter(artifact.run(feeds).values())).ravel()
    assert actual @ expected / (np.linalg.norm(actual) * np.linalg.norm(expected)) >= 0.999
    assert np.abs(actual - expected).max() <= 0.02 * np.abs(expected).max()
