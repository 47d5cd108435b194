"""Test models, all made here: small graphs built in code, and onnx's bundled
model-zoo files given seeded random weights.

The zoo files store every weight as ConstantOfShape, so as shipped every output is
a constant and a parity check on them proves nothing. ``zoo_model`` replaces each
such node with a random initializer whose distribution suits the input it feeds
(positive BatchNormalization scales and variances, He-scaled conv/gemm weights), and
drops the final Softmax so differences show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO = {
    "alexnet": "light_bvlc_alexnet.onnx",
    "densenet121": "light_densenet121.onnx",
    "inception_v1": "light_inception_v1.onnx",
    "inception_v2": "light_inception_v2.onnx",
    "resnet50": "light_resnet50.onnx",
    "shufflenet": "light_shufflenet.onnx",
    "squeezenet": "light_squeezenet.onnx",
    "vgg19": "light_vgg19.onnx",
    "zfnet512": "light_zfnet512.onnx",
}
POSITIVE_INPUTS = {("BatchNormalization", 1), ("BatchNormalization", 4), ("Mul", 0), ("Mul", 1)}


def consumer_role(graph: onnx.GraphProto, name: str) -> tuple[str, int]:
    """(op, input index) of the first real consumer of ``name``, looking through Unsqueeze."""
    for node in graph.node:
        for index, used in enumerate(node.input):
            if used == name:
                if node.op_type in ("Unsqueeze", "Reshape") and index == 0:
                    return consumer_role(graph, node.output[0])
                return node.op_type, index
    return "", -1


def random_weight(rng: np.random.Generator, shape: tuple[int, ...], role: tuple[str, int], dtype) -> np.ndarray:
    if role in POSITIVE_INPUTS:
        data = rng.uniform(0.5, 1.5, shape)
    elif len(shape) >= 2:
        data = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
    else:
        data = rng.standard_normal(shape) * 0.1
    return data.astype(dtype)


def zoo_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """A zoo architecture with seeded random weights and no final Softmax (still IR 3)."""
    model = onnx.load(ZOO_DIR / ZOO[name])
    graph = model.graph
    rng = np.random.default_rng(seed)
    initializers = {t.name: t for t in graph.initializer}
    kept_nodes, random_inits, consumed = [], [], set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in initializers:
            shape = tuple(int(d) for d in numpy_helper.to_array(initializers[node.input[0]]))
            fill = numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(1, np.float32)
            data = random_weight(rng, shape, consumer_role(graph, node.output[0]), fill.dtype)
            random_inits.append(numpy_helper.from_array(data, node.output[0]))
            consumed.add(node.input[0])
        else:
            kept_nodes.append(node)
    still_used = {name for node in kept_nodes for name in node.input}
    dropped = consumed - still_used
    drop_softmax(graph, kept_nodes)
    kept_inits = [t for t in graph.initializer if t.name not in dropped] + random_inits
    inputs = [i for i in graph.input if i.name not in dropped]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in random_inits]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(kept_nodes)
    graph.initializer.extend(kept_inits)
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return model


def drop_softmax(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Make the Softmax's input the graph output, keeping the output's name."""
    last = nodes[-1]
    if last.op_type != "Softmax":
        return
    nodes.pop()
    for node in nodes:
        node.output[:] = [last.output[0] if out == last.input[0] else out for out in node.output]
        node.input[:] = [last.output[0] if inp == last.input[0] else inp for inp in node.input]


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def random_feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in real_inputs(model):
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """onnx.helper.make_model with an IR version onnxruntime accepts (it refuses > 13)."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-Pool-Conv-Relu-GAP-Flatten-Gemm, with an Identity and a Dropout."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape, scale=0.2):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        weight("conv1.w", 8, 3, 3, 3), weight("conv1.b", 8),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.scale"),
        weight("bn.bias", 8), weight("bn.mean", 8),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn.var"),
        weight("conv2.w", 16, 8, 3, 3), weight("conv2.b", 16),
        weight("fc.w", 10, 16), weight("fc.b", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"], name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Identity", ["r1"], ["i1"], name="identity"),
        helper.make_node("MaxPool", ["i1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Dropout", ["f"], ["d"], name="dropout"),
        helper.make_node("Gemm", ["d", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )


def ort_run(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def add_external_weights(model: onnx.ModelProto, path: Path, location: str) -> Path:
    """Save ``model`` at ``path`` with every initializer in one external-data file."""
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)
    return path
