"""The nine model-zoo architectures that onnx ships, with seeded random weights.

onnx's ``light_*.onnx`` files store every weight as a ConstantOfShape node, which
a compiler folds away into constant outputs, so benchmarking them as shipped
would time almost nothing. Each such node becomes a random initializer instead.
Latency does not depend on the values; they are only shaped so that activations
neither vanish nor blow up. The final Softmax is dropped: with random weights it
often saturates to an exact one-hot vector, which would hide wrong results from
the harness's output comparison (it costs microseconds either way).
Beside them: a MobileNetV2-style CNN and a small transformer encoder built here, and five
torchvision classifiers (``weights=None``: torch's seeded default initialization) exported
by ``torch.onnx.export``'s default exporter, through ``tests/torchvision_models.py`` (its
workaround for PyPI's CUDA build of torchvision is shared with the SSD-lite export).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

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
# (op, input index) that must stay positive: BatchNormalization scale and variance,
# and the per-channel scale that densenet and inception_v2 apply with Mul.
POSITIVE = {("BatchNormalization", 1), ("BatchNormalization", 4), ("Mul", 0), ("Mul", 1)}


def consumer(graph: onnx.GraphProto, name: str) -> tuple[str, int]:
    """(op, input index) where ``name`` is used, looking through a leading Unsqueeze."""
    for node in graph.node:
        for index, used in enumerate(node.input):
            if used == name:
                if node.op_type == "Unsqueeze" and index == 0:
                    return consumer(graph, node.output[0])
                return node.op_type, index
    return "", -1


def random_weight(rng: np.random.Generator, shape: tuple[int, ...], role: tuple[str, int], dtype) -> np.ndarray:
    if role in POSITIVE:
        data = rng.uniform(0.5, 1.5, shape)
    elif len(shape) >= 2:
        data = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))  # He-normal
    else:
        data = rng.standard_normal(shape) * 0.1
    return data.astype(dtype)


def without_final_softmax(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` less a last Softmax that makes a graph output; its input takes the output's name."""
    last = nodes[-1]
    if last.op_type != "Softmax" or last.output[0] not in {o.name for o in graph.output}:
        return nodes
    old, new = last.input[0], last.output[0]
    for node in nodes[:-1]:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    return nodes[:-1]


def zoo_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """The zoo model ``name``: seeded random initializers for its ConstantOfShape weights, no final Softmax."""
    model = onnx.load(ZOO_DIR / ZOO[name])
    graph = model.graph
    rng = np.random.default_rng(seed)
    shapes = {t.name: t for t in graph.initializer}
    kept, weights = [], []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in numpy_helper.to_array(shapes[node.input[0]]))
            fill = numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(1, np.float32)
            data = random_weight(rng, shape, consumer(graph, node.output[0]), fill.dtype)
            weights.append(numpy_helper.from_array(data, node.output[0]))
        else:
            kept.append(node)
    kept = without_final_softmax(graph, kept)
    used = {name for node in kept for name in node.input}
    unused = {t.name for t in graph.initializer} - used
    initializers = [t for t in graph.initializer if t.name not in unused] + weights
    # IR 3: every initializer is also a graph input.
    inputs = [i for i in graph.input if i.name not in unused]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights]
    del graph.node[:], graph.initializer[:], graph.input[:]
    graph.node.extend(kept)
    graph.initializer.extend(initializers)
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return model


MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
"""MobileNetV2's inverted-residual stages: (expansion t, channels c, repeats n, first stride s), Sandler et al. 2018."""


def mobilenet_v2(seed: int = 0, width: float = 1.0) -> onnx.ModelProto:
    """A MobileNetV2-style CNN for 1x3x224x224 (opset 13): Conv-BN-ReLU6 stem, inverted residual
    blocks (1x1 expand, 3x3 depthwise, 1x1 linear project, residual add at stride 1), 1x1 conv to
    1280, global pool and a 1000-way Gemm, with seeded He-scaled weights and positive BN scales."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = iter(range(10_000))

    def tensor(name: str, data: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(data.astype(np.float32), name))
        return name

    def conv_bn(x: str, c_in: int, c_out: int, kernel: int, stride: int, groups: int, relu6: bool) -> str:
        i = next(count)
        fan_in = c_in // groups * kernel * kernel
        w = tensor(f"conv{i}.w", rng.standard_normal((c_out, c_in // groups, kernel, kernel)) * np.sqrt(2.0 / fan_in))
        nodes.append(helper.make_node("Conv", [x, w], [f"conv{i}"], name=f"conv{i}", strides=[stride, stride],
                                      pads=[kernel // 2] * 4, group=groups))
        bn = [tensor(f"bn{i}.{p}", v) for p, v in (("scale", rng.uniform(0.5, 1.5, c_out)), ("bias", rng.normal(0, 0.1, c_out)),
                                                   ("mean", rng.normal(0, 0.1, c_out)), ("var", rng.uniform(0.5, 1.5, c_out)))]
        nodes.append(helper.make_node("BatchNormalization", [f"conv{i}", *bn], [f"bn{i}"], name=f"bn{i}"))
        if not relu6:
            return f"bn{i}"
        nodes.append(helper.make_node("Clip", [f"bn{i}", "zero", "six"], [f"relu{i}"], name=f"relu6_{i}"))
        return f"relu{i}"

    tensor("zero", np.array(0.0))
    tensor("six", np.array(6.0))
    channels = int(32 * width)
    x = conv_bn("input", 3, channels, 3, 2, 1, True)
    for t, c, n, s in MOBILENET_V2:
        out_channels = int(c * width)
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            hidden = channels * t
            y = conv_bn(x, channels, hidden, 1, 1, 1, True) if t != 1 else x
            y = conv_bn(y, hidden, hidden, 3, stride, hidden, True)
            y = conv_bn(y, hidden, out_channels, 1, 1, 1, False)
            if stride == 1 and channels == out_channels:
                i = next(count)
                nodes.append(helper.make_node("Add", [x, y], [f"add{i}"], name=f"add{i}"))
                y = f"add{i}"
            x, channels = y, out_channels
    x = conv_bn(x, channels, 1280, 1, 1, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
    fc_w = tensor("fc.w", rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280))
    fc_b = tensor("fc.b", np.zeros(1000))
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "mobilenet_v2", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgec-benchmarks")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def transformer_encoder(seed: int = 0, tokens: int = 128, width: int = 256, heads: int = 4, layers: int = 2,
                        ffn: int = 1024) -> onnx.ModelProto:
    """A small BERT-style encoder (opset 17) for 1 x tokens x width embeddings: per layer, multi-head
    self-attention (MatMul+Add projections, Reshape/Transpose into heads, scaled QK^T plus an
    additive attention mask, Softmax, the value MatMul, output projection), residual Add,
    LayerNormalization, then a GELU feed-forward block (as exported by PyTorch: Div, Erf, Add, Mul),
    residual Add and LayerNormalization. The mask input is 0 for kept tokens and -10000 for padding,
    the huge-magnitude constant quantization must keep out of activation ranges."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    head = width // heads

    def tensor(name: str, data, dtype=np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(data, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x: str, n_in: int, n_out: int, name: str) -> str:
        w = tensor(f"{name}.w", rng.standard_normal((n_in, n_out)) / np.sqrt(n_in))
        b = tensor(f"{name}.b", rng.normal(0, 0.02, n_out))
        return node("Add", [node("MatMul", [x, w], f"{name}.mm"), b], name)

    def layer_norm(x: str, name: str) -> str:
        scale = tensor(f"{name}.scale", rng.uniform(0.8, 1.2, width))
        bias = tensor(f"{name}.bias", rng.normal(0, 0.02, width))
        return node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-5)

    split_heads = tensor("split_heads", [1, tokens, heads, head], np.int64)
    merge_heads = tensor("merge_heads", [1, tokens, width], np.int64)
    inv_sqrt = tensor("inv_sqrt_head", 1.0 / np.sqrt(head))
    sqrt2, one, half = tensor("sqrt2", np.sqrt(2.0)), tensor("one", 1.0), tensor("half", 0.5)
    mask = node("Unsqueeze", ["mask", tensor("mask_axes", [1, 2], np.int64)], "mask4d")  # 1 x 1 x 1 x tokens
    x = "embeddings"
    for i in range(layers):
        def heads_of(t: str, kind: str, perm: list[int]) -> str:
            return node("Transpose", [node("Reshape", [t, split_heads], f"l{i}.{kind}.split")], f"l{i}.{kind}.heads", perm=perm)

        q = heads_of(linear(x, width, width, f"l{i}.q"), "q", [0, 2, 1, 3])
        k = heads_of(linear(x, width, width, f"l{i}.k"), "k", [0, 2, 3, 1])
        v = heads_of(linear(x, width, width, f"l{i}.v"), "v", [0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}.qk"), inv_sqrt], f"l{i}.scaled"), mask],
                      f"l{i}.masked")
        attention = node("MatMul", [node("Softmax", [scores], f"l{i}.softmax", axis=-1), v], f"l{i}.context")
        merged = node("Reshape", [node("Transpose", [attention], f"l{i}.context.t", perm=[0, 2, 1, 3]), merge_heads],
                      f"l{i}.merged")
        x = layer_norm(node("Add", [x, linear(merged, width, width, f"l{i}.out")], f"l{i}.residual1"), f"l{i}.ln1")
        hidden = linear(x, width, ffn, f"l{i}.ffn1")
        erf = node("Erf", [node("Div", [hidden, sqrt2], f"l{i}.gelu.div")], f"l{i}.gelu.erf")
        gelu = node("Mul", [node("Mul", [hidden, node("Add", [erf, one], f"l{i}.gelu.add")], f"l{i}.gelu.mul"), half],
                    f"l{i}.gelu")
        x = layer_norm(node("Add", [x, linear(gelu, ffn, width, f"l{i}.ffn2")], f"l{i}.residual2"), f"l{i}.ln2")
    nodes.append(helper.make_node("Identity", [x], ["hidden"], name="output"))
    graph = helper.make_graph(
        nodes, "transformer_encoder",
        [helper.make_tensor_value_info("embeddings", onnx.TensorProto.FLOAT, [1, tokens, width]),
         helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [1, tokens])],
        [helper.make_tensor_value_info("hidden", onnx.TensorProto.FLOAT, [1, tokens, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgec-benchmarks")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


TORCHVISION = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet18", "convnext_tiny")
"""torchvision classifiers of the benchmark set (``tests.torchvision_models.CLASSIFIERS``)."""


def torchvision_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """torchvision's ``name`` with seeded random weights, as ``torch.onnx.export`` writes it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.torchvision_models import export_classifier

    with tempfile.TemporaryDirectory() as folder:
        return onnx.load(export_classifier(name, Path(folder) / f"{name}.onnx", seed))


BUILT = {"mobilenet_v2": mobilenet_v2, "transformer_encoder": transformer_encoder,
         **{name: (lambda seed, name=name: torchvision_model(name, seed)) for name in TORCHVISION}}
"""Models made here or exported from torchvision, beside the zoo's."""


def model_by_name(name: str, seed: int = 0) -> onnx.ModelProto:
    """A benchmark model by name: a zoo architecture, ``mobilenet_v2``, ``transformer_encoder`` or a
    torchvision classifier (``TORCHVISION``)."""
    return BUILT[name](seed) if name in BUILT else zoo_model(name, seed)
