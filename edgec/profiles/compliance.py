"""Holding a model to its edge profile: static checks at compile time, and a measured certificate.

``check_static`` judges the compiled graph against what a profile allows (ops, dtypes,
quantization) and what it budgets (weights, activation arena, working set) before any
run. ``certify`` runs the artifact on a device and measures every execution-mode
attribute the ONNX Edge WG named (accuracy, memory, latency, power, data locality),
each with what was required, what was measured, how, and pass/fail: the compliance
certificate the working group set out to produce.

The device is a parameter: ``certify`` takes anything with ``run(feeds) -> outputs``
and the signature of :class:`edgec.runtime.Signature` (a local ``CompiledModel``, or
``edgec.deploy.remote.RemoteModel`` on a lab device, which also offers ``time()``,
``device_info`` and ``emulated``).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from ..deploy.artifact import FIRMWARE, FIRMWARE_VERSION, open_artifact, reading_section, sha256_file
from ..deploy.manifest import Manifest, Partition
from ..errors import UsageError
from ..reports.check import IN_PROCESS, WHOLE_PROCESS
from ..units import format_duration, format_size_exact, human_duration, human_size
from .profile import METRICS, QUANTIZED_STORAGE, Profile

if TYPE_CHECKING:  # certifying an artifact (check) needs no IR, so no onnx
    from ..ir import Model, Node, Value

logger = logging.getLogger(__name__)

MAX_WHERE = 8
"""Places named per finding in ``format()``; ``to_dict()`` keeps them all."""


def listing(items, limit: int = MAX_WHERE) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def node_label(node: Node) -> str:
    return node.name or (node.outputs[0].name if node.outputs else node.op_type)


# -- static checks -------------------------------------------------------------------------------

@dataclass
class Finding:
    """One static check: what the profile (or target) required, what the model has, and where."""

    attribute: str
    required: str
    found: str
    ok: bool
    where: list[str] = field(default_factory=list)
    how: str = ""
    estimated: bool = False

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "ok": self.ok, "required": self.required, "found": self.found,
                "where": self.where, "how": self.how, "estimated": self.estimated}

    def format(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        where = f" at {listing(self.where)}" if self.where and not self.ok else ""
        estimate = " (estimated)" if self.estimated else ""
        return f"{mark} {self.attribute}: required {self.required}; found {self.found}{estimate}{where}"


@dataclass
class ComplianceReport:
    profile: str
    target: str
    checks: list[Finding]

    @property
    def violations(self) -> list[Finding]:
        return [check for check in self.checks if not check.ok]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict:
        return {"profile": self.profile, "target": self.target, "ok": self.ok,
                "checks": [check.to_dict() for check in self.checks]}

    def format(self) -> str:
        count = len(self.violations)
        head = f"profile {self.profile} on target {self.target}: " + (
            "every static check passes" if self.ok else f"{count} violation{'s' if count > 1 else ''}")
        lines = [head]
        for check in self.checks:
            lines.append(f"  {check.format()}")
            if check.estimated:
                lines.append(f"       how: {check.how}")
        return "\n".join(lines)


def check_static(profile: Profile, model: Model, target, imported: Model | None = None, plan=None) -> ComplianceReport:
    """Every check a profile allows before running: ops, dtypes, quantization, weight and memory budgets.

    ``model`` is the graph that gets lowered (after passes); ``imported``, if given, is
    the graph before passes, on which quantization is judged, because fold-constants
    turns Q/DQ weights into float ones. ``plan``, a memory plan, replaces the arena estimate.
    """
    graph = model.graph
    checks: list[Finding] = []
    constrained = static_attributes(profile)
    if "ops" in constrained:
        checks.append(check_ops(profile, graph.nodes))
    if "dtypes.compute" in constrained:
        checks.append(check_compute_dtypes(profile.dtypes.compute, graph))
    if "dtypes.storage" in constrained:
        checks.append(check_storage_dtypes(profile.dtypes.storage, graph))
    if "quantization" in constrained:
        checks.extend(check_quantization(profile, (imported or model).graph))
    weights = weight_bytes(graph)
    arena = planned_arena(plan) if plan is not None else estimate_arena(graph)
    if profile.memory.weights is not None:
        fits = weights <= profile.memory.weights
        largest = [] if fits else sorted(graph.initializers.values(), key=lambda v: -(v.nbytes or 0))
        checks.append(Finding(
            "memory.weights", f"<= {format_size_exact(profile.memory.weights)}",
            f"{human_size(weights)} in {len(graph.initializers)} initializers", fits,
            [f"{v.name} ({human_size(v.nbytes or 0)})" for v in largest],
            "sum of the initializers' bytes after passes (what the artifact stores)"))
    if profile.memory.activation_arena is not None:
        checks.append(arena.finding("memory.activation_arena", profile.memory.activation_arena))
    working_set = weights + arena.peak
    how = (f"weights + {'estimated' if arena.estimated else 'planned'} activation arena; the runtime's own memory "
           "is not counted, so this is a lower bound ('edgec check' measures it)")
    if profile.memory.working_set is not None:
        checks.append(Finding(
            "memory.working_set", f"<= {format_size_exact(profile.memory.working_set)}",
            f"at least {human_size(working_set)}", working_set <= profile.memory.working_set,
            arena.where if arena.peak > profile.memory.working_set - weights else [], how, estimated=True))
    if target.memory_bytes is not None:
        checks.append(Finding(
            f"target {target.name} memory", f"<= {human_size(target.memory_bytes)}",
            f"at least {human_size(working_set)}", working_set <= target.memory_bytes, [], how, estimated=True))
    return ComplianceReport(profile.name, target.name, checks)


def runtime_intermediates(runtime_memory: dict) -> int:
    """Bytes the VM allocates for a model's intermediates: edgec's arena, or TVM's storages where it could not run in it."""
    return runtime_memory["arena_bytes"] if runtime_memory["runs_in_arena"] else runtime_memory["tvm_storage_bytes"]


def lowered_arena_finding(budget: int, runtime_memory: dict) -> Finding:
    """The activation budget against what the lowered model allocates for its intermediates."""
    needed = runtime_intermediates(runtime_memory)
    kind = "edgec's arena for TVM's tensors" if runtime_memory["runs_in_arena"] else "TVM's own storages"
    return Finding("memory.activation_arena", f"<= {format_size_exact(budget)}",
                   f"{human_size(needed)} after lowering", needed <= budget, [],
                   f"{kind} after TVM's layout changes and fusion ({runtime_memory['tensors']} tensors); "
                   "quantization or a smaller batch lowers it")


def partitions_intermediates(partitions: list[Partition]) -> tuple[int, str]:
    """Bytes the partitions' VMs allocate for intermediates, and how that was found. Each
    partition's VM keeps its own, so they add up; partitions TVM's GPU pipeline lowered are
    not analysed, and are named."""
    analysed = [p for p in partitions if p.runtime_memory]
    needed = sum(runtime_intermediates(p.runtime_memory) for p in analysed)
    how = f"the sum over {len(analysed)} partitions' VMs, each in its own arena or storages after lowering"
    skipped = [f"#{p.id} ({p.device or p.runs_on})" for p in partitions if not p.runtime_memory]
    if skipped:
        how += f"; not counted: {', '.join(skipped)}, whose memory TVM's GPU pipeline plans"
    return needed, how


def partitions_analysed(partitions: list[Partition]) -> bool:
    """Whether a model has several partitions and edgec analysed the VM of at least one."""
    return len(partitions) > 1 and any(p.runtime_memory for p in partitions)


def lowered_arena_check(budget: int, runtime_memory: dict | None, partitions: list[Partition]) -> Finding | None:
    """The activation budget against what the lowered model's VMs allocate: the one VM's, or the
    sum over a partitioned model's; None when none was analysed (a model all on the GPU)."""
    if partitions_analysed(partitions):
        needed, how = partitions_intermediates(partitions)
        return Finding("memory.activation_arena", f"<= {format_size_exact(budget)}",
                       f"{human_size(needed)} after lowering", needed <= budget, [], how)
    return lowered_arena_finding(budget, runtime_memory) if runtime_memory else None


def op_matches(node: Node, names: tuple[str, ...]) -> bool:
    domain = node.domain if node.domain not in ("", "ai.onnx") else ""
    return node.qualified_op in names or f"{domain}::*" in names


def check_ops(profile: Profile, nodes: list[Node]) -> Finding:
    allowed, excluded = profile.ops.allowed, profile.ops.excluded or ()
    bad = [n for n in nodes if (allowed is not None and not op_matches(n, allowed)) or op_matches(n, excluded)]
    ops: dict[str, int] = {}
    for node in bad:
        ops[node.qualified_op] = ops.get(node.qualified_op, 0) + 1
    required = " and ".join(part for part in (
        f"only {listing(allowed, 12)}" if allowed is not None else "",
        f"none of {listing(excluded, 12)}" if excluded else "") if part)
    found = ", ".join(f"{op} ({count} node{'s' if count > 1 else ''})" for op, count in ops.items())
    return Finding("ops", required, found or "no op outside the subset", not bad,
                   [f"{node_label(n)} ({n.qualified_op})" for n in bad])


def check_compute_dtypes(allowed: tuple[str, ...], graph) -> Finding:
    values = [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]
    bad = [v for v in values if v.dtype is not None and v.dtype not in allowed]
    where = [f"{v.name} ({v.dtype}, from {node_label(v.producer) if v.producer else 'the graph input'})" for v in bad]
    return Finding("dtypes.compute", f"activations in {', '.join(allowed)}",
                   ", ".join(sorted({v.dtype for v in bad})) or "only allowed types", not bad, where)


def check_storage_dtypes(allowed: tuple[str, ...], graph) -> Finding:
    bad = [v for v in graph.initializers.values() if v.dtype not in allowed]
    where = [f"{v.name} ({v.dtype}, used by {listing([node_label(u) for u in v.uses], 3) or 'nothing'})" for v in bad]
    return Finding("dtypes.storage", f"weights in {', '.join(allowed)}",
                   ", ".join(sorted({v.dtype for v in bad})) or "only allowed types", not bad, where)


LINEAR_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
"""Ops with a weight input (by index) that quantization should cover."""
QUANTIZED_WEIGHT_INPUTS = {"DequantizeLinear": (0, 1, 2), "QLinearConv": (3, 4, 5), "QLinearMatMul": (3, 4, 5)}
"""(weight, scale, zero point) input indices of the ops that carry quantized weights."""


def check_quantization(profile: Profile, graph) -> list[Finding]:
    """Q/DQ placement as the 2020 ONNX workshop recommends: every linear op's weight quantized."""
    q = profile.quantization
    quantized = []  # (node, weight, scale, zero point) of constant quantized weights
    for node in graph.nodes:
        indices = QUANTIZED_WEIGHT_INPUTS.get(node.op_type)
        if indices and node.domain in ("", "ai.onnx"):
            weight, scale, zero = (node.inputs[i] if i < len(node.inputs) else None for i in indices)
            if weight is not None and weight.is_constant and str(weight.dtype) in QUANTIZED_STORAGE:
                quantized.append((node, weight, scale, zero))
    findings = []
    if q.required:
        float_weights = [
            n for n in graph.nodes
            if n.op_type in LINEAR_OPS and len(n.inputs) > LINEAR_OPS[n.op_type]
            and (w := n.inputs[LINEAR_OPS[n.op_type]]) is not None and w.is_constant and w.dtype not in QUANTIZED_STORAGE
        ]
        found = f"{len(quantized)} quantized weights, {len(float_weights)} linear ops with float weights"
        findings.append(Finding("quantization.required", "every Conv/Gemm/MatMul weight quantized (Q/DQ or QLinear ops)",
                                found, not float_weights and bool(quantized),
                                [f"{node_label(n)} ({n.op_type})" for n in float_weights]))
    if q.scheme:
        per_channel = q.scheme == "per-channel"
        bad = [(n, w) for n, w, scale, _ in quantized
               if scale is not None and scale.is_constant and (scale.const.size > 1) != per_channel]
        findings.append(Finding("quantization.scheme", f"{q.scheme} weight scales",
                                f"{len(bad)} of {len(quantized)} quantized weights otherwise", not bad,
                                [f"{w.name} ({node_label(n)})" for n, w in bad]))
    if q.symmetric is not None:
        bad = [(n, w) for n, w, _, zero in quantized if is_symmetric(w, zero) != q.symmetric]
        kind = "symmetric (zero point 0, or 128 for unsigned)" if q.symmetric else "asymmetric"
        findings.append(Finding("quantization.symmetric", f"{kind} weights",
                                f"{len(bad)} of {len(quantized)} quantized weights otherwise", not bad,
                                [f"{w.name} ({node_label(n)})" for n, w in bad]))
    return findings


def is_symmetric(weight: Value, zero: Value | None) -> bool:
    if zero is None:
        return True
    if not zero.is_constant:
        return False
    middle = 0 if np.dtype(zero.const.dtype).kind == "i" else 2 ** (8 * zero.const.dtype.itemsize - 1)
    return bool(np.all(zero.const.astype(np.int64) == middle))


def weight_bytes(graph) -> int:
    return sum(v.nbytes or 0 for v in graph.initializers.values())


@dataclass
class ArenaEstimate:
    """The activation arena as the peak, over the node order, of the bytes of live values."""

    peak: int
    at: str
    where: list[str]
    unknown: int
    """Values whose size is not static, left out of the sum."""
    how: str = ("estimated without a memory plan: walking the nodes in order, a value is live "
                "from the node that produces it (graph inputs from the start) through its last use (graph "
                "outputs to the end); the arena is the largest sum of live bytes, with no buffer reuse "
                "or in-place ops")
    estimated: bool = True

    def finding(self, attribute: str, budget: int) -> Finding:
        found = f"{human_size(self.peak)} at {self.at}" + (f", {self.unknown} values of unknown size not counted"
                                                          if self.unknown else "")
        return Finding(attribute, f"<= {format_size_exact(budget)}", found, self.peak <= budget,
                       self.where, self.how, estimated=self.estimated)


def planned_arena(plan) -> ArenaEstimate:
    """The arena of a memory plan (``edgec.passes.plan_memory.MemoryPlan``) in the estimate's shape."""
    step = plan.peak_step
    alive = sorted(plan.live_at(step), key=lambda t: -t.size)
    how = (f"planned by plan-memory ({plan.algorithm}): offsets in one arena over the node order, with in-place "
           f"reuse; lower bound {human_size(plan.lower_bound)}. TVM still allocates its own buffers at run time")
    return ArenaEstimate(plan.arena_bytes, plan.steps[step] if plan.steps else "the graph inputs",
                         [f"{t.name} ({human_size(t.size)})" for t in alive], len(plan.unplanned), how, False)


def estimate_arena(graph) -> ArenaEstimate:
    order = {id(node): index for index, node in enumerate(graph.nodes)}
    end = len(graph.nodes)
    spans = []  # (value, first index live, last index live)
    for value in [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]:
        if value.is_constant:
            continue
        start = order[id(value.producer)] if value.producer is not None else 0
        last = max([order[id(u)] for u in value.uses if id(u) in order], default=start)
        spans.append((value, start, end if graph.is_graph_output(value) else last))
    unknown = sum(1 for value, _, _ in spans if value.nbytes is None)
    peak, peak_step = 0, 0
    for step in range(max(end, 1)):
        live = sum(v.nbytes or 0 for v, start, last in spans if start <= step <= last)
        if live > peak:
            peak, peak_step = live, step
    live = sorted(((v, s, e) for v, s, e in spans if s <= peak_step <= e and v.nbytes), key=lambda t: -t[0].nbytes)
    at = f"node {node_label(graph.nodes[peak_step])}" if graph.nodes else "the graph inputs"
    return ArenaEstimate(peak, at, [f"{v.name} ({human_size(v.nbytes)})" for v, _, _ in live], unknown)


# -- the certificate -----------------------------------------------------------------------------

PASS, FAIL, UNVERIFIED, NOT_REQUIRED = "pass", "fail", "unverified", "not required"
EMULATED = "emulated"
"""Not measured: the firmware ran on an emulator, whose timing says nothing about the chip.
It does not fail a certificate; the certificate says so for each such attribute."""


@dataclass
class Measurement:
    """One attribute of the certificate: required, measured, how, and the verdict."""

    attribute: str
    required: str | None
    """None: the profile requires nothing of this attribute."""
    measured: str | None
    """None: not measured (``how`` says why)."""
    how: str
    status: str
    estimated: bool = False
    values: dict = field(default_factory=dict)
    """The numbers behind ``measured`` (seconds, bytes...), for tools."""

    def to_dict(self) -> dict:
        return {"attribute": self.attribute, "status": self.status, "required": self.required,
                "measured": self.measured, "how": self.how, "estimated": self.estimated, "values": self.values}


@dataclass
class Certificate:
    profile: dict
    artifact: str
    artifact_sha256: str
    environment: dict
    measurements: list[Measurement]
    issued: str

    @property
    def ok(self) -> bool:
        """Compliant only when every required attribute was measured and met (time and power
        of emulated firmware excepted: they cannot be measured without the chip)."""
        return all(m.status in (PASS, NOT_REQUIRED, EMULATED) for m in self.measurements)

    def to_dict(self) -> dict:
        return {"certificate": "edgec-profile-compliance", "version": 1, "ok": self.ok, "issued": self.issued,
                "artifact": {"path": self.artifact, "sha256": self.artifact_sha256}, "profile": self.profile,
                "environment": self.environment, "measurements": [m.to_dict() for m in self.measurements]}

    def format(self) -> str:
        verdict = "COMPLIANT" if self.ok else "NOT COMPLIANT"
        env = self.environment
        lines = [f"{self.artifact} against profile {self.profile['name']}: {verdict}",
                 f"  artifact sha256 {self.artifact_sha256}",
                 f"  on {env.get('device', env['machine'])}, {env['cpu']}"]
        for m in self.measurements:
            estimate = " (estimated)" if m.estimated else ""
            required = "nothing required" if m.required is None else f"required {m.required}"
            measured = "not measured" if m.measured is None else f"measured {m.measured}{estimate}"
            lines.append(f"  {m.status.upper():<12} {m.attribute}: {required}; {measured}")
            lines.append(f"  {'':<12} how: {m.how}")
        return "\n".join(lines)


def certify(
    artifact_path: str | os.PathLike,
    model,
    profile: Profile,
    data: Mapping[str, np.ndarray] | str | os.PathLike | None,
    float_model_path: str | os.PathLike | None,
    target,
    *,
    first_time_s: float | None = None,
    repeat: int = 20,
    warmup: int = 3,
) -> Certificate:
    """Measure the artifact against every attribute of ``profile`` and issue a certificate.

    ``model`` is a loaded model (``run(feeds)``), or a zero-argument loader returning
    one: then first-time latency is measured from the call to the first result (for a local
    artifact, in a fresh process, as ``edgec bench`` does), and
    memory in that process too (``check.measure_latency``, shared with ``edgec bench``). With a loaded model, pass ``first_time_s`` (load and
    first inference) measured by the caller. ``data`` is an .npz (path or arrays): one array per model input with
    samples on the first axis, plus ``labels`` or ``expected_<output>``.
    """
    artifact_path = Path(artifact_path)
    manifest = open_artifact(artifact_path).typed
    arrays = load_data(data) if data is not None and not isinstance(data, Mapping) else data
    if manifest.format_version == FIRMWARE_VERSION:
        return certify_firmware(artifact_path, manifest, model, profile, arrays, float_model_path)
    loader = model if callable(model) and not hasattr(model, "run") else None
    started = time.perf_counter()
    if loader is not None:
        model = loader()
    timing = measure(model, arrays, started, repeat, warmup)
    if loader is None and first_time_s is not None:
        timing.first_s = first_time_s
    outputs = run_all(model.run, model, arrays) if arrays is not None and profile.accuracy.metric else None
    measured_first = loader is not None or first_time_s is not None
    measurements = [
        accuracy_measurement(profile, model, arrays, outputs, float_model_path),
        latency_first(profile, timing, measured_first, batch_advice(profile, timing, manifest)),
        latency_steady(profile, timing, batch_advice(profile, timing, manifest), manifest.recurrent_steps),
        working_set_measurement(profile, timing),
    ]
    with reading_section(artifact_path, "report, memory_plan, profile or compliance"):
        measurements.append(weights_measurement(profile, manifest))
        if profile.memory.activation_arena is not None:
            measurements.append(arena_measurement(profile.memory.activation_arena, manifest))
        measurements += compile_time_checks(profile, manifest)
    measurements += [power_measurement(profile, timing, target), locality_measurement(profile, artifact_path)]
    issued = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Certificate(profile.to_dict(), str(artifact_path), sha256_file(artifact_path),
                       environment(model, manifest), measurements, issued)


def certify_firmware(artifact_path: Path, manifest: Manifest, model, profile: Profile, arrays, float_model_path) -> Certificate:
    """A microcontroller firmware's certificate: memory and flash from the linked ELF's
    sections, ops and dtypes from the compiled graph, accuracy on qemu; latency and power
    are not measured (an emulator's timing is not the chip's)."""
    model = model() if callable(model) and not hasattr(model, "run") else model
    outputs = run_all(model.run, model, arrays) if arrays is not None and profile.accuracy.metric else None
    memory = manifest.target.mcu_memory
    why = f"not measured: qemu-system-arm -M {manifest.target.board} emulates instructions, not the chip's timing"
    measurements = [
        accuracy_measurement(profile, model, arrays, outputs, float_model_path),
        *(Measurement(attribute, spelled, None, why, EMULATED if spelled else NOT_REQUIRED) for attribute, spelled in (
            ("latency.first_time", f"<= {format_duration(profile.latency.first_time)}"
             if profile.latency.first_time is not None else None),
            ("latency.steady_state", f"<= {format_duration(profile.latency.steady_state)}"
             if profile.latency.steady_state is not None else None),
            ("power", f">= {profile.power.min_ips_per_watt:g} inferences/s per W"
             if profile.power.min_ips_per_watt is not None else None))),
        firmware_ram(profile, memory),
        firmware_flash(profile, memory),
        firmware_weights(profile, manifest),
    ]
    if profile.memory.activation_arena is not None:
        measurements.append(arena_measurement(profile.memory.activation_arena, manifest))
    with reading_section(artifact_path, "report, profile or compliance"):
        measurements += (compile_time_checks(profile, manifest) if same_static_rules(profile, manifest)
                         else graph_checks(profile, manifest))
    measurements.append(firmware_locality(profile, open_artifact(artifact_path).read_member(FIRMWARE)))
    issued = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Certificate(profile.to_dict(), str(artifact_path), sha256_file(artifact_path),
                       environment(model, manifest), measurements, issued)


def firmware_ram(profile: Profile, memory: dict) -> Measurement:
    """RAM: the model objects' .data and .bss (arena, kernel workspace, tensor descriptors) and the stack."""
    from ..reports.report import firmware_ram_bytes  # report imports this module

    ram = firmware_ram_bytes(memory)
    required = profile.memory.working_set
    how = (f"the linked firmware's sections: the model's .data + .bss ({human_size(memory['arena_bytes'])} arena at "
           f"edgec's offsets, {human_size(memory['workspace_bytes'])} kernel workspace, tensor descriptors) + the "
           f"{human_size(memory['stack_bytes'])} stack its linker script reserves; weights stay in flash, no heap")
    return Measurement("memory.working_set", f"<= {format_size_exact(required)}" if required is not None else None,
                       human_size(ram), how, NOT_REQUIRED if required is None else PASS if ram <= required else FAIL,
                       values={"bytes": ram})


def firmware_flash(profile: Profile, memory: dict) -> Measurement:
    """Flash: the model's code (.text), weights and constants (.rodata) and .data's initial image."""
    from ..reports.report import firmware_flash_bytes  # report imports this module

    sections = memory["model_sections"]
    flash = firmware_flash_bytes(memory)
    required = profile.memory.weights
    how = (f"the linked firmware's sections: the model's .text ({human_size(sections.get('text', 0))} kernels and "
           f"call sequence) + .rodata ({human_size(sections.get('rodata', 0))} weights and constants) + .data's "
           "initial image, against the profile's flash (memory.weights)")
    return Measurement("memory.flash", f"<= {format_size_exact(required)}" if required is not None else None,
                       human_size(flash), how, NOT_REQUIRED if required is None else PASS if flash <= required else FAIL,
                       values={"bytes": flash})


def firmware_weights(profile: Profile, manifest: Manifest) -> Measurement:
    """Every weight and constant of the compiled graph (int8 weights are compiled in as constants)."""
    total = manifest.report["totals"]["weight_bytes"]
    required = profile.memory.weights
    return Measurement("memory.weights", f"<= {format_size_exact(required)}" if required is not None else None,
                       human_size(total), "the compiled graph's weights and constants, from the artifact's report",
                       NOT_REQUIRED if required is None else PASS if total <= required else FAIL,
                       values={"bytes": total})


def same_static_rules(profile: Profile, manifest: Manifest) -> bool:
    compiled_with = manifest.profile or {}
    return manifest.compliance is not None and all(
        compiled_with.get(s) == profile.to_dict().get(s) for s in STATIC_SECTIONS)


def graph_checks(profile: Profile, manifest: Manifest) -> list[Measurement]:
    """Ops and dtypes judged on the compiled graph as the manifest's layer report records it
    (each layer's op and output dtype, the inputs' dtypes, the weights' dtypes)."""
    layers = manifest.report["layers"]
    how = "the compiled graph's layers, as the artifact's report records them"
    measurements: list[Measurement] = []
    if profile.ops.allowed is not None or profile.ops.excluded:
        allowed, excluded = profile.ops.allowed, profile.ops.excluded or ()
        bad = [layer for layer in layers
               if (allowed is not None and layer["op"] not in allowed) or layer["op"] in excluded]
        found = ", ".join(sorted({layer["op"] for layer in bad})) or "no op outside the subset"
        where = f" at {listing([layer['name'] for layer in bad])}" if bad else ""
        measurements.append(Measurement("ops", f"only {listing(allowed, 12)}" if allowed is not None
                                        else f"none of {listing(excluded, 12)}", found + where, how,
                                        FAIL if bad else PASS))
    for attribute, allowed, dtypes in (
            ("dtypes.compute", profile.dtypes.compute,
             {*(spec.dtype for spec in manifest.signature.inputs), *(layer["dtype"] for layer in layers)}),
            ("dtypes.storage", profile.dtypes.storage, {entry.dtype for entry in manifest.weights})):
        if allowed is None:
            continue
        bad = sorted(dtypes - set(allowed))
        measurements.append(Measurement(attribute, f"in {', '.join(allowed)}", ", ".join(bad) or "only allowed types",
                                        how if attribute == "dtypes.compute" else "the artifact's weight index",
                                        FAIL if bad else PASS))
    if static_attributes(profile) and "quantization" in static_attributes(profile):
        measurements.append(Measurement("quantization", "as the profile says", None,
                                        "checked only at compile time: recompile with --profile", UNVERIFIED))
    return measurements


def firmware_locality(profile: Profile, elf: bytes) -> Measurement:
    """A bare-metal firmware is statically linked: its symbol table shows any network code."""
    if profile.data_locality.on_device is None:
        return Measurement("data_locality", None, None, "the profile says nothing about the network", NOT_REQUIRED)
    found = sorted(elf_symbols(elf) & NETWORK_SYMBOLS)
    required = "on device" if profile.data_locality.on_device else "network allowed"
    how = "the statically linked firmware's symbol table: no OS, and no socket or resolver function in it"
    return Measurement("data_locality", required, "network code: " + ", ".join(found) if found else "on device", how,
                       FAIL if found and profile.data_locality.on_device else PASS)


def elf_symbols(data: bytes) -> set[str]:
    """Defined symbol names of a 32-bit little-endian ELF's .symtab."""
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, _ = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for _, kind, _, _, offset, size, link, _, _, entsize in headers:
        if kind != 2 or not entsize:  # SHT_SYMTAB
            continue
        strings = headers[link][4]
        for at in range(offset, offset + size, entsize):
            name, _, _, _, _, section = struct.unpack_from("<IIIBBH", data, at)
            if name and section:
                names.add(data[strings + name:data.index(b"\0", strings + name)].decode(errors="replace"))
    return names


def arena_measurement(budget: int, manifest: Manifest) -> Measurement:
    """The activation arena is fixed when the model is compiled: the lowered model's arena is the figure."""
    runtime = manifest.runtime_memory
    if runtime:
        arena = runtime_intermediates(runtime)
        how = ("planned at compile time: " + ("the one arena the VM runs in, at edgec's offsets" if runtime["runs_in_arena"]
               else f"TVM's own storages ({runtime['why_not']})"))
    elif partitions_analysed(manifest.partitions or []):
        arena, how = partitions_intermediates(manifest.partitions)
        how = f"planned at compile time: {how}"
    else:
        arena = manifest.memory_plan["arena_bytes"]
        how = "planned at compile time: edgec's plan for the graph (the GPU allocates by TVM's plan)"
    return Measurement("memory.activation_arena", f"<= {format_size_exact(budget)}", human_size(arena), how,
                       PASS if arena <= budget else FAIL, values={"bytes": arena})


STATIC_SECTIONS = ("ops", "dtypes", "quantization")
"""Profile sections judged on the compiled graph only, so only at compile time."""


def static_attributes(profile: Profile) -> list[str]:
    """The compile-time attributes ``profile`` constrains, as ``check_static`` names its findings."""
    q = profile.quantization
    constrained = {
        "ops": profile.ops.allowed is not None or profile.ops.excluded is not None,
        "dtypes.compute": profile.dtypes.compute is not None,
        "dtypes.storage": profile.dtypes.storage is not None,
        "quantization": bool(q.required or q.scheme or q.symmetric is not None),
    }
    return [attribute for attribute, yes in constrained.items() if yes]


def compile_time_checks(profile: Profile, manifest: Manifest) -> list[Measurement]:
    """Ops, dtypes and quantization as the compile judged them, when it used these same rules.

    They cannot be measured on a device: they hold for the compiled graph or not. The
    manifest's compliance report is taken when the profile compiled in has the same
    ops, dtypes and quantization sections; otherwise each constrained attribute is
    unverified, so a certificate never passes an artifact nobody held to those rules.
    """
    wanted = static_attributes(profile)
    if not wanted:
        return []
    compiled_with = manifest.profile or {}
    report = manifest.compliance
    same_rules = report is not None and all(compiled_with.get(s) == profile.to_dict().get(s) for s in STATIC_SECTIONS)
    if not same_rules:
        why = (f"compiled against profile {compiled_with['name']}, whose ops, dtypes or quantization rules differ"
               if compiled_with else "compiled without a profile")
        how = f"checked only at compile time; this artifact was {why}: recompile it with --profile {profile.name}"
        return [Measurement(attribute, "as the profile says", None, how, UNVERIFIED) for attribute in wanted]
    how = "checked on the compiled graph at compile time (the manifest's compliance report)"
    measurements = []
    for finding in report["checks"]:
        if finding["attribute"].split(".")[0] in STATIC_SECTIONS:
            where = f" at {listing(finding['where'])}" if finding["where"] and not finding["ok"] else ""
            allowed = " (compiled with --allow-violations)" if not finding["ok"] and report.get("violations_allowed") else ""
            measurements.append(Measurement(finding["attribute"], finding["required"], finding["found"] + where,
                                            how + allowed, PASS if finding["ok"] else FAIL))
    return measurements


def load_data(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"--data {path}: not an .npz file ({exc})") from None


@dataclass
class Timing:
    first_s: float
    runs_s: list[float]
    emulated: bool
    how: str
    batch: int
    """The artifact's batch size, which latency and throughput are measured at."""
    first_how: str = IN_PROCESS
    working_set_bytes: int | None = None
    working_set_how: str = "not measured"

    @property
    def median_s(self) -> float:
        return float(np.median(self.runs_s))


def measure(model, data, started: float, repeat: int, warmup: int) -> Timing:
    """First and steady-state latency on one batch: real data when given, else seeded random inputs."""
    from ..reports.check import measure_latency

    first_batch = next(batches(model, data), None) if data is not None else None
    feeds = first_batch[0] if first_batch else model.random_inputs(0)
    if hasattr(model, "time"):  # a remote model times itself on the device, without the network in the way
        model.run(feeds)
        first = time.perf_counter() - started
        timed = model.time(feeds, repeat=repeat)
        return Timing(first, list(timed.runs), timed.emulated, f"median of {repeat} runs timed on the device",
                      batch_of(model), working_set_how="the device reports no memory figures")
    latency = measure_latency(model, feeds, repeat, warmup, started)
    how = f"median of {repeat} runs after {warmup} warm-up runs, wall clock (time.perf_counter) in this process"
    return Timing(latency.first_s, latency.runs_s, latency.emulated, how, batch_of(model), latency.first_how,
                  latency.working_set_bytes, latency.working_set_how)


def batch_of(model) -> int:
    shape = model.inputs[0]["shape"] if model.inputs else []
    return int(shape[0]) if shape else 1


def batch_advice(profile: Profile, timing: Timing, manifest: Manifest) -> str:
    """Why the artifact's batch is not the profile's, and what would change it ('' when they agree).

    A batch bound at compile (a symbolic dim) recompiles; a batch the model fixes does not."""
    if timing.batch == profile.batch_size:
        return ""
    bound = next((b for b in manifest.dim_bindings if b.axis == 0), None)
    if bound is not None:
        return (f"the artifact takes batches of {timing.batch} (bound at compile from {bound.source}): recompile it "
                f"with --profile {profile.name}, or --dim/--input-shape, for batches of {profile.batch_size}")
    return (f"the model fixes its batch at {timing.batch}, so no compile changes it: export the model with a batch "
            f"of {profile.batch_size} (or a symbolic one, which the compile binds to latency.batch_size), or hold it "
            f"to a profile with latency.batch_size = {timing.batch} (--set latency.batch_size={timing.batch})")


def latency_first(profile: Profile, timing: Timing, measured: bool, advice: str) -> Measurement:
    required = profile.latency.first_time
    spelled = f"<= {format_duration(required)} for a batch of {profile.batch_size}" if required is not None else None
    if not measured:
        return Measurement("latency.first_time", spelled, None,
                           "the model was loaded before certification and no first-time latency was given",
                           UNVERIFIED if required is not None else NOT_REQUIRED)
    how = f"wall clock, {timing.first_how}" + (f"; {advice}" if advice and required is not None else "")
    return Measurement("latency.first_time", spelled, f"{human_duration(timing.first_s)} for a batch of {timing.batch}",
                       how, verdict(required, timing.first_s, timing, profile),
                       values={"seconds": timing.first_s, "batch": timing.batch})


def latency_steady(profile: Profile, timing: Timing, advice: str, recurrent_steps: int | None = None) -> Measurement:
    """Per batch, or per recurrent step where the profile says ``per = "step"``: a call of a
    streaming model is one step; a model that runs a whole sequence per call fails, as it cannot show it."""
    required = profile.latency.steady_state
    per_step = profile.latency.per == "step"
    unit = "per step" if per_step else f"per batch of {profile.batch_size}"
    spelled = f"<= {format_duration(required)} {unit}" if required is not None else None
    measured = f"{human_duration(timing.median_s)} per batch of {timing.batch}"
    how = timing.how + ("; EMULATED (qemu): says nothing about the device's speed" if timing.emulated else "")
    if advice and required is not None:
        how += f"; {advice}"
    result = verdict(required, timing.median_s, timing, profile)
    if per_step and (recurrent_steps or 1) == 1:
        measured = f"{human_duration(timing.median_s)} per step (one call" + (
            ", the caller keeping the recurrent state)" if recurrent_steps else ", no recurrent op)")
    elif per_step:
        measured = f"{human_duration(timing.median_s)} per call of {recurrent_steps} steps"
        how += ("; the profile times one step per call: compile the streaming form of the model (its recurrent "
                "states as inputs and outputs, one step per call)")
        result = result if result in (NOT_REQUIRED, UNVERIFIED) else FAIL
    return Measurement("latency.steady_state", spelled, measured, how, result,
                       values={"median_seconds": timing.median_s, "runs_seconds": timing.runs_s, "batch": timing.batch,
                               "recurrent_steps": recurrent_steps})


def verdict(required: float | None, measured: float, timing: Timing, profile: Profile) -> str:
    """Emulated timings prove nothing; a batch other than the profile's fails (the time of
    another batch says nothing of the profile's: both lines name the two batches)."""
    if required is None:
        return NOT_REQUIRED
    if timing.emulated:
        return UNVERIFIED
    return PASS if measured <= required and timing.batch == profile.batch_size else FAIL


def batches(model, data: Mapping[str, np.ndarray]):
    """(feeds, rows used) per batch of the artifact's batch size; the last batch is padded with the first rows."""
    count = None
    for spec in model.inputs:
        if spec["name"] not in data:
            raise UsageError(f"--data: no array '{spec['name']}' for the model's input (arrays: {', '.join(data)})")
        array = data[spec["name"]]
        if list(array.shape[1:]) != spec["shape"][1:]:
            raise UsageError(f"--data: '{spec['name']}' has shape {list(array.shape)}; expected [N, "
                             f"{', '.join(map(str, spec['shape'][1:]))}] (samples on the first axis)")
        if count is not None and len(array) != count:
            raise UsageError(f"--data: '{spec['name']}' has {len(array)} samples, other inputs have {count}")
        count = len(array)
    if not count:
        raise UsageError("--data: no samples")
    size = batch_of(model)
    for start in range(0, count or 0, size):
        index = np.arange(start, start + size) % count
        feeds = {}
        for spec in model.inputs:
            try:
                feeds[spec["name"]] = data[spec["name"]][index].astype(spec["dtype"], casting="same_kind")
            except TypeError:
                raise UsageError(f"--data: '{spec['name']}' is {data[spec['name']].dtype}; the model takes "
                                 f"{spec['dtype']}") from None
        yield feeds, min(size, count - start)


def run_all(run: Callable[[dict], dict], model, data) -> dict[str, np.ndarray]:
    """Every output over the whole data set, samples on the first axis, padding dropped."""
    collected: dict[str, list[np.ndarray]] = {}
    for feeds, used in batches(model, data):
        for name, value in run(feeds).items():
            collected.setdefault(name, []).append(np.asarray(value)[:used])
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def accuracy_measurement(profile: Profile, model, data, outputs: dict | None, float_model_path) -> Measurement:
    """The profile's metric on ``outputs`` (the artifact's, over ``data``), and against the float model if asked."""
    acc = profile.accuracy
    bounds = [f">= {acc.min}" if acc.min is not None else "", f"<= {acc.max}" if acc.max is not None else "",
              f"at most {acc.max_drop} worse than the float model" if acc.max_drop is not None else ""]
    required = " and ".join(b for b in bounds if b)
    needed = bool(required)
    spelled = f"{acc.metric} {required}" + (f" on {acc.dataset}" if acc.dataset else "") if needed else None
    if acc.metric is None or data is None:
        why = "no metric in the profile" if acc.metric is None else "no --data given"
        return Measurement("accuracy", spelled, None, why, UNVERIFIED if needed else NOT_REQUIRED)
    reference_outputs = None
    if float_model_path is not None:
        reference_outputs = run_all(onnxruntime_runner(Path(float_model_path)), model, data)
    expected, expected_from = expected_values(acc.metric, data, outputs, reference_outputs)
    value = metric_value(acc.metric, outputs, expected)
    values = {"metric": acc.metric, "value": value, "samples": len(next(iter(outputs.values())))}
    how = f"{acc.metric} of the artifact's outputs on {values['samples']} samples of --data against {expected_from}"
    better = METRICS[acc.metric] == "higher"
    ok = (acc.min is None or value >= acc.min) and (acc.max is None or value <= acc.max)
    measured = f"{acc.metric} {value:.4g}"
    if acc.max_drop is not None:
        if reference_outputs is None:
            return Measurement("accuracy", spelled, measured, how + "; no float model given for the drop",
                               UNVERIFIED, values=values)
        reference = metric_value(acc.metric, reference_outputs, expected)
        drop = reference - value if better else value - reference
        values.update(reference=reference, drop=drop)
        measured += f" (float model {reference:.4g}, drop {drop:.4g})"
        how += "; the float model run in onnxruntime on the same batches"
        ok = ok and drop <= acc.max_drop
    return Measurement("accuracy", spelled, measured, how, (PASS if ok else FAIL) if needed else NOT_REQUIRED,
                       values=values)


def onnxruntime_runner(path: Path) -> Callable[[dict], dict]:
    from ..frontend.reference import ort_session

    if not path.is_file():
        raise UsageError(f"{path}: no such float model")
    session = ort_session(str(path))
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds)))


def expected_values(metric: str, data, outputs: dict, reference: dict | None) -> tuple[np.ndarray | dict, str]:
    """Labels for top-k; for the others ``expected_<output>`` arrays, else the float model's outputs."""
    if metric in ("top1", "top5"):
        if "labels" not in data:
            raise UsageError(f"--data: metric {metric} needs a 'labels' array (arrays: {', '.join(data)})")
        labels = np.asarray(data["labels"]).reshape(-1)
        samples = len(next(iter(outputs.values())))
        if len(labels) != samples:
            raise UsageError(f"--data: 'labels' has {len(labels)} entries for {samples} samples")
        return labels, "'labels'"
    expected = {name: data[f"expected_{name}"] for name in outputs if f"expected_{name}" in data}
    if expected:
        return expected, ", ".join(f"'expected_{name}'" for name in expected)
    if reference is None:
        raise UsageError(f"--data: metric {metric} needs 'expected_<output>' arrays "
                         f"({', '.join('expected_' + n for n in outputs)}) or the float model")
    return reference, "the float model's outputs"


def metric_value(metric: str, outputs: dict[str, np.ndarray], expected) -> float:
    if metric in ("top1", "top5"):
        scores = next(iter(outputs.values())).reshape(len(expected), -1)
        k = 1 if metric == "top1" else 5
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.mean(np.any(top == expected[:, None], axis=1)))
    got = np.concatenate([outputs[n].reshape(len(outputs[n]), -1) for n in expected], axis=1).astype(np.float64)
    want = np.concatenate([np.asarray(expected[n]).reshape(len(outputs[n]), -1) for n in expected], axis=1)
    want = want.astype(np.float64)
    if metric == "mse":
        return float(np.mean((got - want) ** 2))
    if metric == "mae":
        return float(np.mean(np.abs(got - want)))
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    return float(np.mean(np.sum(got * want, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)))


def working_set_measurement(profile: Profile, timing: Timing) -> Measurement:
    """The memory loading and running the model takes, as ``check.measure_latency`` measured it."""
    required = profile.memory.working_set
    spelled = f"<= {format_size_exact(required)}" if required is not None else None
    used = timing.working_set_bytes
    if used is None:
        return Measurement("memory.working_set", spelled, None, timing.working_set_how,
                           UNVERIFIED if required is not None else NOT_REQUIRED)
    upper_bound = timing.working_set_how == WHOLE_PROCESS  # over the budget proves nothing then
    status = (NOT_REQUIRED if required is None else PASS if used <= required else UNVERIFIED if upper_bound else FAIL)
    return Measurement("memory.working_set", spelled, human_size(used), timing.working_set_how, status,
                       values={"bytes": used})


def weights_measurement(profile: Profile, manifest: Manifest) -> Measurement:
    """All the compiled graph's weights: int8 kernels compile theirs into the library as
    constants, so weights.bin alone can hold none of them."""
    required = profile.memory.weights
    in_file = sum(entry.nbytes for entry in manifest.weights)
    total = manifest.report["totals"]["weight_bytes"] if manifest.report else in_file
    how = (f"the compiled graph's weights and constants, from the artifact's report: {human_size(in_file)} in "
           f"weights.bin ({len(manifest.weights)} tensors), the rest compiled into the library"
           if manifest.report else f"sum of the {len(manifest.weights)} weight tensors in the artifact's manifest")
    spelled = f"<= {format_size_exact(required)}" if required is not None else None
    status = NOT_REQUIRED if required is None else PASS if total <= required else FAIL
    return Measurement("memory.weights", spelled, human_size(total), how, status, values={"bytes": total})


def power_measurement(profile: Profile, timing: Timing, target) -> Measurement:
    required = profile.power.min_ips_per_watt
    spelled = f">= {required:g} inferences/s per W" if required is not None else None
    if not target.power_watts:
        return Measurement("power", spelled, None, f"target {target.name} declares no power figure",
                           UNVERIFIED if required is not None else NOT_REQUIRED)
    rate = timing.batch / timing.median_s
    per_watt = rate / target.power_watts
    how = (f"steady-state throughput ({rate:.3g} inferences/s) divided by target {target.name}'s declared "
           f"{target.power_watts:g} W ({target.power_source or 'source not given'}); no power was measured")
    if timing.emulated:
        how += "; EMULATED timings"
    if required is None:
        status = NOT_REQUIRED
    else:
        status = UNVERIFIED if timing.emulated else PASS if per_watt >= required else FAIL
    return Measurement("power", spelled, f"{per_watt:.3g} inferences/s per W", how, status, estimated=True,
                       values={"inferences_per_s": rate, "watts": target.power_watts, "ips_per_watt": per_watt})


NETWORK_SYMBOLS = frozenset(
    "socket socketpair connect bind listen accept accept4 send sendto sendmsg sendmmsg recv recvfrom recvmsg "
    "recvmmsg getaddrinfo getaddrinfo_a gethostbyname gethostbyname2 gethostbyname_r gethostbyaddr "
    "getnameinfo res_query res_search".split())
OPAQUE_SYMBOLS = frozenset("dlopen dlmopen dlsym dlvsym syscall execve execv execvp system popen fork vfork".split())
"""Imports through which a library could reach the network without naming a socket function."""
SYSTEM_LIBRARIES = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libstdc++.so", "libgcc_s.so",
                    "ld-linux")


def locality_measurement(profile: Profile, artifact_path: Path) -> Measurement:
    on_device = profile.data_locality.on_device
    if on_device is None:
        return Measurement("data_locality", None, None, "the profile says nothing about the network", NOT_REQUIRED)
    if not on_device:
        qos = profile.data_locality.network_qos
        return Measurement("data_locality", None, None,
                           "the profile allows the network" + (f" ({qos})" if qos else "") + "; a network QoS is a "
                           "requirement on the deployment's network: edgec records it, it does not measure it",
                           NOT_REQUIRED)
    artifact = open_artifact(artifact_path)
    symbols, needed = set(), []
    for member in artifact.libraries():  # model.so, or one library per partition
        imported, libraries = elf_imports(artifact.read_member(member))
        symbols |= imported
        needed += [lib for lib in libraries if lib not in needed]
    network = sorted(symbols & NETWORK_SYMBOLS)
    opaque = sorted(symbols & OPAQUE_SYMBOLS)
    others = [lib for lib in needed if not lib.startswith(SYSTEM_LIBRARIES)]
    how = ("the dynamic symbol table of the artifact's model.so (or each partition's library): every function "
           "it imports, and the libraries it needs (DT_NEEDED); the TVM runtime that loads it is not examined")
    values = {"imported": sorted(symbols), "needed": needed}
    if network:
        return Measurement("data_locality", "on-device: no network", f"imports {', '.join(network)}", how, FAIL,
                           values=values)
    if opaque or others:
        found = ", ".join([*(f"imports {s}" for s in opaque), *(f"needs {lib}" for lib in others)])
        return Measurement("data_locality", "on-device: no network", f"{found}: cannot tell", how, UNVERIFIED,
                           values=values)
    return Measurement("data_locality", "on-device: no network",
                       f"no network function among its {len(symbols)} imported symbols", how, PASS, values=values)


def elf_imports(data: bytes) -> tuple[set[str], list[str]]:
    """(undefined dynamic symbols, DT_NEEDED libraries) of an ELF shared library, like ``nm -D -u``."""
    if data[:4] != b"\x7fELF":
        raise UsageError("the artifact's model.so is not an ELF file")
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    header = struct.unpack_from(order + ("QQQIHHHHHH" if wide else "IIIIHHHHHH"), data, 24)
    shoff, shentsize, shnum = header[2], header[7], header[8]
    sections = [struct.unpack_from(order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII"), data, shoff + i * shentsize)
                for i in range(shnum)]

    def string(table: int, offset: int) -> str:
        start = sections[table][4] + offset
        return data[start : data.index(b"\0", start)].decode()

    symbols, needed = set(), []
    for name, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind == 11:  # SHT_DYNSYM
            for at in range(offset + entsize, offset + size, entsize):  # entry 0 is the null symbol
                if wide:
                    st_name, _, _, shndx = struct.unpack_from(order + "IBBH", data, at)
                else:
                    st_name, _, _, _, _, shndx = struct.unpack_from(order + "IIIBBH", data, at)
                if shndx == 0 and st_name:
                    symbols.add(string(link, st_name).split("@")[0])
        elif kind == 6:  # SHT_DYNAMIC
            for at in range(offset, offset + size, entsize):
                tag, value = struct.unpack_from(order + ("qQ" if wide else "iI"), data, at)
                if tag == 1:  # DT_NEEDED
                    needed.append(string(link, value))
    return symbols, needed


def environment(model, manifest: Manifest) -> dict:
    """Where the measurements were taken: the host, the versions, and the device when remote."""
    import onnxruntime

    from .. import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    env = {"machine": platform.machine(), "system": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
           "python": platform.python_version(), "edgec": __version__, "tvm": manifest.tvm_version,
           "onnxruntime": onnxruntime.__version__, "target": manifest.target.name,
           "emulated": bool(getattr(model, "emulated", False))}
    device_info = getattr(model, "device_info", None)
    if device_info is not None:
        env["device"] = str(getattr(model, "device", "remote device"))
        env["device_info"] = device_info
    return env
