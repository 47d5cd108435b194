"""Lowering a partitioned model: one TVM library per partition, each for its own device.

The partition pass decides a device for every node and records the plan on the
model (``passes/partition.py``). Here the model is split into one sub-model per
partition, in the plan's order, and each is lowered by :func:`lower` for its device.

Rules:
- A GPU partition is lowered for the target itself: TVM's GPU pipeline with dlight's
  schedules. A CPU partition, and one of the CPU test double, is lowered for the
  target's host CPU (the ``host`` of a GPU target's TVM target) through edgec's CPU
  path, with its schedules and arena.
- A sub-model's inputs are the activations entering its partition, in the order its
  nodes first read them; its outputs are the activations leaving it (read by a later
  partition, or graph outputs), in definition order. Constants go with every partition
  that reads them. TVM names each partition's weights afresh (``lv1``...), so the
  artifact names them ``NAME@PARTITION`` and stores identical ones once.
- Each partition gets its own memory plan, so the tensors crossing into and out of it
  are planned on its side; the bytes crossing each way are recorded too.
- One partition keeps the single-library layout (``model.so``, format 1) and the whole
  model, so its library takes the inputs and gives the outputs in the signature's
  order; more get one library each (format 2), and the runtime passes tensors by name.
- :func:`with_partitioning` adds the partition pass at the end of the pipeline for
  targets with an accelerator and whenever ``--fallback`` is given; a pipeline with its
  own partition pass (the CPU test double's, say) partitions as that pass says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.compiler.pass_manager import PassSpec, Pipeline
from edgec.compiler.pipelines import append_at_partition_point
from edgec.deploy.artifact import LIBRARY
from edgec.errors import CompileError, UsageError
from edgec.ir import Graph, Model, Node, Value, verify
from edgec.passes.partition import CPU, PartitionOptions, PartitionPlan, node_keys
from edgec.passes.plan_memory import plan_memory, target_alignment

from .base import TargetSpec
from .lowering import lower

logger = logging.getLogger(__name__)


def with_partitioning(pipeline: Pipeline, target_name: str, target: TargetSpec, fallback: str | None) -> Pipeline:
    """The pipeline with a partition pass at its end when the compile needs one: the target
    has an accelerator, or ``--fallback`` was given. A pipeline that already partitions is
    kept as it is, and then ``--fallback`` must be set on its pass instead."""
    if any(spec.name == "partition" for spec in pipeline):
        if fallback is not None:
            raise UsageError("--fallback: the pipeline in --passes has its own partition pass; "
                             "set fallback=cpu|error on it instead")
        return pipeline
    if target.device == CPU and fallback is None:
        return pipeline
    options = PartitionOptions(target=target_name, fallback=fallback or "cpu")
    return append_at_partition_point(pipeline, PassSpec("partition", options))


def runs_on(device: str) -> str:
    """The TVM device a partition's code runs on: the test double is the host CPU."""
    return "cuda" if device == "cuda" else CPU


def host_target(target: TargetSpec) -> TargetSpec:
    """The target's CPU alone: a GPU target's host, or the target itself."""
    if target.device == CPU:
        return target
    return dataclasses.replace(target, device=CPU, tvm_target=target.tvm_target["host"])


def submodel(model: Model, nodes: list[Node], name: str) -> Model:
    """A copy of ``nodes`` as a model of its own: entering activations become its inputs,
    leaving ones (used by other nodes, or graph outputs) its outputs."""
    inside = set(nodes)
    graph = Graph(name)
    copies: dict[Value, Value] = {}

    def copy(value: Value) -> Value:
        if value not in copies:
            copies[value] = Value(value.name, value.dtype, value.shape, value.const)
            if value.is_constant:
                graph.initializers[value.name] = copies[value]
        return copies[value]

    for node in nodes:
        for value in [*node.inputs, *node.implicit_inputs]:
            if value is not None and not value.is_constant and value.producer not in inside and value not in copies:
                graph.add_input(copy(value))
    for node in nodes:
        new = graph.make_node(node.op_type, [None if v is None else copy(v) for v in node.inputs],
                              [copy(v) for v in node.outputs], node.attrs, node.domain, node.name)
        new.implicit_inputs = [copy(v) for v in node.implicit_inputs]
        for value in new.implicit_inputs:
            value.uses.append(new)
    graph.outputs = [copies[v] for node in nodes for v in node.outputs
                     if model.graph.is_graph_output(v) or any(user not in inside for user in v.uses)]
    return dataclasses.replace(model, graph=graph, metadata={})


def split(model: Model, plan: PartitionPlan) -> list[Model]:
    """One verified sub-model per partition of ``plan``, in the plan's order."""
    keys = node_keys(model.graph.nodes)
    produced = {v for node in model.graph.nodes for v in node.outputs}
    for value in model.graph.outputs:
        if value not in produced:
            raise CompileError(f"graph output '{value.name}' is not computed by any node; "
                               "a partitioned model needs each output to come from a partition")
    parts = []
    for partition in plan.partitions:
        members = set(partition.nodes)
        sub = submodel(model, [n for n in model.graph.nodes if keys[n] in members], f"partition{partition.id}")
        verify(sub)
        parts.append(sub)
    return parts


@dataclass
class LoweredPartition:
    id: int
    device: str
    """The plan's device: cpu, cuda or cpu-test-double."""
    library: str
    """The artifact member holding its code."""
    code: bytes
    inputs: list[str]
    outputs: list[str]
    weights: list[str]
    memory_plan: dict
    runtime_memory: dict | None
    lowering: dict
    """What lowering adds to the target's manifest for this partition (tuned or integer kernels)."""

    def manifest(self, model: Model) -> dict:
        values = {v.name: v for v in [*model.graph.inputs, *model.graph.outputs]}
        return {
            "id": self.id,
            "device": self.device,
            "runs_on": runs_on(self.device),
            "library": self.library,
            "nodes": len(model.graph.nodes),
            "inputs": self.inputs,
            "outputs": self.outputs,
            "weights": self.weights,
            "input_bytes": sum(values[name].nbytes or 0 for name in self.inputs),
            "output_bytes": sum(values[name].nbytes or 0 for name in self.outputs),
            "memory_plan": self.memory_plan,
            "runtime_memory": self.runtime_memory,
            "lowering": self.lowering,
        }


@dataclass
class PartitionedLowering:
    """What :func:`lower_partitions` gives the driver, shaped like :class:`Lowered`."""

    library: bytes | dict[str, bytes]
    params: list[tuple[str, np.ndarray]]
    target_manifest: dict
    tvm_version: str
    runtime_memory: dict | None
    """The one partition's VM memory; None with several (each partition records its own)."""
    partitions: list[dict]
    """Each partition's manifest entry."""


def weight_digest(array: np.ndarray) -> str:
    data = np.ascontiguousarray(array)
    return hashlib.sha256(f"{data.dtype}{data.shape}".encode() + data.tobytes()).hexdigest()


def lower_partitions(model: Model, target: TargetSpec, plan: PartitionPlan,
                     tuning_db: Path | None = None) -> PartitionedLowering:
    """Lower each partition of ``plan`` for its device; see the module's rules. Tuning
    records (CPU kernels) apply to the CPU partitions."""
    if plan.target != target.name:
        raise CompileError(f"the partition pass planned for target {plan.target}, but the compile is for {target.name}")
    several = len(plan.partitions) > 1
    parts = split(model, plan) if several else [model]  # alone, it keeps the signature's order
    lowered_parts: list[LoweredPartition] = []
    weights: dict[str, np.ndarray] = {}
    stored: dict[str, str] = {}
    """A weight's digest -> its name in the artifact: a constant two partitions read is stored once."""
    tvm_version = None
    for partition, sub in zip(plan.partitions, parts):
        on_gpu = runs_on(partition.device) == "cuda"
        spec = target if on_gpu else host_target(target)
        logger.info("lowering partition #%d (%d nodes) for %s", partition.id, len(sub.graph.nodes), partition.device)
        try:
            lowered = lower(sub, spec, tuning_db=None if on_gpu else tuning_db)
        except CompileError as exc:
            raise CompileError(f"partition #{partition.id} ({partition.device}): {exc}") from None
        if several and "shape_inputs" in lowered.target_manifest:  # the runtime checks the model's, not a partition's
            pinned = lowered.target_manifest["shape_inputs"][0]
            raise CompileError(f"partition #{partition.id} ({partition.device}): {pinned['op']} node '{pinned['node']}': "
                               f"its output shape is the value of input '{pinned['input']}'; a partitioned model "
                               "compiles static shapes only")
        tvm_version = lowered.tvm_version
        base = spec.manifest()
        notes = {key: value for key, value in lowered.target_manifest.items() if key not in base}
        names = []
        for name, array in lowered.params:
            digest = weight_digest(array)
            if digest not in stored:
                stored[digest] = f"{name}@{partition.id}" if several else name
                weights[stored[digest]] = array
            names.append(stored[digest])
        lowered_parts.append(LoweredPartition(
            partition.id, partition.device, f"partition{partition.id}.so" if several else LIBRARY, lowered.library,
            [v.name for v in sub.graph.inputs], [v.name for v in sub.graph.outputs],
            names, plan_memory(sub, target_alignment(spec)).to_dict(),
            lowered.runtime_memory, notes,
        ))
    return PartitionedLowering(
        library={p.library: p.code for p in lowered_parts},
        params=list(weights.items()),
        target_manifest={**target.manifest(), **({} if several else lowered_parts[0].lowering)},
        tvm_version=tvm_version,
        runtime_memory=None if several else lowered_parts[0].runtime_memory,
        partitions=[p.manifest(sub) for p, sub in zip(lowered_parts, parts)],
    )
