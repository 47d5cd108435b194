"""partition: split the graph between the target's accelerator and its host CPU.

Every node gets a device, and every node that stays on the CPU gets the reason.
The graph itself is not changed; the decisions are a :class:`PartitionPlan`.

Rules:
- A node runs on the accelerator when the device's capability accepts it. The
  capabilities live beside each target family and are asked through one interface,
  ``edgec.targets.support`` (``device_support``): a chain of small predicates, each
  returning a ``Verdict`` that carries a reason; the first refusal is the reason the
  node stays.
- What stays on the CPU, in the order the predicates ask:
  ops outside the default ONNX domain; control flow (If, Loop, Scan, any node
  reading an outer scope); outputs without a static shape (data-dependent
  shapes); for CUDA (``targets/cuda.py``) the deny-list ``CUDA_DENY``, ops outside
  the capability table ``CUDA_OPS`` (op -> result dtypes) or with a dtype the target
  does not declare, the op's attribute and shape conditions ``CUDA_CONDITIONS``;
  ops the profile excludes or does not allow, and activations in a dtype its
  ``dtypes.compute`` does not list.
- Partitions are convex: same-device nodes are merged along edges, in
  topological order, then sibling partitions (sharing a producer or a consumer)
  of one device merge; a merge that would create a cycle between partitions is
  refused, so the partitions form a DAG and run in the plan's order.
- Cost model (:class:`CostModel`): an accelerator partition whose compute saving
  does not pay for the host<->device copies it causes goes back to the CPU,
  worst first, one at a time, re-merging after each. Constants are uploaded once
  and cost nothing per inference; graph inputs and outputs live on the host.
- ``fallback=cpu`` keeps refused nodes on the CPU, with a note each.
  ``fallback=error`` makes every node left off the accelerator an error naming
  the node and its reason; the cost model is then skipped, because it only
  trades speed and the user asked for everything on the accelerator.
- A target without an accelerator gets one CPU partition; asking it for
  ``fallback=error`` is one error.
- ``device=cpu-test-double`` partitions against ``TEST_DOUBLE_OPS`` (``targets/support.py``) instead of
  the target's accelerator. That second device is the host CPU again, lowered and
  run like any CPU partition; it exists so that multi-partition artifacts are built
  and checked against onnxruntime on machines without an accelerator, and it is
  never presented as one. It works in host memory, so tensors crossing to it are not
  copies and cost nothing, and the cost model leaves it be.
- The plan is recorded on the model as JSON in ``model.metadata["edgec.partition"]``,
  which the exporter writes to ONNX ``metadata_props`` and the text IR prints, so
  it survives export and round-trips. :func:`plan_of` reads it back and refuses a
  stale one (a node added or removed since; a reorder is fine). ``modified`` is true only when that record changes.

Nodes are named in the plan by :func:`node_keys`: the node's name, else its first
output's name (unique, since every value has one definition).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Iterable

import networkx as nx

from edgec.compiler.pass_manager import Diagnostic, Pass, PassResult, register_pass
from edgec.errors import CompileError, UsageError
from edgec.ir import Model, Node
from edgec.profiles.compliance import op_matches
from edgec.profiles.profile import Profile, from_metadata_props, load_profile
from edgec.reports.report import macs
from edgec.tables import table
from edgec.targets.base import TargetSpec, get_target
from edgec.targets.support import TEST_DOUBLE, Predicate, Verdict, YES, chain, device_support, supported_devices, tensor_dtypes
from edgec.units import human_size

logger = logging.getLogger(__name__)

METADATA_KEY = "edgec.partition"
CPU = "cpu"


# -- support -----------------------------------------------------------------------------------


def profile_ops(profile: Profile) -> Predicate:
    allowed, excluded = profile.ops.allowed, profile.ops.excluded or ()

    def check(node: Node) -> Verdict:
        if op_matches(node, excluded):
            return Verdict(False, f"profile '{profile.name}' excludes {node.qualified_op}")
        if allowed is not None and not op_matches(node, allowed):
            return Verdict(False, f"profile '{profile.name}' does not allow {node.qualified_op}")
        return YES

    return check

DEVICE_LABELS = {TEST_DOUBLE: f"second device {TEST_DOUBLE}: a test double of the host CPU, not an accelerator"}
"""How plans name a second device that is not an accelerator."""
HOST_MEMORY = frozenset({CPU, TEST_DOUBLE})
"""Devices that work in host memory: a tensor crossing between them is not copied."""


def accelerator_support(target: TargetSpec, profile: Profile | None, device: str = "") -> Predicate:
    """The device's capability (targets/support.py), then the profile's ops and compute dtypes."""
    predicates = [device_support(target, device or target.device)]
    if profile is not None and (profile.ops.allowed is not None or profile.ops.excluded):
        predicates.append(profile_ops(profile))
    if profile is not None and profile.dtypes.compute is not None:
        predicates.append(tensor_dtypes(profile.dtypes.compute, f"profile '{profile.name}' dtypes.compute"))
    return chain(*predicates)


# -- the cost model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """Peak rates: what a partition saves in compute against what its copies cost."""

    bandwidth: float
    """Bytes per second of a host<->device copy."""
    latency: float
    """Seconds per copy (launch and synchronisation), whatever its size."""
    host_macs: float
    accel_macs: float
    """Multiply-accumulates per second at peak, FP32."""
    source: str

    def compute_saving(self, count: int) -> float:
        return count / self.host_macs - count / self.accel_macs

    def transfer(self, sizes: list[int]) -> float:
        return sum(self.latency + size / self.bandwidth for size in sizes)


COSTS: dict[str, CostModel] = {
    "jetson-orin": CostModel(
        bandwidth=51.2e9, latency=10e-6, host_macs=128e9, accel_macs=0.94e12,
        source="Orin NX 16GB datasheet: CPU and GPU share 102.4 GB/s LPDDR5, and a copy reads and writes it, "
               "so half; 8x A78AE at 2.0 GHz x 8 FP32 FMA/cycle; 1024 CUDA cores at 918 MHz; "
               "10 us per copy is an assumed cudaMemcpy+sync overhead, not measured",
    ),
    "cuda": CostModel(
        bandwidth=25e9, latency=10e-6, host_macs=768e9, accel_macs=33.5e12,
        source="assumed PCIe-class link: ~25 GB/s, what pinned copies reach on PCIe 4.0 x16 (Gen5 hosts do better, "
               "so this errs toward the CPU); 16 cores x 3 GHz x 16 FP32 FMA/cycle (AVX2); H100 SXM 67 TFLOPS FP32; "
               "10 us per copy assumed",
    ),
}
"""Per target; a board of another name falls back to :data:`DEVICE_COSTS`."""
DEVICE_COSTS: dict[str, CostModel] = {
    "cuda": COSTS["cuda"],
    TEST_DOUBLE: CostModel(bandwidth=float("inf"), latency=0.0, host_macs=1e9, accel_macs=1e9,
                           source="the host CPU on both sides: the same speed and no copies"),
}


def cost_model_for(target: TargetSpec, bandwidth: float = 0, device: str = "") -> CostModel:
    costs = (COSTS.get(target.name) if device in ("", target.device) else None) or DEVICE_COSTS[device or target.device]
    if not bandwidth:
        return costs
    return dataclasses.replace(costs, bandwidth=bandwidth, source=f"bandwidth set to {bandwidth:g} B/s")


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class Partition:
    id: int
    device: str
    nodes: list[str]


@dataclass
class Placement:
    node: str
    op: str
    device: str
    partition: int
    macs: int
    reason: str = ""
    """Why the node is on the CPU; empty for accelerator nodes."""


@dataclass
class Crossing:
    """A tensor one partition hands to another; None is the graph boundary (host memory)."""

    tensor: str
    bytes: int
    source: int | None
    dest: int | None


@dataclass
class PartitionPlan:
    target: str
    accelerator: str | None
    fallback: str
    partitions: list[Partition]
    placements: dict[str, Placement]
    """Node key -> placement, in graph order."""
    crossings: list[Crossing]

    def stats(self) -> dict:
        """Nodes and MACs per device, and the share of MACs each device runs."""
        nodes: dict[str, int] = {}
        work: dict[str, int] = {}
        for placement in self.placements.values():
            nodes[placement.device] = nodes.get(placement.device, 0) + 1
            work[placement.device] = work.get(placement.device, 0) + placement.macs
        total = sum(work.values())
        devices = {p.device: None for p in self.partitions}
        copied = [c for c in self.crossings if self.is_copy(c)]
        return {
            "partitions": len(self.partitions),
            "nodes": nodes,
            "macs": work,
            "macs_share": {d: (work.get(d, 0) / total if total else 0.0) for d in devices},
            "copies": len(copied),
            "copied_bytes": sum(c.bytes for c in copied),
        }

    def device_at(self, partition: int | None) -> str:
        return CPU if partition is None else self.partitions[partition].device

    def is_copy(self, crossing: Crossing) -> bool:
        """Whether the runtime copies ``crossing`` between memories (host and accelerator)."""
        devices = {self.device_at(crossing.source), self.device_at(crossing.dest)}
        return len(devices) > 1 and not devices <= HOST_MEMORY

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "accelerator": self.accelerator,
            "fallback": self.fallback,
            "partitions": [dataclasses.asdict(p) for p in self.partitions],
            "nodes": [dataclasses.asdict(p) for p in self.placements.values()],
            "crossings": [{"tensor": c.tensor, "bytes": c.bytes, "from": c.source, "to": c.dest}
                          for c in self.crossings],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PartitionPlan:
        return cls(
            data["target"], data["accelerator"], data["fallback"],
            [Partition(**p) for p in data["partitions"]],
            {p["node"]: Placement(**p) for p in data["nodes"]},
            [Crossing(c["tensor"], c["bytes"], c["from"], c["to"]) for c in data["crossings"]],
        )

    def summary(self) -> dict:
        """What ``--explain-partitions`` and ``report --partitions`` show, for machines: each
        partition's device, node count and share of MACs; each crossing with its bytes and
        whether it is copied between memories; every CPU node's reason; the totals."""
        work = [0] * len(self.partitions)
        for placement in self.placements.values():
            work[placement.partition] += placement.macs
        total = sum(work)
        return {
            "target": self.target,
            "second_device": self.accelerator,
            "fallback": self.fallback,
            "partitions": [{"id": p.id, "device": p.device, "nodes": len(p.nodes), "macs": work[p.id],
                            "macs_share": work[p.id] / total if total else 0.0} for p in self.partitions],
            "crossings": [{"tensor": c.tensor, "bytes": c.bytes, "from": c.source, "to": c.dest,
                           "from_device": self.device_at(c.source), "to_device": self.device_at(c.dest),
                           "copy": self.is_copy(c)} for c in self.crossings],
            "cpu_nodes": [{"node": p.node, "op": p.op, "partition": p.partition, "reason": p.reason}
                          for p in self.placements.values() if p.device == CPU],
            "totals": self.stats(),
        }

    def explain(self) -> str:
        """Every node's device and, for CPU nodes, why; each partition's share of the MACs;
        the crossing tensors with their bytes; then the totals."""
        label = DEVICE_LABELS.get(self.accelerator, f"accelerator {self.accelerator or 'none'}")
        lines = [f"partition plan for {self.target} ({label}, fallback={self.fallback})"]
        lines += table(("node", "op", "device", "partition", "reason"),
                       [(p.node, p.op, p.device, str(p.partition), p.reason) for p in self.placements.values()])
        summary = self.summary()
        lines += ["", *table(("partition", "device", "nodes", "MACs"),
                             [(f"#{p['id']}", p["device"], str(p["nodes"]), f"{100 * p['macs_share']:.1f}%")
                              for p in summary["partitions"]], right=("nodes", "MACs"))]

        def end(partition: int | None) -> str:
            return "host I/O" if partition is None else f"#{partition} {self.device_at(partition)}"

        lines += ["", *table(("crossing", "bytes", "from", "to", "copy"),
                             [(c["tensor"], human_size(c["bytes"]), end(c["from"]), end(c["to"]),
                               "yes" if c["copy"] else "no") for c in summary["crossings"]], right=("bytes",))]
        stats = summary["totals"]
        lines += [
            "",
            "nodes         " + ", ".join(f"{d} {n}" for d, n in stats["nodes"].items()),
            "MACs          " + ", ".join(f"{d} {100 * s:.1f}%" for d, s in stats["macs_share"].items()),
            f"copies        {stats['copies']} per inference, {human_size(stats['copied_bytes'])}",
        ]
        return "\n".join(lines)

    def diagnostics(self) -> list[Diagnostic]:
        """An error per CPU node under fallback=error, else a note per CPU node."""
        if self.accelerator is None:
            if self.fallback == "error":
                return [Diagnostic("error", f"fallback=error, but target {self.target} has no accelerator")]
            return []
        severity = "error" if self.fallback == "error" else "note"
        verb = "cannot run on" if severity == "error" else "stays off"
        return [Diagnostic(severity, f"{verb} {self.accelerator}: {p.reason}", f"node '{p.node}' ({p.op})")
                for p in self.placements.values() if p.device == CPU]


def node_keys(nodes: Iterable[Node]) -> dict[Node, str]:
    """A unique, stable name per node: its name, else (or when taken) its first output's."""
    keys: dict[Node, str] = {}
    taken: set[str] = set()
    for node in nodes:
        key = node.name if node.name and node.name not in taken else node.outputs[0].name
        while key in taken:
            key += "'"
        keys[node] = key
        taken.add(key)
    return keys


def layer_devices(model: Model, plan: PartitionPlan | None) -> list[str] | None:
    """Each node's device in graph order, for the per-layer report; None without a plan."""
    if plan is None:
        return None
    return [plan.placements[key].device for key in node_keys(model.graph.nodes).values()]


def plan_of(model: Model) -> PartitionPlan | None:
    """The plan recorded on a model by the partition pass; None when there is none.

    Reordering nodes keeps a plan valid (convexity does not depend on the order);
    adding or removing nodes makes it stale, and that is refused."""
    text = model.metadata.get(METADATA_KEY)
    if text is None:
        return None
    plan = PartitionPlan.from_dict(json.loads(text))
    if set(plan.placements) != set(node_keys(model.graph.nodes).values()):
        raise CompileError("the partition plan is stale: the graph changed after the partition pass")
    return plan


# -- partitioning ------------------------------------------------------------------------------


def creates_cycle(quotient: nx.DiGraph, a: int, b: int) -> bool:
    """Merging a and b closes a cycle when one reaches the other through a third partition."""
    for source, dest in ((a, b), (b, a)):
        if any(s != dest and nx.has_path(quotient, s, dest) for s in quotient.successors(source)):
            return True
    return False


class Merger:
    """Partitions as a quotient DAG over node indices; a partition's id is its first node's index."""

    def __init__(self, nodes: list[Node], devices: list[str]):
        index = {node: i for i, node in enumerate(nodes)}
        self.devices = devices
        self.members: dict[int, list[int]] = {i: [i] for i in range(len(nodes))}
        self.part = list(range(len(nodes)))
        self.quotient = nx.DiGraph()
        self.quotient.add_nodes_from(range(len(nodes)))
        self.producers: list[list[int]] = []
        for i, node in enumerate(nodes):
            values = [*node.inputs, *node.implicit_inputs]
            sources = [index[v.producer] for v in values if v is not None and v.producer in index]
            self.producers.append(list(dict.fromkeys(sources)))
            self.quotient.add_edges_from((s, i) for s in self.producers[i])

    def try_merge(self, a: int, b: int) -> bool:
        """Merge partitions a and b of one device, unless that would create a cycle."""
        if a == b or self.devices[a] != self.devices[b]:
            return False
        if creates_cycle(self.quotient, a, b):
            logger.debug("partitions %d and %d stay apart: merging them would create a cycle", a, b)
            return False
        keep, gone = min(a, b), max(a, b)
        nx.contracted_nodes(self.quotient, keep, gone, self_loops=False, copy=False)
        moved = self.members.pop(gone)
        for member in moved:
            self.part[member] = keep
        self.members[keep] = sorted(self.members[keep] + moved)
        return True

    def siblings(self, p: int) -> list[int]:
        """Partitions sharing a producer or a consumer partition with p."""
        graph = self.quotient
        found = [x for q in graph.predecessors(p) for x in graph.successors(q)]
        found += [x for q in graph.successors(p) for x in graph.predecessors(q)]
        return sorted(set(found) - {p})


def merge(nodes: list[Node], devices: list[str]) -> list[list[int]]:
    """Convex partitions as lists of node indices, in an order they can run in.

    Nodes merge along edges first, in topological order; then partitions of one
    device that share a producer or consumer (siblings such as the branches of an
    inception block) merge, so that each device gets as few partitions as convexity allows."""
    merger = Merger(nodes, devices)
    for i in range(len(nodes)):
        for source in merger.producers[i]:
            merger.try_merge(merger.part[source], merger.part[i])
    for p in list(nx.lexicographical_topological_sort(merger.quotient)):
        p = merger.part[p]
        for sibling in merger.siblings(p):
            if merger.try_merge(p, sibling):
                p = min(p, sibling)
    order = nx.lexicographical_topological_sort(merger.quotient)
    return [merger.members[p] for p in order]


def edges(graph, nodes: list[Node], group: list[int]) -> tuple[list, list]:
    """Activations entering ``group`` (with their producer's index, None for a graph input)
    and leaving it (with the indices of their outside users, None for a graph output)."""
    index = {node: i for i, node in enumerate(nodes)}
    inside = set(group)
    entering: dict = {}
    leaving: dict = {}
    for i in group:
        node = nodes[i]
        for value in [*node.inputs, *node.implicit_inputs]:
            if value is not None and not value.is_constant and index.get(value.producer) not in inside:
                entering[value] = index.get(value.producer)
        for value in node.outputs:
            users = [index[u] for u in value.uses if index[u] not in inside]
            if graph.is_graph_output(value):
                users.append(None)
            if users:
                leaving[value] = list(dict.fromkeys(users))
    return list(entering.items()), list(leaving.items())


def costliest(graph, nodes: list[Node], devices: list[str], groups: list[list[int]],
              costs: CostModel) -> tuple[list[int], str] | None:
    """The accelerator partition that loses most by staying there, and the reason; None if all pay."""
    def device_of(i: int | None) -> str:
        return CPU if i is None else devices[i]  # the graph boundary is host memory

    worst = None
    for group in groups:
        accel = devices[group[0]]
        if accel == CPU:
            continue
        entering, leaving = edges(graph, nodes, group)
        if_accel = [v.nbytes or 0 for v, src in entering if device_of(src) == CPU]
        if_accel += [v.nbytes or 0 for v, users in leaving if any(device_of(u) == CPU for u in users)]
        if_cpu = [v.nbytes or 0 for v, src in entering if device_of(src) != CPU]
        if_cpu += [v.nbytes or 0 for v, users in leaving if any(device_of(u) != CPU for u in users)]
        work = sum(macs(nodes[i]) for i in group)
        saving = costs.compute_saving(work)
        extra = costs.transfer(if_accel) - costs.transfer(if_cpu)
        net = saving - extra
        if net < 0 and (worst is None or net < worst[0]):
            reason = (f"cost model: its {accel} partition of {len(group)} node{'s' if len(group) > 1 else ''} "
                      f"saves {saving * 1e6:.1f} us of compute ({work:,} MACs) but its copies cost "
                      f"{extra * 1e6:.1f} us more ({len(if_accel)} copies, {human_size(sum(if_accel))} "
                      f"at {costs.bandwidth / 1e9:g} GB/s)")
            worst = (net, group, reason)
    return None if worst is None else (worst[1], worst[2])


def crossings(graph, nodes: list[Node], part: list[int]) -> list[Crossing]:
    """Every activation handed between partitions, or between a partition and the graph boundary."""
    index = {node: i for i, node in enumerate(nodes)}
    found = []
    for value in [*graph.inputs, *(v for node in nodes for v in node.outputs)]:
        source = part[index[value.producer]] if value.producer in index else None
        dests = {part[index[u]] for u in value.uses if u in index} - {source}
        ordered: list[int | None] = sorted(dests)
        if graph.is_graph_output(value) and source is not None:
            ordered.append(None)
        found += [Crossing(value.name, value.nbytes or 0, source, dest) for dest in ordered]
    return found


def build_plan(graph, nodes, keys, devices, reasons, groups, target_name, accelerator, fallback) -> PartitionPlan:
    part = [0] * len(nodes)
    partitions = []
    for pid, group in enumerate(groups):
        for i in group:
            part[i] = pid
        partitions.append(Partition(pid, devices[group[0]], [keys[nodes[i]] for i in group]))
    placements = {
        keys[node]: Placement(keys[node], node.qualified_op, devices[i], part[i], macs(node),
                              reasons[i] if devices[i] == CPU else "")
        for i, node in enumerate(nodes)
    }
    return PartitionPlan(target_name, accelerator, fallback, partitions, placements, crossings(graph, nodes, part))


def partition_graph(model: Model, target: TargetSpec, profile: Profile | None = None, fallback: str = "cpu",
                    bandwidth: float = 0, device: str = "") -> PartitionPlan:
    """Decide a device for every node of ``model`` on ``target`` (or against ``device``'s
    table, the test double's); see the module's rules."""
    if fallback not in ("cpu", "error"):
        raise UsageError(f"partition: fallback must be cpu or error, not {fallback!r}")
    if device and device not in supported_devices():
        raise UsageError(f"partition: device must be one of {', '.join(supported_devices())}, not {device!r}")
    graph = model.graph
    nodes = list(graph.nodes)
    keys = node_keys(nodes)
    accelerator = device or (target.device if target.device != CPU else None)
    if accelerator is None:
        devices = [CPU] * len(nodes)
        reasons = [f"target {target.name} has no accelerator"] * len(nodes)
    else:
        support = accelerator_support(target, profile, device)
        verdicts = [support(node) for node in nodes]
        devices = [accelerator if v else CPU for v in verdicts]
        reasons = [v.reason for v in verdicts]
    groups = merge(nodes, devices)
    if accelerator is not None and fallback == "cpu":
        costs = cost_model_for(target, bandwidth, device)
        while (worst := costliest(graph, nodes, devices, groups, costs)) is not None:
            group, reason = worst
            for i in group:
                devices[i], reasons[i] = CPU, reason
            logger.debug("%s", reason)
            groups = merge(nodes, devices)
    return build_plan(graph, nodes, keys, devices, reasons, groups, target.name, accelerator, fallback)


@dataclass
class PartitionOptions:
    target: str = ""
    """A target name or board file, as ``--target`` takes it."""
    fallback: str = "cpu"
    """cpu: refused nodes stay on the CPU; error: each one fails the compile."""
    profile: str = ""
    """A profile name or file; empty: the profile the model carries, if any."""
    bandwidth: float = 0.0
    """Host<->device bytes per second for the cost model; 0: the target's default."""
    device: str = ""
    """The second device; empty: the target's accelerator. cpu-test-double: the host CPU under
    a second capability table, for tests without an accelerator."""


@register_pass
class PartitionPass(Pass):
    name = "partition"
    Options = PartitionOptions

    def requires(self, model: Model) -> None:
        if not self.options.target:
            raise CompileError("partition needs a target (partition{target=NAME})")
        if self.options.fallback not in ("cpu", "error"):
            raise CompileError(f"partition: fallback must be cpu or error, not {self.options.fallback!r}")
        if self.options.device and self.options.device not in supported_devices():
            raise CompileError(f"partition: device must be one of {', '.join(supported_devices())}, "
                               f"not {self.options.device!r}")

    def call(self, model: Model) -> PassResult:
        options = self.options
        try:
            target = get_target(options.target)
            profile = load_profile(options.profile) if options.profile else from_metadata_props(model.metadata)
        except UsageError as exc:
            raise CompileError(f"partition: {exc}") from None
        plan = partition_graph(model, target, profile, options.fallback, options.bandwidth, options.device)
        diagnostics = plan.diagnostics()
        stats = plan.stats()
        counts = {"partitions": stats["partitions"], **{f"nodes-on-{d}": n for d, n in stats["nodes"].items()},
                  "copies": stats["copies"], "copied-bytes": stats["copied_bytes"]}
        if any(d.severity == "error" for d in diagnostics):
            return PassResult(model, modified=False, stats=counts, diagnostics=diagnostics)
        record = json.dumps(plan.to_dict(), separators=(",", ":"))
        modified = model.metadata.get(METADATA_KEY) != record
        model.metadata[METADATA_KEY] = record
        logger.info("partitioned for %s: %s", target.name, counts)
        return PassResult(model, modified=modified, stats=counts, diagnostics=diagnostics)
