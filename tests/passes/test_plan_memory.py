from __future__ import annotations

import json

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgec.passes.plan_memory  # noqa: F401  registers plan-memory
from edgec.compiler.arena import ALGORITHMS, CHOICES
from edgec.compiler.pass_manager import PassError, PassManager, Pipeline
from edgec.frontend.importer import import_proto
from edgec.ir import Attr, Graph, Model, Value, parse_model, print_model, verify
from edgec.passes.plan_memory import DEFAULT_ALIGNMENT, ELEMENTWISE, VIEWS, MemoryPlan, plan_memory, target_alignment
from edgec.targets.base import all_targets, get_target
from tests.models import zoo_model
from tests.passes.helpers import run_pass

# Steps: 0 a, 1 b, 2 c, 3 d. x dies at b; a dies at c, b at d; the Relu takes a's buffer in place.
CHAIN = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[1,8]
  %a = Sigmoid(%x) : float32[1,8]
  %b = Concat(%x, %a) {axis=1} : float32[1,16]
  %c = Relu(%a) : float32[1,8]
  %d = Concat(%b, %c) {axis=1} : float32[1,24]
  output %d
}
"""


def placements(plan: MemoryPlan) -> dict[str, tuple]:
    return {t.name: (t.offset, t.size, t.first, t.last, t.shares) for t in plan.tensors}


def test_plan_of_a_small_graph():
    result = run_pass("plan-memory", parse_model(CHAIN))
    assert not result.modified  # the graph is unchanged: the plan is an attribute
    plan = result.model.memory_plan
    assert placements(plan) == {
        "d": (0, 96, 3, 3, None),  # largest first: d, then b, then a's buffer, then x in the gap below b
        "b": (128, 64, 1, 3, None),
        "a": (192, 32, 0, 2, None),
        "c": (192, 32, 2, 3, "a"),
        "x": (0, 32, 0, 1, None),
    }
    # step 1 holds x, a, b (128 B); step 3 holds b, c (sharing a's buffer) and d (192 B)
    assert plan.live == [64, 128, 96, 192]
    assert (plan.lower_bound, plan.arena_bytes, plan.naive_bytes) == (192, 224, 256)
    assert plan.inplace == [("c", "a")]
    assert plan.peak_step == 3
    assert [t.name for t in plan.live_at(3)] == ["d", "b", "c"]
    assert result.stats == {"tensors": 5, "inplace-reuses": 1, "arena-bytes": 224, "lower-bound-bytes": 192,
                            "naive-bytes": 256}


def test_alignment_one_packs_to_the_lower_bound():
    plan = plan_memory(parse_model(CHAIN), alignment=1)
    assert plan.arena_bytes == plan.lower_bound == 192
    assert plan.optimal


def test_inplace_off_gives_every_tensor_its_own_buffer():
    plan = plan_memory(parse_model(CHAIN), inplace=False)
    assert plan.inplace == []
    assert plan.live == [64, 128, 128, 192]  # step 2 now holds a and c side by side
    check_plan(parse_model(CHAIN), plan)


def test_graph_inputs_and_outputs_are_never_overwritten():
    text = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[4]
  %a = Relu(%x) : float32[4]
  %b = Relu(%a) : float32[4]
  %c = Neg(%b) : float32[4]
  output %b
  output %c
}
"""
    plan = plan_memory(parse_model(text))
    assert plan.inplace == []  # a reads a graph input; b is an output; c reads an output


def test_plan_is_json_and_deterministic():
    first = plan_memory(parse_model(CHAIN)).to_dict()
    assert first == plan_memory(parse_model(print_model(parse_model(CHAIN)))).to_dict()
    assert json.loads(json.dumps(first)) == first
    assert first["tensors"][3] == {"name": "c", "offset": 192, "size": 32, "first_step": 2, "last_step": 3,
                                   "dtype": "float32", "shape": [1, 8], "shares": "a"}


def test_explain_names_the_peak_and_what_helps():
    text = plan_memory(parse_model(CHAIN)).explain(budget_bytes=200)
    lines = text.splitlines()
    assert lines[0] == "arena 224 B (greedy-by-size; lower bound 192 B, 256 B without reuse) is 24 B over the budget of 200 B"
    assert lines[1] == "largest live set: 192 B at step 3, node 'd' (Concat): d (96 B), b (64 B), c (32 B)"
    assert lines[2] == "  - quantization to int8 would shrink the largest live set by about 144 B"
    assert lines[3] == "  - packing loses 32 B over the lower bound"


def test_explain_suggests_a_smaller_batch_and_reordering():
    text = """\
model ir_version=8 opset_import={"": 17} {
  input %x: int8[4,8]
  %a = Neg(%x) : int8[4,8]
  %b = Concat(%a, %a) {axis=1} : int8[4,16]
  %c = Concat(%b, %b) {axis=1} : int8[4,32]
  %d = Neg(%x) : int8[4,8]
  output %c
  output %d
}
"""
    explained = plan_memory(parse_model(text)).explain(budget_bytes=1024)
    assert "fits the budget of 1.0 KiB" in explained
    assert "quantization" not in explained
    assert "a smaller batch: c has batch 4" in explained
    assert "1 tensor at the peak waits for later steps (x); reorder-for-memory may run its readers sooner" in explained


def test_unknown_sizes_are_left_out_with_a_warning():
    text = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32["n",4]
  %a = Relu(%x) : float32["n",4]
  output %a
}
"""
    result = run_pass("plan-memory", parse_model(text))
    assert result.model.memory_plan.unplanned == ["x", "a"]
    assert [str(d) for d in result.diagnostics][1] == "warning: 2 values of unknown size are not planned: x, a"


def test_bad_options_fail_the_precondition():
    with pytest.raises(PassError, match="precondition of pass 'plan-memory' failed: unknown algorithm 'magic'"):
        run_pass("plan-memory{algorithm=magic}", parse_model(CHAIN))
    with pytest.raises(PassError, match="alignment must be positive, got 0"):
        run_pass("plan-memory{alignment=0}", parse_model(CHAIN))


def test_pipeline_round_trips_and_alignment_per_target():
    text = "plan-memory{alignment=256,algorithm=best-fit,inplace=false}"
    assert str(Pipeline.parse(text)) == text
    assert target_alignment(get_target("x86-64")) == DEFAULT_ALIGNMENT == 64
    cuda = [t for t in all_targets().values() if t.device == "cuda"]
    assert cuda and all(target_alignment(t) == 256 for t in cuda)


@pytest.mark.parametrize("name", ["inception_v1", "densenet121"])
def test_zoo_models_plan_within_the_bounds(name):
    model = import_proto(zoo_model(name))
    model = PassManager(Pipeline.parse("remove-identity,fold-constants,fold-batchnorm,eliminate-dead")).run(model)
    plan = plan_memory(model)
    check_plan(model, plan)
    assert plan.lower_bound <= plan.arena_bytes <= plan.alternatives["greedy-by-size"] < plan.naive_bytes
    if name == "densenet121":  # the packing is hard here, and the better algorithm wins
        assert plan.arena_bytes < plan.alternatives["greedy-by-size"]


# -- properties on random graphs -------------------------------------------------------------------


@st.composite
def random_graphs(draw, max_nodes: int = 12) -> Model:
    """A random DAG of Relu, Sigmoid, Add, Mul, Concat, Flatten and Split over [1, C, H, W] float32 tensors."""
    h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    graph = Graph()
    values = [graph.add_input(Value(f"in{i}", "float32", (1, draw(st.integers(1, 4)), h, w)))
              for i in range(draw(st.integers(1, 2)))]
    for index in range(draw(st.integers(1, max_nodes))):
        op = draw(st.sampled_from(["Relu", "Sigmoid", "Add", "Mul", "Concat", "Split", "Flatten"]))
        a = draw(st.sampled_from(values))
        name = f"v{index}"
        if op in ("Relu", "Sigmoid"):
            graph.make_node(op, [a], [Value(name, "float32", a.shape)])
        elif op in ("Add", "Mul"):
            b = draw(st.sampled_from([v for v in values if v.shape == a.shape]))
            graph.make_node(op, [a, b], [Value(name, "float32", a.shape)])
        elif op == "Concat":
            parts = draw(st.lists(st.sampled_from([v for v in values if len(v.shape) == 4]), min_size=1, max_size=3))
            channels = sum(v.shape[1] for v in parts)
            graph.make_node(op, parts, [Value(name, "float32", (1, channels, h, w))],
                            {"axis": Attr(onnx.AttributeProto.INT, 1)})
        elif op == "Split" and len(a.shape) == 4 and a.shape[1] % 2 == 0:
            half = (1, a.shape[1] // 2, h, w)
            graph.make_node(op, [a], [Value(name + "a", "float32", half), Value(name + "b", "float32", half)],
                            {"axis": Attr(onnx.AttributeProto.INT, 1), "num_outputs": Attr(onnx.AttributeProto.INT, 2)},
                            )
        elif op == "Flatten" and len(a.shape) == 4:
            graph.make_node(op, [a], [Value(name, "float32", (1, a.shape[1] * h * w))])
        else:
            continue
        values.extend(graph.nodes[-1].outputs)
    produced = [v for n in graph.nodes for v in n.outputs]
    graph.outputs = [v for v in produced if not v.uses] or produced[-1:]
    if draw(st.booleans()) and produced:
        extra = draw(st.sampled_from(produced))
        if extra not in graph.outputs:
            graph.outputs.append(extra)
    model = Model(graph, opset_imports={"": 18})
    verify(model)
    return model


def check_plan(model: Model, plan: MemoryPlan) -> None:
    """The invariants every plan keeps, checked from the plan and the graph alone."""
    graph = model.graph
    group = {}
    for t in plan.tensors:
        group[t.name] = group[t.shares] if t.shares else t.name
    for t in plan.tensors:
        assert t.offset % plan.alignment == 0, t
        assert 0 <= t.offset and t.offset + t.size <= plan.arena_bytes, t
    for i, s in enumerate(plan.tensors):
        for t in plan.tensors[i + 1:]:
            live_together = s.first <= t.last and t.first <= s.last
            overlap = s.offset < t.offset + t.size and t.offset < s.offset + s.size
            assert not (live_together and overlap and group[s.name] != group[t.name]), (s, t)
    steps = {id(n): i for i, n in enumerate(graph.nodes)}
    by_name = {v.name: v for v in graph.values()}
    for t in plan.tensors:
        value = by_name[t.name]
        assert t.size == value.nbytes
        assert t.first == (steps[id(value.producer)] if value.producer else 0)
        if t.shares:  # in place: an elementwise or view op whose input dies at it
            source = by_name[t.shares]
            assert value.producer.op_type in ELEMENTWISE | VIEWS and source in value.producer.inputs
            assert plan.tensors[[x.name for x in plan.tensors].index(t.shares)].last == t.first
            assert source.producer is not None and not graph.is_graph_output(source)
    live = []
    for step in range(max(len(graph.nodes), 1)):
        buffers = {group[t.name]: t.size for t in plan.tensors if t.first <= step <= t.last}
        live.append(sum(buffers.values()))
    assert plan.lower_bound == max(live)
    assert plan.lower_bound <= plan.arena_bytes <= plan.naive_bytes + plan.alignment * len(plan.tensors)


# derandomize: CI sees the same examples on every run, so a red build is reproducible.
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@SETTINGS
@given(random_graphs(), st.sampled_from(CHOICES), st.sampled_from([1, 4, 64]), st.booleans())
def test_random_graphs_get_valid_plans(model, algorithm, alignment, inplace):
    plan = plan_memory(model, alignment, algorithm, inplace)
    check_plan(model, plan)
    if algorithm != "auto":
        assert plan.algorithm == algorithm
    else:
        assert plan.arena_bytes == min(plan.alternatives.values())
    assert plan.to_dict() == plan_memory(model, alignment, algorithm, inplace).to_dict()
    assert plan.to_dict() == plan_memory(parse_model(print_model(model)), alignment, algorithm, inplace).to_dict()


@SETTINGS
@given(random_graphs(max_nodes=8))
def test_exact_is_never_worse_than_the_heuristics(model):
    plan = plan_memory(model, 4, "exact")
    assert plan.arena_bytes <= min(plan.alternatives[name] for name in ALGORITHMS)
    check_plan(model, plan)
