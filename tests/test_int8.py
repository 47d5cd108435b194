"""Integer lowering: quantized conv2d/matmul become int8 x int8 -> int32 kernels, the
lowered TIR shows it, and the compiled artifact stays within 1 LSB of onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.frontend.importer import load_model
from edgec.host import cpu_features
from tests.models import make_model, small_cnn

tvm = pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def qdq_cnn(tmp_path_factory):
    return quantized_cnn(tmp_path_factory.mktemp("int8"))


def quantized_cnn(folder, **options):
    """small_cnn quantized by ``edgec quantize``, with the int8 input of conv2 (MaxPool's
    output after its Q/DQ) exposed as an extra graph output."""
    onnx.save(small_cnn(), folder / "cnn.onnx")
    np.savez(folder / "calib.npz", x=np.random.default_rng(0).standard_normal((8, 1, 3, 16, 16)).astype(np.float32))
    api.quantize(folder / "cnn.onnx", calib=folder / "calib.npz", output=folder / "q.onnx", **options)
    proto = onnx.load(folder / "q.onnx")
    conv2 = next(n for n in proto.graph.node if n.name == "conv2")
    proto.graph.output.append(helper.make_tensor_value_info(conv2.input[0], TensorProto.FLOAT, [1, 8, 8, 8]))
    onnx.save(proto, folder / "q.onnx")
    return folder / "q.onnx"


def imported(path):
    from edgec.targets.lowering import onnx_for_tvm
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx_for_tvm(load_model(path, {}))[0], keep_params_in_input=True)  # [1]: its shape inputs


def test_linear_ops_become_integer_kernels(qdq_cnn):
    from edgec.targets.int8 import lower_integer_kernels
    from tvm import relax
    from tvm.ir.expr import Call

    mod, report = lower_integer_kernels(imported(qdq_cnn))
    assert report.lowered == ["conv2d+bias", "conv2d+bias", "matmul+bias"] and report.kept_float == []
    calls = []

    def visit(expr):
        if isinstance(expr, Call) and getattr(expr.op, "name", "") in ("relax.nn.conv2d", "relax.matmul"):
            calls.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    assert len(calls) == 3
    for call in calls:
        assert [str(arg.ty.dtype) for arg in call.args] == ["int8", "int8"]
        assert str(call.ty.dtype) == "int32"

    # Legalized to TIR: int8 buffers in, int32 out, products accumulated in int32, no float at all.
    legalized = relax.transform.LegalizeOps()(mod)
    kernels = {gv.name_hint: f.script() for gv, f in legalized.functions.items()
               if gv.name_hint.startswith(("conv2d", "matmul"))}
    assert len(kernels) == 3, list(kernels)
    for name, text in kernels.items():
        header = text[text.index("def main("):text.index("):")]
        assert header.count('"int8")') == 2 and header.count('"int32")') == 1, name
        assert 'T.Cast("int32"' in text and "float" not in text, name


def test_patterns_that_cannot_be_integer_stay_float_with_a_reason():
    """An asymmetric weight (zero point 3) cannot use the folded correction."""
    from edgec.targets.int8 import lower_integer_kernels

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(rng.integers(-50, 50, (4, 2, 1, 1)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"), numpy_helper.from_array(np.array(3, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
        helper.make_node("Conv", ["xd", "w"], ["y"]),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    from edgec.targets.lowering import onnx_for_tvm
    from tvm.relax.frontend.onnx import from_onnx

    from edgec.frontend.importer import convert_model

    _, report = lower_integer_kernels(from_onnx(onnx_for_tvm(convert_model(proto))[0], keep_params_in_input=True))
    assert report.lowered == []
    assert report.kept_float == ["conv2d: weight is not symmetric (zero point not 0) or its scale is not constant"]


@pytest.mark.parametrize("options", [{}, {"unsigned": True}, {"reduce_range": True}])
def test_compiled_integer_kernels_within_one_lsb_of_onnxruntime(tmp_path, options):
    """int8, uint8 shifted to int8 (8-bit weights), and uint8 on the dot product (7-bit)."""
    import onnxruntime as ort

    from edgec.deploy.artifact import open_artifact
    from edgec.runtime import load

    qdq_cnn = quantized_cnn(tmp_path, **options)
    artifact = tmp_path / "q.edgec"
    api.compile(qdq_cnn, "x86-64", output=artifact)
    assert open_artifact(artifact).manifest["target"]["integer_kernels"]["lowered"] == ["conv2d+bias", "conv2d+bias", "matmul+bias"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph's meaning, op by op
    session = ort.InferenceSession(str(qdq_cnn), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    proto = onnx.load(qdq_cnn)
    dq = next(n for n in proto.graph.node if n.output[0] == names[1])
    lsb = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == dq.input[1]))
    compiled = load(artifact)
    rng = np.random.default_rng(2)
    for _ in range(8):
        feeds = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
        expected = dict(zip(names, session.run(None, feeds)))
        actual = compiled.run(feeds)
        assert np.abs(actual[names[1]] - expected[names[1]]).max() <= lsb * 1.001  # the requantized int8 activation
        np.testing.assert_allclose(actual["logits"], expected["logits"], atol=0.05 * np.abs(expected["logits"]).max())


UNSIGNED_7BIT = {"unsigned": True, "reduce_range": True}


@pytest.mark.parametrize("dot, options, conv_input", [
    ("avx2", {"unsigned": True}, "int8"), ("avx2", UNSIGNED_7BIT, "uint8"), ("avx2", {"reduce_range": True}, "uint8"),
    ("sdot", UNSIGNED_7BIT, "int8"), (None, UNSIGNED_7BIT, "int8")])
def test_activation_dtype_follows_the_dot_product(tmp_path, dot, options, conv_input):
    """The contract with the dot-product schedules: on AVX2 a conv reads uint8 activations only
    when its weights are 7-bit (so uint8 x int8 pair sums cannot saturate int16); otherwise,
    and on arm64's sdot (exact for any weights) or without a dot product, int8, shifted by 128
    from uint8. All accumulate in int32."""
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import AVX2_U8I8, NEON_SDOT
    from tvm import relax

    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(3).standard_normal((4, 1, 3, 16, 16)).astype(np.float32))
    api.quantize(tmp_path / "cnn.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx", **options)
    mod, report = lower_integer_kernels(imported(tmp_path / "q.onnx"), {"avx2": AVX2_U8I8, "sdot": NEON_SDOT}.get(dot))
    assert report.lowered == ["conv2d+bias", "conv2d+bias", "matmul+bias"]
    text = relax.transform.LegalizeOps()(mod).script()
    channels = 4 if dot == "sdot" or conv_input == "uint8" else 3  # the stem padded to the dot product's 4 inputs
    assert f'T.Buffer((T.int64(1), T.int64({channels}), T.int64(18), T.int64(18)), "{conv_input}")' in text  # conv1's input


def dot_product_cnn() -> onnx.ModelProto:
    """Conv shapes the dot-product rule meets: an RGB stem (3 input channels, padded to 4),
    3x3 stride 2 onto a 7-wide map, a 1x1 on it (24 channels: three vectors), and a 1x1
    with 20 output channels (not whole vectors: the generic rule)."""
    rng = np.random.default_rng(7)
    shapes = {"c1": (16, 3, 3, 3), "c2": (32, 16, 3, 3), "c3": (24, 32, 1, 1), "c4": (20, 24, 1, 1)}
    inits, nodes, x = [], [], "x"
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:]))
        inits += [numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32), f"{name}.w"),
                  numpy_helper.from_array(rng.normal(0, 0.1, shape[0]).astype(np.float32), f"{name}.b")]
        k = shape[2]
        attrs = {"pads": [k // 2] * 4, "strides": [2, 2] if name == "c2" else [1, 1]}
        nodes += [helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], name=name, **attrs),
                  helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"], name=f"{name}.relu")]
        x = f"{name}.r"
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 14, 14])],
                      [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 20, 7, 7])], inits)


def test_dot_product_kernels_are_avx2_integer_instructions_and_exact(tmp_path):
    """With 7-bit weights, the convs whose channels fit are scheduled on vpmaddubsw/vpmaddwd (in the
    scheduled TIR, for an AVX2 target), and the compiled artifact matches onnxruntime running the
    QDQ graph op by op to float rounding: the int16 pair sums never saturate."""
    import onnxruntime as ort
    from edgec.targets import get_target
    from edgec.targets.cpu_schedules import schedule_for_cpu
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import AVX2_U8I8

    from edgec.runtime import load

    onnx.save(dot_product_cnn(), tmp_path / "m.onnx")
    rng = np.random.default_rng(8)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 14, 14)).astype(np.float32))
    api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", reduce_range=True, output=tmp_path / "q.onnx")

    mod, report = lower_integer_kernels(imported(tmp_path / "q.onnx"), AVX2_U8I8)
    assert report.lowered == ["conv2d+bias"] * 4
    scheduled, _ = schedule_for_cpu(mod, get_target("x86-64-v3"))
    dot = sorted(gv.name_hint for gv, f in scheduled.functions_items()
                 if "llvm.x86.avx2.pmadd.ub.sw" in f.script() and "llvm.x86.avx2.pmadd.wd" in f.script())
    assert len(dot) == 3, dot  # the stem, the stride-2 3x3, the 24-channel 1x1; not the 20-channel one

    if "avx2" not in cpu_features():
        pytest.skip("this CPU has no AVX2: the dot-product kernels cannot run here")
    api.compile(tmp_path / "q.onnx", "x86-64", output=tmp_path / "q.edgec")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    compiled = load(tmp_path / "q.edgec")
    for _ in range(4):
        feeds = {"x": rng.standard_normal((1, 3, 14, 14)).astype(np.float32)}
        expected = session.run(None, feeds)[0]
        np.testing.assert_allclose(compiled.run(feeds)["c4.r"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_scales_passed_as_weights_are_read_too(tmp_path):
    """Lowering passes float tensors over 256 bytes as weights, so 80 per-channel scales
    arrive as a function parameter, not a constant; the conv still becomes integer."""
    from edgec.targets.int8 import lower_integer_kernels

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((80, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(80).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 80, 8, 8])], inits)
    onnx.save(proto, tmp_path / "wide.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((2, 1, 3, 8, 8)).astype(np.float32))
    api.quantize(tmp_path / "wide.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx")
    module = imported(tmp_path / "q.onnx")
    assert len(module["main"].params) > 1  # the scales really are parameters here
    _, report = lower_integer_kernels(module)
    assert report.lowered == ["conv2d+bias"] and report.kept_float == []


def transformer_encoder(**sizes) -> onnx.ModelProto:
    """The benchmarks' small BERT-style encoder (its mask input is 0 or -10000 per token)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_models", Path(__file__).parent.parent / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.transformer_encoder(**sizes)


def test_transformer_encoder_int8_close_to_float_and_to_onnxruntime(tmp_path):
    """Every MatMul of the encoder becomes integer, attention's activation x activation ones
    included; the int8 artifact stays within cosine 0.99 of float and matches onnxruntime's QDQ."""
    import onnxruntime as ort

    from edgec.deploy.artifact import open_artifact
    from edgec.runtime import load

    onnx.save(transformer_encoder(tokens=32, width=64, heads=4, layers=1, ffn=128), tmp_path / "enc.onnx")
    rng = np.random.default_rng(5)
    lengths = rng.integers(16, 33, 24)
    masks = np.where(np.arange(32)[None, :] < lengths[:, None], 0.0, -10000.0).astype(np.float32)[:, None, :]
    embeddings = rng.standard_normal((24, 1, 32, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", embeddings=embeddings[:16], mask=masks[:16])
    api.quantize(tmp_path / "enc.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx")
    api.compile(tmp_path / "q.onnx", "x86-64", output=tmp_path / "q.edgec")
    kernels = open_artifact(tmp_path / "q.edgec").manifest["target"]["integer_kernels"]
    assert sorted(kernels["lowered"]) == ["matmul"] * 6 + ["matmul-activations"] * 2 and kernels["kept_float"] == []

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    float_session = ort.InferenceSession(str(tmp_path / "enc.onnx"), options, providers=["CPUExecutionProvider"])
    qdq_session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    compiled = load(tmp_path / "q.edgec")
    for i in range(16, 24):  # held out from calibration
        feeds = {"embeddings": embeddings[i], "mask": masks[i]}
        reference, qdq = float_session.run(None, feeds)[0].ravel(), qdq_session.run(None, feeds)[0].ravel()
        actual = compiled.run(feeds)["hidden"].ravel()
        assert actual @ reference / (np.linalg.norm(actual) * np.linalg.norm(reference)) > 0.99
        assert actual @ qdq / (np.linalg.norm(actual) * np.linalg.norm(qdq)) > 0.9999


def test_vnni_target_compiles_its_convs_to_vpdpbusd(tmp_path):
    """x86-64-vnni (AVX-512 VNNI): every conv reads uint8 (vpdpbusd is exact for 8-bit weights)
    and those with whole 16-channel registers are tensorized; the linked library holds the
    instruction. Running it needs a VNNI CPU (the next test)."""
    import shutil
    import subprocess

    from edgec.targets import get_target
    from edgec.targets.cpu_schedules import schedule_for_cpu
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import AVX512_VNNI, dot_product_for

    from edgec.deploy.artifact import open_artifact

    vnni = get_target("x86-64-vnni")
    assert dot_product_for(vnni) is AVX512_VNNI and vnni.int8_weight_bits == 8
    onnx.save(dot_product_cnn(), tmp_path / "m.onnx")
    rng = np.random.default_rng(10)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 14, 14)).astype(np.float32))
    api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx")
    mod, _ = lower_integer_kernels(imported(tmp_path / "q.onnx"), AVX512_VNNI)
    scheduled, _ = schedule_for_cpu(mod, vnni)
    assert sum("llvm.x86.avx512.vpdpbusd.512" in f.script() for _, f in scheduled.functions_items()) == 2  # 16, 32 channels

    api.compile(tmp_path / "q.onnx", "x86-64-vnni", output=tmp_path / "q.edgec")
    artifact = open_artifact(tmp_path / "q.edgec")
    (tmp_path / "model.so").write_bytes(artifact.read_member(artifact.libraries()[0]))
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed to disassemble the library")
    disassembly = subprocess.run(["objdump", "-d", str(tmp_path / "model.so")], capture_output=True, text=True, check=True)
    assert "vpdpbusd" in disassembly.stdout


@pytest.mark.skipif("avx512_vnni" not in cpu_features(),
                    reason="this CPU has no AVX-512 VNNI: the vpdpbusd kernels are compiled (test above), not run")
def test_vnni_artifact_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    from edgec.runtime import load

    onnx.save(dot_product_cnn(), tmp_path / "m.onnx")
    rng = np.random.default_rng(10)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 14, 14)).astype(np.float32))
    api.quantize(tmp_path / "m.onnx", calib=tmp_path / "calib.npz", output=tmp_path / "q.onnx")
    api.compile(tmp_path / "q.onnx", "x86-64-vnni", output=tmp_path / "q.edgec")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    compiled = load(tmp_path / "q.edgec")
    feeds = {"x": rng.standard_normal((1, 3, 14, 14)).astype(np.float32)}
    expected = session.run(None, feeds)[0]
    np.testing.assert_allclose(compiled.run(feeds)["c4.r"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
