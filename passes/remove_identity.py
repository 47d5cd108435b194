"""remove-identity: drop nodes that only forward their input at inference time.

Rules:
- ``Identity`` is removed; its users read its input instead.
- ``Dropout`` is removed when it runs in inference mode: no ``training_mode``
  input, or one that is a constant false. Its optional mask output must be unused.
- A graph output keeps its name: the forwarded value is renamed to it. When that is
  impossible (the output forwards a graph input or a constant), the node stays and a
  note says why.
"""

from __future__ import annotations

import numpy as np

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.ir import Model, Node


def dropout_is_inference(node: Node) -> str | None:
    """None if this Dropout is a no-op at inference, else the reason it is not."""
    if len(node.outputs) > 1 and node.outputs[1].uses:
        return "its mask output is used"
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = node.inputs[2]
        if not mode.is_constant:
            return "its training_mode input is not a constant"
        if bool(np.asarray(mode.const).reshape(-1)[0]):
            return "it runs in training mode"
    return None


@register_pass
class RemoveIdentity(Pass):
    name = "remove-identity"

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        stats = {"removed-identity": 0, "removed-dropout": 0}
        diagnostics = []
        for node in list(graph.nodes):
            if node.domain not in ("", "ai.onnx") or node.op_type not in ("Identity", "Dropout"):
                continue
            if node.op_type == "Dropout":
                reason = dropout_is_inference(node)
                if reason:
                    diagnostics.append(Diagnostic("note", f"Dropout kept: {reason}", node.describe()))
                    continue
            source, result = node.inputs[0], node.outputs[0]
            if source is None or not graph.forward(result, source):
                diagnostics.append(
                    Diagnostic("note", "kept: it renames a graph input or constant to a graph output", node.describe())
                )
                continue
            graph.remove_node(node)
            stats["removed-identity" if node.op_type == "Identity" else "removed-dropout"] += 1
        return PassResult(model, modified=any(stats.values()), stats=stats, diagnostics=diagnostics)
