"""eliminate-dead: remove nodes and initializers nothing reads.

Rules:
- A node is dead when none of its outputs is used or is a graph output. ONNX ops
  have no side effects, so that is always safe.
- Nodes are visited last to first, so a dead chain goes in one run.
- An initializer is dead when it has no uses and is not a graph output.
"""

from __future__ import annotations

from edgec.compiler.pass_manager import Pass, PassResult, register_pass
from edgec.ir import Model


@register_pass
class EliminateDead(Pass):
    name = "eliminate-dead"

    def call(self, model: Model) -> PassResult:
        graph = model.graph
        stats = {"removed-nodes": 0, "removed-initializers": 0}
        for node in reversed(list(graph.nodes)):
            if not any(v.uses or graph.is_graph_output(v) for v in node.outputs):
                graph.remove_node(node)
                stats["removed-nodes"] += 1
        for name, value in list(graph.initializers.items()):
            if not value.uses and not graph.is_graph_output(value):
                del graph.initializers[name]
                stats["removed-initializers"] += 1
        return PassResult(model, modified=any(stats.values()), stats=stats)
