from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import edgec.passes.plan_memory  # noqa: F401  registers plan-memory
import edgec.passes.reorder_for_memory  # noqa: F401  registers reorder-for-memory
from edgec.compiler.pass_manager import PassError, PassManager, Pipeline
from edgec.frontend.exporter import export_model
from edgec.frontend.importer import import_proto
from edgec.ir import Model, parse_model, print_model, verify
from edgec.passes.plan_memory import peak_live_bytes, plan_memory
from edgec.passes.reorder_for_memory import reorder_for_memory, segments
from tests.models import make_model, random_feeds, zoo_model
from tests.passes.helpers import assert_golden, assert_idempotent, assert_same_numbers, run_pass
from tests.passes.test_plan_memory import SETTINGS, check_plan, random_graphs

# Two branches that each blow x up and then shrink it: running them one after the
# other holds one big tensor at a time instead of two.
BEFORE = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,4,4]
  %a1 = Concat(%x, %x, %x, %x) {axis=1} : float32[1,4,4,4]
  %b1 = Concat(%x, %x, %x, %x) {axis=1} : float32[1,4,4,4]
  %a2 = GlobalAveragePool(%a1) : float32[1,4,1,1]
  %b2 = GlobalMaxPool(%b1) : float32[1,4,1,1]
  %y = Add(%a2, %b2) : float32[1,4,1,1]
  output %y
}
"""

AFTER = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,1,4,4]
  %b1 = Concat(%x, %x, %x, %x) {axis=1} : float32[1,4,4,4]
  %b2 = GlobalMaxPool(%b1) : float32[1,4,1,1]
  %a1 = Concat(%x, %x, %x, %x) {axis=1} : float32[1,4,4,4]
  %a2 = GlobalAveragePool(%a1) : float32[1,4,1,1]
  %y = Add(%a2, %b2) : float32[1,4,1,1]
  output %y
}
"""


def test_golden_and_idempotent():
    result = assert_idempotent("reorder-for-memory", parse_model(BEFORE))
    assert_golden(result.model, AFTER)
    # before: x, a1 and b1 live at b1 (64 + 256 + 256); after: at most one big tensor and two small ones
    assert result.stats == {"peak-before-bytes": 576, "peak-after-bytes": 336, "segments": 2, "segments-exact": 2,
                            "segments-reordered": 1}
    assert [str(d) for d in result.diagnostics] == ["note: peak live bytes 576 B -> 336 B"]
    assert plan_memory(result.model).lower_bound == 336


def test_a_chain_is_left_alone():
    text = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[4]
  %a = Relu(%x) : float32[4]
  %b = Neg(%a) : float32[4]
  output %b
}
"""
    result = run_pass("reorder-for-memory", parse_model(text))
    assert not result.modified
    assert result.stats["segments"] == 2 and result.stats["segments-reordered"] == 0


def test_bad_option_fails_the_precondition():
    with pytest.raises(PassError, match="max-states must be positive"):
        run_pass("reorder-for-memory{max-states=0}", parse_model(BEFORE))
    assert str(Pipeline.parse("reorder-for-memory{max-states=64,inplace=false}")) == \
        "reorder-for-memory{max-states=64,inplace=false}"


def branchy_model():
    """An inception-like block: four branches of different widths joined by a Concat."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, (rng.standard_normal(shape) * 0.3).astype(np.float32).ravel())

    inits = [weight("w1", 16, 4, 1, 1), weight("w2", 32, 4, 3, 3), weight("w3", 4, 32, 1, 1),
             weight("w4", 32, 4, 1, 1), weight("w5", 2, 32, 3, 3)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["b1"]),
        helper.make_node("Conv", ["x", "w2"], ["b2_big"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w4"], ["b3_big"]),
        helper.make_node("MaxPool", ["x"], ["b4"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b2_big"], ["b2_relu"]),
        helper.make_node("Conv", ["b2_relu", "w3"], ["b2"]),
        helper.make_node("Conv", ["b3_big", "w5"], ["b3"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["b1", "b2", "b3", "b4"], ["y"], axis=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 26, 8, 8])], inits)


def test_branchy_model_numbers_match_onnxruntime():
    onnx_model = branchy_model()
    model = import_proto(onnx_model)
    result = assert_idempotent("reorder-for-memory", model)
    assert result.stats["peak-after-bytes"] < result.stats["peak-before-bytes"]
    assert_same_numbers(onnx_model, result.model, random_feeds(onnx_model), rtol=0, atol=0)


def test_inception_numbers_match_onnxruntime():
    onnx_model = zoo_model("inception_v1")
    model = PassManager(Pipeline.parse("remove-identity,fold-constants,fold-batchnorm,eliminate-dead")).run(
        import_proto(onnx_model))
    result = assert_idempotent("reorder-for-memory", model)
    assert result.stats["segments-reordered"] > 0
    assert result.stats["peak-after-bytes"] <= result.stats["peak-before-bytes"]
    assert_same_numbers(onnx_model, result.model, random_feeds(onnx_model), rtol=1e-4, atol=1e-5)


def test_shufflenet_peak_drops():
    model = import_proto(zoo_model("shufflenet"))
    model = PassManager(Pipeline.parse("remove-identity,fold-constants,fold-batchnorm,eliminate-dead")).run(model)
    result = run_pass("reorder-for-memory", model)
    assert result.stats["peak-after-bytes"] < result.stats["peak-before-bytes"]


# -- properties on random graphs -------------------------------------------------------------------


def copy(model: Model) -> Model:
    return parse_model(print_model(model, elide=False))


def all_orders_min_peak(model: Model, inplace: bool) -> int:
    """Brute force: the lowest peak over every topological order."""
    graph = model.graph
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(graph.nodes)))
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for i, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value is not None and value.producer is not None:
                dag.add_edge(index[id(value.producer)], i)
    nodes, best = list(graph.nodes), None
    for order in nx.all_topological_sorts(dag):
        graph.nodes = [nodes[i] for i in order]
        peak = peak_live_bytes(graph, inplace)
        best = peak if best is None else min(best, peak)
    graph.nodes = nodes
    return best


@SETTINGS
@given(random_graphs(), st.sampled_from([1, 4, 1024]), st.booleans())
def test_random_graphs_keep_a_valid_order_and_never_get_worse(model, max_states, inplace):
    before = peak_live_bytes(model.graph, inplace)
    names = sorted(n.outputs[0].name for n in model.graph.nodes)
    pipeline = f"reorder-for-memory{{max-states={max_states},inplace={'true' if inplace else 'false'}}}"
    result = run_pass(pipeline, model)
    graph = result.model.graph
    verify(result.model)  # a topological order, links intact, types as inferred
    assert sorted(n.outputs[0].name for n in graph.nodes) == names
    after = peak_live_bytes(graph, inplace)
    assert result.stats["peak-before-bytes"] == before and result.stats["peak-after-bytes"] == after <= before
    assert not run_pass(pipeline, result.model).modified
    check_plan(result.model, plan_memory(result.model, inplace=inplace))


@SETTINGS
@given(random_graphs(max_nodes=7))
def test_dynamic_programming_finds_the_best_order(model):
    """Exact without in-place reuse. With it, whether an op may overwrite its input depends on
    the order its input's other readers ran in, which the search over sets of run nodes does not
    keep, so there the result is only never worse (the test above)."""
    found = reorder_for_memory(model.graph, max_states=1 << 20, inplace=False)
    assert found.exact_segments == found.segments
    assert found.peak_after == all_orders_min_peak(model, inplace=False)


@SETTINGS
@given(random_graphs(), st.randoms(use_true_random=False))
def test_same_graph_same_order_wherever_the_nodes_start(model, rng):
    first = [n.outputs[0].name for n in reorder_for_memory(model.graph).nodes]
    assert first == [n.outputs[0].name for n in reorder_for_memory(copy(model).graph).nodes]
    # another topological order of the same graph reaches the same peak
    shuffled = copy(model)
    graph, order = shuffled.graph, []
    pending = {id(n): sum(1 for v in n.inputs if v.producer is not None) for n in graph.nodes}
    ready = [n for n in graph.nodes if pending[id(n)] == 0]
    while ready:
        node = ready.pop(rng.randrange(len(ready)))
        order.append(node)
        for value in node.outputs:
            for user in dict.fromkeys(value.uses):
                pending[id(user)] -= sum(1 for v in user.inputs if v is value)
                if pending[id(user)] == 0:
                    ready.append(user)
    graph.nodes = order
    verify(shuffled)
    assert len(segments(graph)) == len(segments(model.graph))
    assert reorder_for_memory(graph).peak_after == reorder_for_memory(model.graph).peak_after


def test_export_keeps_the_new_order():
    result = run_pass("reorder-for-memory", parse_model(BEFORE))
    assert [n.output[0] for n in export_model(result.model).graph.node] == ["b1", "b2", "a1", "a2", "y"]
