from __future__ import annotations

import json

import networkx as nx
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import edgec.passes.partition  # noqa: F401  registers the pass until edgec.passes imports it
from edgec.compiler.pass_manager import PassError, PassManager, Pipeline
from edgec.compiler.pipelines import DEFAULT_PIPELINE
from edgec.errors import CompileError
from edgec.frontend.exporter import export_model
from edgec.frontend.importer import import_proto
from edgec.ir import parse_model
from edgec.passes.partition import METADATA_KEY, accelerator_support, node_keys, partition_graph, plan_of
from edgec.profiles.profile import Ops, Profile
from edgec.targets import get_target
from tests.models import ZOO, make_model, zoo_model
from tests.passes.helpers import assert_idempotent, assert_same_numbers, run_pass
from tests.passes.test_plan_memory import random_graphs

ORIN = get_target("jetson-orin")

# a, d and e are GPU work; b and c (float64) must stay on the CPU. Merging e into {a, d}
# would put the CPU partition {b, c} both after and before it: a cycle, so it is refused.
DIAMOND = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[256,256]
  input %w: float32[256,256]
  %a = MatMul(%x, %w) : float32[256,256] @a
  %b = Cast(%a) {to=11} : float64[256,256] @b
  %c = Cast(%b) {to=1} : float32[256,256] @c
  %d = Relu(%a) : float32[256,256] @d
  %e = MatMul(%c, %d) : float32[256,256] @e
  output %e
}
"""

# A Relu between two CPU nodes: zero MACs cannot pay for two copies.
ISLAND = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float64[4,4]
  %a = Cast(%x) {to=1} : float32[4,4] @a
  %r = Relu(%a) : float32[4,4] @r
  %b = Cast(%r) {to=11} : float64[4,4] @b
  output %b
}
"""


def partitions(plan) -> list[tuple[int, str, list[str]]]:
    return [(p.id, p.device, p.nodes) for p in plan.partitions]


def reasons(plan) -> dict[str, str]:
    return {p.node: p.reason for p in plan.placements.values() if p.device == "cpu"}


def test_diamond_refuses_the_merge_that_would_create_a_cycle():
    plan = partition_graph(parse_model(DIAMOND), ORIN)
    assert partitions(plan) == [(0, "cuda", ["a", "d"]), (1, "cpu", ["b", "c"]), (2, "cuda", ["e"])]
    assert reasons(plan) == {
        "b": "Cast on cuda computes float32/float16/int8/int32/int64/bool, not float64",
        "c": "'b' is float64, which target jetson-orin does not list",
    }
    crossings = [(c.tensor, c.bytes, c.source, c.dest) for c in plan.crossings]
    assert crossings == [
        ("x", 262144, None, 0), ("w", 262144, None, 0),
        ("a", 262144, 0, 1), ("c", 262144, 1, 2), ("d", 262144, 0, 2), ("e", 262144, 2, None),
    ]
    stats = plan.stats()
    assert stats["nodes"] == {"cuda": 3, "cpu": 2}
    assert stats["macs_share"] == {"cuda": 1.0, "cpu": 0.0}
    assert (stats["copies"], stats["copied_bytes"]) == (5, 5 * 262144)


def test_cost_model_sends_a_tiny_island_back():
    plan = partition_graph(parse_model(ISLAND), ORIN)
    assert partitions(plan) == [(0, "cpu", ["a", "r", "b"])]
    assert reasons(plan)["r"] == (
        "cost model: its cuda partition of 1 node saves 0.0 us of compute (0 MACs) "
        "but its copies cost 20.0 us more (2 copies, 128 B at 51.2 GB/s)"
    )
    slow_link = run_pass("partition{target=jetson-orin,bandwidth=1000}", parse_model(ISLAND))
    assert plan_of(slow_link.model).placements["r"].reason.endswith("(2 copies, 128 B at 1e-06 GB/s)")


def test_fallback_error_skips_the_cost_model_and_names_each_node():
    result = run_pass("partition{target=jetson-orin,fallback=error}", parse_model(ISLAND))
    assert [str(d) for d in result.diagnostics] == [
        "error: node 'a' (Cast): cannot run on cuda: 'x' is float64, which target jetson-orin does not list",
        "error: node 'b' (Cast): cannot run on cuda: Cast on cuda computes "
        "float32/float16/int8/int32/int64/bool, not float64",
    ]
    assert METADATA_KEY not in result.model.metadata
    with pytest.raises(PassError, match=r"node 'a' \(Cast\): cannot run on cuda: 'x' is float64.* in pass 'partition'"):
        PassManager(Pipeline.parse("partition{target=jetson-orin,fallback=error}")).run(parse_model(ISLAND))


def test_fallback_cpu_notes_each_cpu_node():
    result = run_pass("partition{target=jetson-orin}", parse_model(DIAMOND))
    assert [d.node for d in result.diagnostics] == ["node 'b' (Cast)", "node 'c' (Cast)"]
    assert {d.severity for d in result.diagnostics} == {"note"}
    assert result.stats == {"partitions": 3, "nodes-on-cuda": 3, "nodes-on-cpu": 2, "copies": 5,
                            "copied-bytes": 5 * 262144}


def test_profile_op_exclusions_keep_nodes_on_the_cpu(tmp_path):
    path = tmp_path / "no-relu.toml"
    path.write_text('schema = 1\n[ops]\nexcluded = ["Relu"]\n')
    result = run_pass(f"partition{{target=jetson-orin,profile={path}}}", parse_model(DIAMOND))
    plan = plan_of(result.model)
    assert partitions(plan) == [(0, "cuda", ["a"]), (1, "cpu", ["b", "c", "d"]), (2, "cuda", ["e"])]
    assert reasons(plan)["d"] == "profile 'no-relu' excludes Relu"


def test_profile_allowed_ops_and_compute_dtypes():
    model = parse_model(DIAMOND)
    only_matmul = Profile("matmul-only", ops=Ops(allowed=("MatMul", "Cast")))
    plan = partition_graph(model, ORIN, only_matmul)
    assert reasons(plan)["d"] == "profile 'matmul-only' does not allow Relu"


def test_modified_then_not_and_the_plan_survives_export():
    model = parse_model(DIAMOND)
    result = assert_idempotent("partition{target=jetson-orin}", model)
    exported = export_model(result.model)
    props = {p.key: p.value for p in exported.metadata_props}
    reimported = import_proto(exported)
    assert json.loads(props[METADATA_KEY]) == plan_of(reimported).to_dict() == plan_of(result.model).to_dict()


def test_a_different_target_changes_the_record():
    model = run_pass("partition{target=jetson-orin}", parse_model(DIAMOND)).model
    again = run_pass("partition{target=cuda}", model)
    assert again.modified and plan_of(again.model).target == "cuda"


def test_the_graph_keeps_its_numbers():
    before = parse_model(DIAMOND)
    onnx_before = export_model(before)
    result = run_pass("partition{target=jetson-orin}", before)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((256, 256)).astype(np.float32) for name in ("x", "w")}
    assert_same_numbers(onnx_before, result.model, feeds)


def test_output_is_deterministic():
    first = partition_graph(parse_model(DIAMOND), ORIN)
    second = partition_graph(parse_model(DIAMOND), ORIN)
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    assert first.explain() == second.explain()


def test_explain_is_a_table_with_totals():
    text = partition_graph(parse_model(DIAMOND), ORIN).explain()
    assert text.splitlines() == [
        "partition plan for jetson-orin (accelerator cuda, fallback=cpu)",
        "node  op      device  partition  reason",
        "a     MatMul  cuda    0",
        "b     Cast    cpu     1          Cast on cuda computes float32/float16/int8/int32/int64/bool, not float64",
        "c     Cast    cpu     1          'b' is float64, which target jetson-orin does not list",
        "d     Relu    cuda    0",
        "e     MatMul  cuda    2",
        "",
        "partition  device  nodes   MACs",
        "#0         cuda        2  50.0%",
        "#1         cpu         2   0.0%",
        "#2         cuda        1  50.0%",
        "",
        "crossing      bytes  from      to        copy",
        "x         256.0 KiB  host I/O  #0 cuda   yes",
        "w         256.0 KiB  host I/O  #0 cuda   yes",
        "a         256.0 KiB  #0 cuda   #1 cpu    yes",
        "c         256.0 KiB  #1 cpu    #2 cuda   yes",
        "d         256.0 KiB  #0 cuda   #2 cuda   no",
        "e         256.0 KiB  #2 cuda   host I/O  yes",
        "",
        "nodes         cuda 3, cpu 2",
        "MACs          cuda 100.0%, cpu 0.0%",
        "copies        5 per inference, 1.2 MiB",
    ]


# -- the CPU test double's table: a second capability table on the host CPU -------------------------

X86 = get_target("x86-64")


def test_the_test_double_table_gives_its_own_partitions_and_refuses_the_cycle():
    """Only d (Relu) is elementwise; merging e into {a, b, c} would put {d} both after and before it."""
    plan = partition_graph(parse_model(DIAMOND), X86, device="cpu-test-double")
    assert partitions(plan) == [(0, "cpu", ["a", "b", "c"]), (1, "cpu-test-double", ["d"]), (2, "cpu", ["e"])]
    assert reasons(plan) == {"a": "MatMul is not in the cpu-test-double capability table",
                             "b": "Cast is not in the cpu-test-double capability table",
                             "c": "Cast is not in the cpu-test-double capability table",
                             "e": "MatMul is not in the cpu-test-double capability table"}
    assert plan.explain().splitlines()[0] == ("partition plan for x86-64 (second device cpu-test-double: "
                                              "a test double of the host CPU, not an accelerator, fallback=cpu)")
    assert plan.stats()["copies"] == 0  # it works in host memory: nothing crossing to it is copied


def test_the_test_double_keeps_an_island_the_cuda_cost_model_sends_back():
    """Copies between the host and itself cost nothing, so the zero-MAC Relu stays put."""
    plan = partition_graph(parse_model(ISLAND), X86, device="cpu-test-double")
    assert partitions(plan) == [(0, "cpu", ["a"]), (1, "cpu-test-double", ["r"]), (2, "cpu", ["b"])]


def test_summary_has_each_partition_crossing_and_cpu_reason():
    summary = partition_graph(parse_model(DIAMOND), ORIN).summary()
    assert summary["partitions"] == [
        {"id": 0, "device": "cuda", "nodes": 2, "macs": 16777216, "macs_share": 0.5},
        {"id": 1, "device": "cpu", "nodes": 2, "macs": 0, "macs_share": 0.0},
        {"id": 2, "device": "cuda", "nodes": 1, "macs": 16777216, "macs_share": 0.5},
    ]
    assert summary["crossings"][2] == {"tensor": "a", "bytes": 262144, "from": 0, "to": 1,
                                       "from_device": "cuda", "to_device": "cpu", "copy": True}
    assert [(n["node"], n["partition"]) for n in summary["cpu_nodes"]] == [("b", 1), ("c", 1)]
    assert summary["second_device"] == "cuda" and summary["totals"]["copies"] == 5


def test_an_unknown_device_is_refused():
    with pytest.raises(PassError, match="device must be one of cuda, cpu-test-double, not 'npu'"):
        run_pass("partition{target=x86-64,device=npu}", parse_model(DIAMOND))


def test_a_target_without_accelerator_is_one_cpu_partition():
    plan = partition_graph(parse_model(DIAMOND), get_target("x86-64"))
    assert partitions(plan) == [(0, "cpu", ["a", "b", "c", "d", "e"])]
    assert set(reasons(plan).values()) == {"target x86-64 has no accelerator"}
    result = run_pass("partition{target=x86-64,fallback=error}", parse_model(DIAMOND))
    assert [str(d) for d in result.diagnostics] == ["error: fallback=error, but target x86-64 has no accelerator"]


def test_bad_options_are_refused():
    with pytest.raises(PassError, match="partition needs a target"):
        run_pass("partition", parse_model(DIAMOND))
    with pytest.raises(PassError, match="fallback must be cpu or error, not 'gpu'"):
        run_pass("partition{target=jetson-orin,fallback=gpu}", parse_model(DIAMOND))
    text = "partition{target=jetson-orin,fallback=error}"
    assert str(Pipeline.parse(text)) == text


def test_a_stale_plan_is_refused_and_a_reordered_one_kept():
    model = run_pass("partition{target=jetson-orin}", parse_model(DIAMOND)).model
    nodes = model.graph.nodes
    model.graph.nodes = [nodes[0], nodes[3], nodes[1], nodes[2], nodes[4]]  # a, d, b, c, e: still topological
    assert plan_of(model).placements["d"].partition == 0
    model.graph.outputs = [model.graph.find_value("d")]
    run_pass("eliminate-dead", model)
    with pytest.raises(CompileError, match="stale"):
        plan_of(model)


# -- why a node stays: one case per rule -------------------------------------------------------

def reason_for(node_text: str, inputs: str = "input %x: float32[1,8,4,4]") -> str:
    text = f'model ir_version=8 opset_import={{"": 17}} {{\n  {inputs}\n  {node_text}\n  output %y\n}}\n'
    node = parse_model(text).graph.nodes[-1]
    return accelerator_support(ORIN, None)(node).reason


@pytest.mark.parametrize("node_text, inputs, reason", [
    ("%y = custom::Foo(%x) : float32[1,8,4,4]", None,
     "ops of domain 'custom' have no accelerator lowering in edgec"),
    ("%y = NonZero(%x) : int64[4,?]", None, "output 'y' has a data-dependent shape (int64[4,?])"),
    ("%y = Shape(%x) : int64[4]", None, "Shape: shape arithmetic belongs on the host, which sizes the kernels"),
    ("%y, %i = TopK(%x, %k) {axis=1} : float32[1,2,4,4], int64[1,2,4,4]",
     "input %x: float32[1,8,4,4]\n  init %k: int64[1] = [2]",
     "TopK: sorting compiles for CUDA in TVM 0.27 but has not been run on a GPU; kept on the host until it is"),
    ("%y = Einsum(%x) {equation=\"ijkl->ij\"} : float32[1,8]", None, "Einsum is not in the cuda capability table"),
    ("%y = Relu(%x) : float64[1,8,4,4]", "input %x: float64[1,8,4,4]",
     "Relu on cuda computes float32/float16, not float64"),
    ("%y = Resize(%x, _, %s) {mode=\"cubic\"} : float32[1,8,8,8]",
     "input %x: float32[1,8,4,4]\n  init %s: float32[4] = [1.0, 1.0, 2.0, 2.0]",
     "Resize mode='cubic' (the accelerator takes 'nearest', 'linear')"),
    ("%y = Conv(%x, %w) : float32[1,1,2,2,2,2]",
     "input %x: float32[1,1,2,2,2,2]\n  init %w: float32[1,1,1,1,1,1] = [1.0]",
     "Conv input rank 6 is outside 3..5"),
    ("%y, %i = MaxPool(%x) {kernel_shape=[2, 2]} : float32[1,8,3,3], int64[1,8,3,3]", None,
     "MaxPool with an Indices output"),
    ("%y = Unsqueeze(%x, %axes) : float32[1,1,8,4,4]", "input %x: float32[1,8,4,4]\n  input %axes: int64[1]",
     "no 'axes' attribute and axes is not a constant and axes is given"),
])
def test_each_rule_gives_its_reason(node_text, inputs, reason):
    assert reason_for(node_text, inputs or "input %x: float32[1,8,4,4]") == reason


def test_control_flow_stays_on_the_host():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])])
    proto = make_model(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch, name="if")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    plan = partition_graph(import_proto(proto), ORIN, fallback="error")
    assert reasons(plan) == {"if": "control flow (If) runs on the host"}


# -- the zoo -----------------------------------------------------------------------------------

def prepared(name: str):
    return PassManager(Pipeline.parse(DEFAULT_PIPELINE)).run(import_proto(zoo_model(name)))


HEAVY = {"alexnet", "vgg19", "zfnet512"}
"""Their large random weights make the default passes slow; the partitioning itself takes milliseconds."""


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(ZOO)])
def test_zoo_runs_whole_on_the_orin_gpu(name):
    plan = partition_graph(prepared(name), ORIN)
    assert [p.device for p in plan.partitions] == ["cuda"]
    assert plan.stats()["macs_share"] == {"cuda": 1.0}


@pytest.mark.parametrize("name", ["inception_v1", "squeezenet", "resnet50"])
def test_zoo_partitions_run_in_order_when_ops_are_excluded(name):
    model = prepared(name)
    plan = partition_graph(model, ORIN, Profile("stress", ops=Ops(excluded=("Concat", "LRN", "Sum"))))
    assert len(plan.partitions) > 1
    keys = node_keys(model.graph.nodes)
    ready = {v.name for v in [*model.graph.inputs, *model.graph.initializers.values()]}
    for partition in plan.partitions:  # no cycle: each partition's inputs come from earlier ones
        inside = {v.name for n in model.graph.nodes if keys[n] in partition.nodes for v in n.outputs}
        for node in (n for n in model.graph.nodes if keys[n] in partition.nodes):
            assert all(v is None or v.name in ready or v.name in inside for v in node.inputs)
        ready |= inside


# -- properties on random graphs -------------------------------------------------------------------

RANDOM_OPS = ("Relu", "Sigmoid", "Add", "Mul", "Concat", "Split", "Flatten")


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=random_graphs(), excluded=st.sets(st.sampled_from(RANDOM_OPS)))
def test_random_graphs_and_tables_give_convex_acyclic_partitions_covering_each_node_once(model, excluded):
    """Any DAG and any op table: each node in exactly one partition, excluded ops on the CPU, partitions
    that form a DAG among themselves (so each is convex: no path leaves one and comes back)."""
    profile = Profile("random", ops=Ops(excluded=tuple(sorted(excluded)))) if excluded else None
    plan = partition_graph(model, ORIN, profile)
    keys = node_keys(model.graph.nodes)
    members = [key for partition in plan.partitions for key in partition.nodes]
    assert sorted(members) == sorted(keys.values()) and len(members) == len(set(members))
    owner = {key: partition for partition in plan.partitions for key in partition.nodes}
    for node, key in keys.items():
        placement = plan.placements[key]
        assert owner[key].id == placement.partition and owner[key].device == placement.device
        if node.op_type in excluded:
            assert placement.device == "cpu" and placement.reason
    quotient = nx.DiGraph()
    quotient.add_nodes_from(p.id for p in plan.partitions)
    for node in model.graph.nodes:
        for value in node.outputs:
            for user in value.uses:
                a, b = owner[keys[node]].id, owner[keys[user]].id
                if a != b:
                    quotient.add_edge(a, b)
    assert nx.is_directed_acyclic_graph(quotient)
