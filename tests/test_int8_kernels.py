"""Integer kernels of MobileNet-style blocks: depthwise convs whose channels no 16-lane register
divides, stride 2 and padding, 1x1 projections to 24 and 40 channels (256-bit vpdpbusd), an odd
channel count (the generic loop), and a classifier Gemm lowered as a 1x1 conv. The schedules
are checked on pinned targets (any x86-64 host); the artifacts run where the host has the ISA."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import api
from edgec.host import cpu_features
from tests.models import make_model

tvm = pytest.importorskip("tvm")

STAGES = [("stem", 3, 24, 3, 2, 1), ("dw1", 24, 24, 3, 1, 24), ("pw1", 24, 40, 1, 1, 1),
          ("dw2", 40, 40, 3, 2, 40), ("pw2", 40, 24, 1, 1, 1), ("odd", 24, 7, 3, 1, 1)]
"""(name, in, out, kernel, stride, groups): the channel counts are multiples of 8, not 16, then 7."""


def mobilenet_block() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    nodes, inits, x = [], [], "x"
    for name, cin, cout, k, stride, groups in STAGES:
        w = rng.standard_normal((cout, cin // groups, k, k)) / np.sqrt(cin // groups * k * k)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}.w"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), f"{name}.b")]
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=groups, name=name))
        x = f"{name}.y"
        if name != "pw2":  # a linear bottleneck, as MobileNetV2's projections
            nodes.append(helper.make_node("Relu", [x], [f"{name}.r"], name=f"{name}.relu"))
            x = f"{name}.r"
    inits += [numpy_helper.from_array((0.3 * rng.standard_normal((16, 7))).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(16, np.float32), "fc.b")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1, name="fc")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 15])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 16])], inits)


@pytest.fixture(scope="module")
def qdq_block(tmp_path_factory):
    """The block quantized by ``edgec quantize`` (8-bit weights), the depthwise stride-2 conv's
    requantized output exposed as a graph output to compare to the LSB."""
    folder = tmp_path_factory.mktemp("int8-kernels")
    onnx.save(mobilenet_block(), folder / "m.onnx")
    np.savez(folder / "calib.npz", x=np.random.default_rng(4).standard_normal((8, 1, 3, 15, 15)).astype(np.float32))
    api.quantize(folder / "m.onnx", calib=folder / "calib.npz", output=folder / "q.onnx")
    proto = onnx.load(folder / "q.onnx")
    pw2 = next(n for n in proto.graph.node if n.name == "pw2")
    proto.graph.output.append(helper.make_tensor_value_info(pw2.input[0], TensorProto.FLOAT, [1, 40, 4, 4]))
    onnx.save(proto, folder / "q.onnx")
    return folder / "q.onnx"


def scheduled(path, target_name: str):
    from edgec.frontend.importer import load_model
    from edgec.targets import get_target
    from edgec.targets.cpu_schedules import schedule_for_cpu
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import dot_product_for
    from edgec.targets.lowering import onnx_for_tvm
    from tvm.relax.frontend.onnx import from_onnx

    target = get_target(target_name)
    mod = from_onnx(onnx_for_tvm(load_model(path, {}))[0], keep_params_in_input=True)
    mod, report = lower_integer_kernels(mod, dot_product_for(target))
    assert report.kept_float == []
    return schedule_for_cpu(mod, target)[0]


def test_vnni_schedules_narrow_channels_and_the_classifier_without_layout_copies(qdq_block):
    """x86-64-vnni: the 24- and 40-channel convs run vpdpbusd on 256-bit registers, the 16-class
    Gemm (as a 1x1 conv) on 512-bit ones; the requantize is in the convs' epilogues (no Q/DQ
    kernel of its own, no int8 -> uint8 shift) and no ReLU output is padded by a kernel of its own."""
    mod = scheduled(qdq_block, "x86-64-vnni")
    kernels = {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    narrow = [name for name, text in kernels.items() if "llvm.x86.avx512.vpdpbusd.256" in text]
    assert len(narrow) == 3, narrow  # stem (24), pw1 (40), pw2 (24); not `odd` (7 channels): the generic loop
    wide = [name for name, text in kernels.items() if "llvm.x86.avx512.vpdpbusd.512" in text]
    assert len(wide) == 1 and "matmul" not in " ".join(kernels), sorted(kernels)  # the classifier
    assert not any("quantize" in name for name in kernels), sorted(kernels)
    # Activations are quantized straight to uint8 (what vpdpbusd reads): no int16 shift anywhere.
    assert not [name for name, text in kernels.items() if '"int16"' in text]
    # Padded by a kernel of their own: the graph input (quantized there), `odd` (it reads pw2's
    # linear output, zero point not 0) and the classifier's 7 inputs (to 8); not the depthwise
    # convs, which read ReLU outputs (uint8 zero point 0) and pad inside their own kernels.
    assert len([name for name in kernels if "pad" in name]) == 3, sorted(kernels)


@pytest.mark.parametrize("target_name, needs", [("x86-64-v3", "avx2"), ("x86-64-v4", "avx512f"),
                                                ("x86-64-vnni", "avx512_vnni")])
def test_block_matches_onnxruntime(qdq_block, tmp_path, target_name, needs):
    """Every target's kernels (AVX2's vpmaddubsw path, which takes int8 for 8-bit weights;
    AVX-512 without VNNI; VNNI) within 1 LSB of onnxruntime running the QDQ graph op by op on the
    requantized depthwise output, and the logits within the tolerance of the other int8 tests."""
    import onnxruntime as ort

    from edgec.runtime import load

    if needs not in cpu_features():
        pytest.skip(f"this CPU has no {needs}: {target_name} code cannot run here")
    api.compile(qdq_block, target_name, output=tmp_path / "q.edgec")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(qdq_block), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    proto = onnx.load(qdq_block)
    dq = next(n for n in proto.graph.node if n.output[0] == names[1])
    lsb = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == dq.input[1]))
    compiled = load(tmp_path / "q.edgec")
    rng = np.random.default_rng(5)
    for _ in range(4):
        feeds = {"x": rng.standard_normal((1, 3, 15, 15)).astype(np.float32)}
        expected = dict(zip(names, session.run(None, feeds)))
        actual = compiled.run(feeds)
        assert np.abs(actual[names[1]] - expected[names[1]]).max() <= lsb * 1.001
        np.testing.assert_allclose(actual["logits"], expected["logits"], atol=0.05 * np.abs(expected["logits"]).max())


@pytest.mark.parametrize("rows", [3, "batch"])
def test_gemm_is_a_conv_for_static_rows_and_a_matmul_otherwise(rows, tmp_path):
    """A quantized Gemm with a static 2-D input becomes a 1x1 conv on a dot-product target (3
    rows: one per output pixel), exact against onnxruntime where it runs; with a symbolic batch
    it stays an integer matmul (the conv's image needs static shapes)."""
    from edgec.frontend.importer import convert_model
    from edgec.targets.int8 import lower_integer_kernels
    from edgec.targets.int8_schedules import AVX512_VNNI
    from edgec.targets.lowering import onnx_for_tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z"),
             numpy_helper.from_array(rng.integers(-127, 128, (16, 12)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(16, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(16, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Gemm", ["xd", "w"], ["y"], transB=1)]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 12])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 16])], inits)
    mod = from_onnx(onnx_for_tvm(convert_model(proto))[0], keep_params_in_input=True)
    mod, report = lower_integer_kernels(mod, AVX512_VNNI)
    assert report.lowered == ["matmul"]
    ops = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: ops.add(getattr(getattr(e, "op", None), "name", "")))
    assert ("relax.nn.conv2d" in ops) == (rows == 3) and ("relax.matmul" in ops) == (rows != 3)
    if rows != 3:
        return
    if "avx512_vnni" not in cpu_features():
        pytest.skip("this CPU has no AVX-512 VNNI: the conv's lowering is checked, not run")
    import onnxruntime as ort

    from edgec.runtime import load

    onnx.save(proto, tmp_path / "g.onnx")
    api.compile(tmp_path / "g.onnx", "x86-64-vnni", output=tmp_path / "g.edgec")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {"x": rng.standard_normal((3, 12)).astype(np.float32)}
    expected = session.run(None, feeds)[0]
    np.testing.assert_allclose(load(tmp_path / "g.edgec").run(feeds)["y"], expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
