"""fold-constants: evaluate nodes whose inputs are all constants, at compile time.

Rules:
- A node folds when every input is an initializer (or it has none, like
  ``Constant`` and ``ConstantOfShape`` of a constant shape), it is in the default
  ONNX domain, and it is deterministic (no Random* ops) with no subgraphs.
- Its outputs become initializers with the same names, so graph outputs keep theirs.
- DequantizeLinear never folds: quantized weights stay integers in the graph (a
  quarter of the bytes), and integer lowering needs to see the DQ -> op pattern.
- ``size-limit`` caps the bytes of any one folded output (default 1GiB). Weights stored
  as ``ConstantOfShape`` (as in onnx's model-zoo test files) are far below it; the cap
  exists for ops like Expand or Tile that can blow a tiny constant up. A node that would
  exceed it stays, with a note.
- Evaluation uses onnx's reference implementation, op by op, at the model's opset.
- The pass repeats until nothing more folds, in one sweep: nodes are visited in
  topological order, so a chain of constant nodes folds in one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from edgec.exporter import attribute_proto, tensor_proto
from edgec.ir import Model, Node
from edgec.pass_manager import Diagnostic, Pass, PassResult, register_pass, size_option
from edgec.units import human_size

NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
KEPT = {"DequantizeLinear"}


@register_pass
class FoldConstants(Pass):
    name = "fold-constants"

    @dataclass
    class Options:
        size_limit: int = size_option(1024**3)

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        stats = {"folded-nodes": 0, "skipped-too-large": 0}
        diagnostics = []
        for node in list(graph.nodes):
            if not self.foldable(node):
                continue
            too_large = next((v for v in node.outputs if (v.nbytes or 0) > self.options.size_limit), None)
            if too_large is not None:
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
            results = evaluate(node, model.opset_imports)
            for value, data in zip(node.outputs, results):
                if value.uses or graph.is_graph_output(value):
                    folded = graph.add_initializer(value.name, np.asarray(data))
                    graph.replace_all_uses(value, folded)
            graph.remove_node(node)
            stats["folded-nodes"] += 1
        return PassResult(model, modified=stats["folded-nodes"] > 0, stats=stats, diagnostics=diagnostics)

    @staticmethod
    def foldable(node: Node) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC | CONTROL_FLOW | KEPT:
            return False
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attrs.values()):
            return False
        return all(v is None or v.is_constant for v in node.inputs)


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
