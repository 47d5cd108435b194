"""fold-constants: evaluate nodes whose inputs are all constants, at compile time.

Rules:
- A node folds when every input is an initializer (or it has none, like
  ``Constant`` and ``ConstantOfShape`` of a constant shape), it is in the default
  ONNX domain, and it is deterministic (no Random* ops) with no subgraphs.
- ``Shape`` and ``Size`` of a value whose shape is static (every dim a number, as
  shape inference gives once the input dims are bound) fold to their values: the
  size arithmetic exporters write around every Reshape and Expand then folds away,
  which TVM's importer needs to see static shapes.
- Its outputs become initializers with the same names, so graph outputs keep theirs.
- DequantizeLinear never folds: quantized weights stay integers in the graph (a
  quarter of the bytes), and integer lowering needs to see the DQ -> op pattern.
- ``size-limit`` caps the bytes of any one folded output (default 1GiB). Weights stored
  as ``ConstantOfShape`` (as in onnx's model-zoo test files) are far below it; the cap
  exists for ops like Expand or Tile that can blow a tiny constant up. A node that would
  exceed it stays, with a note.
- Evaluation uses onnx's reference implementation, op by op, at the model's opset.
- The pass repeats until nothing more folds: nodes are visited in topological order,
  so a chain of constant nodes folds in one sweep; after a sweep that folded, shape
  inference runs again, and when it fixes more dims (a Range whose limits just
  folded) another sweep follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass, size_option
from edgec.frontend.exporter import attribute_proto, export_model, tensor_proto
from edgec.frontend.importer import dims_of
from edgec.ir import Model, Node
from edgec.units import human_size

NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
KEPT = {"DequantizeLinear"}
SHAPE_OPS = {"Shape", "Size"}


@register_pass
class FoldConstants(Pass):
    name = "fold-constants"

    @dataclass
    class Options:
        size_limit: int = size_option(1024**3)

    def call(self, model: Model) -> PassResult:
        stats = {"folded-nodes": 0, "skipped-too-large": 0, "shape-refinements": 0}
        diagnostics: list[Diagnostic] = []
        skipped: set[int] = set()
        while self.sweep(model, stats, diagnostics, skipped):
            refined = refine_shapes(model)
            stats["shape-refinements"] += refined
            if not refined:
                break
        return PassResult(model, modified=stats["folded-nodes"] > 0, stats=stats, diagnostics=diagnostics)

    def sweep(self, model: Model, stats: dict, diagnostics: list, skipped: set[int]) -> int:
        """Fold every foldable node once, in topological order; returns how many folded."""
        graph = model.graph
        folded_nodes = 0
        for node in list(graph.nodes):
            if not self.foldable(node) or id(node) in skipped:
                continue
            too_large = next((v for v in node.outputs if (v.nbytes or 0) > self.options.size_limit), None)
            if too_large is not None:
                skipped.add(id(node))
                stats["skipped-too-large"] += 1
                diagnostics.append(
                    Diagnostic(
                        "note",
                        f"not folded: output '{too_large.name}' would take {human_size(too_large.nbytes)}, "
                        f"over size-limit {human_size(self.options.size_limit)}",
                        node.describe(),
                    )
                )
                continue
            results = shape_of(node) if node.op_type in SHAPE_OPS else evaluate(node, model.opset_imports)
            for value, data in zip(node.outputs, results):
                if value.uses or graph.is_graph_output(value):
                    folded = graph.add_initializer(value.name, np.asarray(data))
                    graph.replace_all_uses(value, folded)
            graph.remove_node(node)
            stats["folded-nodes"] += 1
            folded_nodes += 1
        return folded_nodes

    @staticmethod
    def foldable(node: Node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC | CONTROL_FLOW | KEPT:
            return False
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attrs.values()):
            return False
        if node.op_type in SHAPE_OPS and node.inputs[0].shape is not None:
            return all(isinstance(d, int) for d in node.inputs[0].shape)
        return all(v is None or v.is_constant for v in node.inputs)


def refine_shapes(model: Model) -> int:
    """Run shape inference again over the folded graph and record the dims it now knows (a
    Range or Expand whose operands just became constants); returns how many values gained one."""
    proto = export_model(model, with_weights=False)
    del proto.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return 0  # the verifier reports a graph inference rejects
    found = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    refined = 0
    for node in model.graph.nodes:
        for value in node.outputs:
            _, shape = dims_of(found[value.name]) if value.name in found else (None, None)
            if shape is None or (value.shape is not None and len(shape) != len(value.shape)):
                continue
            old = value.shape or (None,) * len(shape)
            new = tuple(d if isinstance(d, int) else o for o, d in zip(old, shape))
            if new != value.shape and any(isinstance(d, int) and not isinstance(o, int) for o, d in zip(old, new)):
                value.shape = new
                refined += 1
    return refined


def shape_of(node: Node) -> list[np.ndarray]:
    """Shape (with its opset-15 start/end) or Size of a statically shaped input."""
    shape = node.inputs[0].shape
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape, dtype=np.int64)), np.int64)]
    start = node.attrs["start"].value if "start" in node.attrs else 0
    end = node.attrs["end"].value if "end" in node.attrs else None
    return [np.array(shape[slice(start, end)], np.int64)]


def evaluate(node: Node, opsets: dict[str, int]) -> list[np.ndarray]:
    """Run one node with onnx's reference evaluator."""
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(node.inputs)]
    outputs = [f"out{i}" for i in range(len(node.outputs))]
    proto = onnx.helper.make_node(node.op_type, names, outputs)
    proto.attribute.extend(attribute_proto(key, attr) for key, attr in node.attrs.items())
    feeds = {name: v.const for name, v in zip(names, node.inputs) if v is not None}
    initializers = [tensor_proto(name, data) for name, data in feeds.items()]
    graph = onnx.helper.make_graph([proto], "fold", [], [onnx.helper.make_empty_tensor_value_info(o) for o in outputs], initializers)
    opset_imports = [onnx.helper.make_opsetid(d, v) for d, v in opsets.items()]
    evaluator = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opset_imports))
    return evaluator.run(None, {})
