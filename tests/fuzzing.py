"""The fuzzer's parts, shared by ``tests/test_fuzz.py`` (hypothesis) and
``benchmarks/fuzz.py`` (a run for a set wall time).

A case is a small seed model, then structured mutations of its proto (op types, inputs,
attributes, initializers, shapes, dtypes, opsets, names) and byte flips of its
serialized form. :func:`front_end` runs what ``edgec compile`` runs before TVM: import
with every check, the default passes, the memory plan, the export and the printer.
An :class:`~edgec.errors.EdgecError` is the right outcome for a bad model; any other
exception is an internal error, a bug.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from edgec.errors import EdgecError
from tests.models import make_model, small_cnn

FUZZ_MEMORY_BYTES = 1 << 30
"""The memory of the fuzzer's pretend target: larger tensors are refused as on a real one."""


class Chooser(Protocol):
    """Where a mutation's choices come from: hypothesis's ``data.draw`` or a seeded RNG."""

    def integer(self, low: int, high: int) -> int: ...


def pick(chooser: Chooser, items):
    """One of ``items`` (never empty)."""
    return items[chooser.integer(0, len(items) - 1)]


class HypothesisChooser:
    def __init__(self, data):
        self.data = data

    def integer(self, low: int, high: int) -> int:
        from hypothesis import strategies as st

        return self.data.draw(st.integers(low, high))


class RandomChooser:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))


def seed_models() -> list[onnx.ModelProto]:
    """Small models covering convs, matmuls, shape ops and elementwise chains."""
    f32 = TensorProto.FLOAT
    gemm = make_model(
        [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=1),
         helper.make_node("Relu", ["h"], ["y"], name="act")],
        [helper.make_tensor_value_info("x", f32, [2, 4])], [helper.make_tensor_value_info("y", f32, [2, 3])],
        [numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "W"),
         numpy_helper.from_array(np.ones(3, np.float32), "b")])
    shapes = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
         helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[1, 0]),
         helper.make_node("Concat", ["t", "t"], ["c"], name="concat", axis=0),
         helper.make_node("Softmax", ["c"], ["y"], name="softmax", axis=-1)],
        [helper.make_tensor_value_info("x", f32, [1, 2, 3])], [helper.make_tensor_value_info("y", f32, [6, 2])],
        [numpy_helper.from_array(np.array([2, 3], np.int64), "shape")])
    pool = make_model(
        [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Add", ["p", "bias"], ["a"], name="add"),
         helper.make_node("Sigmoid", ["a"], ["y"], name="sigmoid")],
        [helper.make_tensor_value_info("x", f32, [1, 2, 4, 4])], [helper.make_tensor_value_info("y", f32, [1, 2, 2, 2])],
        [numpy_helper.from_array(np.full((1, 2, 1, 1), 0.5, np.float32), "bias")])
    return [small_cnn(), gemm, shapes, pool]


OP_TYPES = ["Relu", "Add", "Mul", "Conv", "Gemm", "MatMul", "Reshape", "Transpose", "Concat", "Softmax", "Identity",
            "BatchNormalization", "MaxPool", "GlobalAveragePool", "Flatten", "Dropout", "Constant", "Sigmoid", "Split",
            "Slice", "Gather", "Squeeze", "Unsqueeze", "Cast", "Pad", "Resize", "NotAnOp", "If", "Loop", "Shape"]
DTYPES = [0, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.INT32, TensorProto.INT8,
          TensorProto.UINT8, TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.STRING, TensorProto.BFLOAT16,
          TensorProto.INT4, TensorProto.COMPLEX64, 99]
DIMS = [0, 1, 2, 3, 7, -1, 1 << 20, 1 << 40, (1 << 63) - 1]
INTS = [0, 1, -1, 2, 3, -7, 1 << 31, -(1 << 40), (1 << 63) - 1]


def names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    found = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    found += [o for n in graph.node for o in n.output]
    return found or ["x"]


def mutate_node(model, c: Chooser) -> None:
    graph = model.graph
    if not graph.node:
        return
    node = pick(c, list(graph.node))
    what = c.integer(0, 6)
    if what == 0:
        node.op_type = pick(c, OP_TYPES)
    elif what == 1 and node.input:
        node.input[c.integer(0, len(node.input) - 1)] = pick(c, [*names(model), "", "undefined"])
    elif what == 2:
        node.input.append(pick(c, names(model)))
    elif what == 3 and node.input:
        del node.input[c.integer(0, len(node.input) - 1)]
    elif what == 4 and node.output:
        node.output[c.integer(0, len(node.output) - 1)] = pick(c, [*names(model), "", "fresh"])
    elif what == 5:
        node.output.append("extra")
    else:
        index = c.integer(0, len(graph.node) - 1)
        moved = onnx.NodeProto()
        moved.CopyFrom(node)
        graph.node.remove(node)
        graph.node.insert(min(index, len(graph.node)), moved)


def mutate_attribute(model, c: Chooser) -> None:
    graph = model.graph
    if not graph.node:
        return
    node = pick(c, list(graph.node))
    if not node.attribute or c.integer(0, 3) == 0:
        name = pick(c, ["axis", "perm", "kernel_shape", "strides", "pads", "transB", "alpha", "value", "to", "group",
                        "dilations", "auto_pad", "mode", "epsilon", "then_branch", "keepdims", "x"])
        node.attribute.append(random_attribute(c, name))
        return
    index = c.integer(0, len(node.attribute) - 1)
    what = c.integer(0, 3)
    if what == 0:
        del node.attribute[index]
    elif what == 1:
        node.attribute[index].CopyFrom(random_attribute(c, node.attribute[index].name))
    elif what == 2:
        node.attribute[index].type = pick(c, list(range(0, 15)))  # the value stays, the type changes
    else:
        attr = node.attribute[index]
        if attr.ints:
            attr.ints[c.integer(0, len(attr.ints) - 1)] = pick(c, INTS)
        else:
            attr.i = pick(c, INTS)


def random_attribute(c: Chooser, name: str) -> AttributeProto:
    kind = c.integer(0, 7)
    if kind == 0:
        return helper.make_attribute(name, pick(c, INTS))
    if kind == 1:
        return helper.make_attribute(name, pick(c, [0.0, -1.5, 1e30, float("nan"), float("inf")]))
    if kind == 2:
        return helper.make_attribute(name, [pick(c, INTS) for _ in range(c.integer(0, 5))], attr_type=AttributeProto.INTS)
    if kind == 3:
        return helper.make_attribute(name, pick(c, ["", "NOTSET", "SAME_UPPER", "linear", "constant"]))
    if kind == 4:
        return helper.make_attribute(name, numpy_helper.from_array(np.ones([c.integer(0, 3)] * c.integer(0, 2), np.float32)))
    if kind == 5:
        return helper.make_attribute(name, helper.make_graph([], "empty", [], []))
    if kind == 6:
        return helper.make_attribute(name, [1.0, 2.0])
    attr = AttributeProto()
    attr.name = name
    attr.type = pick(c, [0, AttributeProto.TENSOR, AttributeProto.GRAPH, AttributeProto.SPARSE_TENSOR,
                         AttributeProto.TYPE_PROTO])
    return attr


def mutate_initializer(model, c: Chooser) -> None:
    graph = model.graph
    if not graph.initializer:
        return
    tensor = pick(c, list(graph.initializer))
    what = c.integer(0, 5)
    if what == 0:
        tensor.data_type = pick(c, DTYPES)  # the bytes stay
    elif what == 1 and tensor.dims:
        tensor.dims[c.integer(0, len(tensor.dims) - 1)] = pick(c, DIMS)
    elif what == 2:
        tensor.raw_data = tensor.raw_data[: c.integer(0, len(tensor.raw_data))]
    elif what == 3:
        tensor.dims.append(pick(c, DIMS))
    elif what == 4:
        tensor.name = pick(c, names(model))
    else:
        tensor.ClearField("raw_data")
        tensor.float_data.extend([1.0] * c.integer(0, 4))


def mutate_value(model, c: Chooser) -> None:
    graph = model.graph
    values = [*graph.input, *graph.output]
    if not values:
        return
    value = pick(c, values)
    what = c.integer(0, 4)
    tensor_type = value.type.tensor_type
    if what == 0:
        tensor_type.elem_type = pick(c, DTYPES)
    elif what == 1 and tensor_type.shape.dim:
        dim = tensor_type.shape.dim[c.integer(0, len(tensor_type.shape.dim) - 1)]
        if c.integer(0, 2) == 0:
            dim.dim_param = pick(c, ["N", "", "batch"])
        else:
            dim.dim_value = pick(c, DIMS)
    elif what == 2:
        tensor_type.shape.dim.add().dim_value = pick(c, DIMS[:5])
    elif what == 3:
        value.name = pick(c, names(model))
    elif value in graph.output:
        graph.output.remove(value)
    else:
        graph.input.remove(value)


def mutate_model(model, c: Chooser) -> None:
    what = c.integer(0, 5)
    if what == 0:
        model.ir_version = pick(c, [0, 1, 3, 7, 10, 13, 14, 99])
    elif what == 1:
        model.opset_import[0].version = pick(c, [1, 6, 7, 11, 13, 17, 21, 28, 99])
    elif what == 2:
        model.opset_import.add(domain=pick(c, ["com.microsoft", "ai.onnx.ml", "custom"]), version=1)
    elif what == 3 and model.graph.node:
        model.graph.node[c.integer(0, len(model.graph.node) - 1)].domain = pick(c, ["", "custom", "ai.onnx.ml"])
    elif what == 4:
        model.producer_name = pick(c, ["", "pytorch", "x" * 300])
    else:
        model.graph.node.add().CopyFrom(helper.make_node(pick(c, OP_TYPES), [pick(c, names(model))], ["new"]))


MUTATIONS = [mutate_node, mutate_attribute, mutate_initializer, mutate_value, mutate_model]


def flip_bytes(data: bytes, c: Chooser) -> bytes:
    """Byte-level damage: flips, truncation, insertion, and a replaced string byte (invalid UTF-8)."""
    data = bytearray(data)
    for _ in range(c.integer(1, 4)):
        if not data:
            break
        what = c.integer(0, 3)
        at = c.integer(0, len(data) - 1)
        if what == 0:
            data[at] ^= 1 << c.integer(0, 7)
        elif what == 1:
            data[at] = 0xFF
        elif what == 2:
            del data[at:]
        else:
            data[at:at] = bytes([c.integer(0, 255)])
    return bytes(data)


def make_case(c: Chooser) -> bytes:
    """One fuzz case: a seed model, up to 4 structured mutations, then maybe byte flips."""
    model = onnx.ModelProto()
    model.CopyFrom(pick(c, SEEDS))
    for _ in range(c.integer(0, 4)):
        pick(c, MUTATIONS)(model, c)
    data = model.SerializeToString()
    return flip_bytes(data, c) if c.integer(0, 2) == 0 else data


SEEDS = seed_models()


def front_end(data: bytes, directory: Path | None = None) -> str | None:
    """Run ``edgec compile``'s steps before TVM on a serialized model. None when it imports,
    or is refused with an EdgecError; otherwise the internal error's signature
    (exception type and innermost edgec frame) and the traceback. An error message of
    more than one line is a finding too."""
    from edgec.compiler.pass_manager import PassManager, Pipeline
    from edgec.compiler.pipelines import DEFAULT_PIPELINE
    from edgec.frontend.exporter import export_model
    from edgec.frontend.importer import ensure_static, load_model
    from edgec.frontend.validate import check_declared_sizes
    from edgec.ir import print_model
    from edgec.passes.plan_memory import plan_memory

    with tempfile.TemporaryDirectory(dir=directory) as workdir:
        path = Path(workdir) / "fuzz.onnx"
        path.write_bytes(data)
        try:
            model = load_model(path)
            ensure_static(model, str(path))
            check_declared_sizes(model, FUZZ_MEMORY_BYTES, "fuzz", str(path), False)
            model = PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(model)
            plan_memory(model)
            export_model(model)
            print_model(model)
        except EdgecError as exc:
            if "\n" in str(exc).strip():
                return f"multi-line error message ({type(exc).__name__})\n{exc}"
            return None
        except Exception as exc:  # noqa: BLE001 - any other exception is what the fuzzer looks for
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/edgec/" in f.filename or "/passes/" in f.filename]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
            return f"{type(exc).__name__} in {where}\n{''.join(traceback.format_exception(exc))}"
    return None
