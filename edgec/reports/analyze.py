"""``edgec analyze``: what compiling a model for a target would give, before any TVM work.

Like ``stedgeai analyze`` and Vela's summary: per layer the op, output shape, MACs,
parameters and whether the target lowers it (with the reason when not); the activation
arena edgec plans and its lower bound; and, under a profile, every static check the
compile would make. It runs the compile's own import and passes, so what it says is what
the compile sees, and takes seconds where a compile takes minutes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..compiler.pipelines import DEFAULT_PIPELINE
from ..units import human_size


@dataclass
class Analysis:
    """What ``edgec analyze`` prints; ``to_dict()`` is its ``--json``."""

    model: str
    target: str
    profile: str | None
    dim_bindings: list[dict]
    pipeline: str
    layers: list[dict]
    """Per node, as the compile's report (op, output shape, MACs, parameters...) plus ``support``."""
    totals: dict
    unsupported: list[dict]
    memory: dict
    """The planned arena, its lower bound and the algorithm."""
    compliance: dict | None
    """The profile's static checks, None without a profile."""
    seconds: float

    @property
    def ok(self) -> bool:
        """No profile, or its static checks pass."""
        return self.compliance is None or self.compliance["ok"]

    def to_dict(self) -> dict:
        return asdict(self)


def analyze(model: str | Path, target: str, *, profile: str | None = None, overrides: Sequence[str] = (),
            input_shapes: Mapping[str, Sequence[int]] | None = None, dims: Mapping[str, int] | None = None,
            passes: str = DEFAULT_PIPELINE) -> Analysis:
    """The analysis of ``model`` for ``target``."""
    from edgec.passes.partition import layer_devices, plan_of
    from edgec.passes.plan_memory import plan_memory, target_alignment
    from edgec.targets import get_target
    from edgec.targets.partitioned import with_partitioning

    from ..compiler.driver import batch_binding
    from ..compiler.pass_manager import PassManager, Pipeline
    from ..errors import UsageError
    from ..frontend.importer import ensure_static, load_model
    from ..frontend.validate import check_declared_sizes
    from ..profiles.compliance import check_static
    from ..profiles.profile import from_metadata_props, load_profile
    from .report import build_report

    started = time.perf_counter()
    spec = get_target(target)
    if overrides and not profile:
        raise UsageError("--set needs --profile (the profile it overrides)")
    resolved = load_profile(profile, tuple(overrides)) if profile else None
    loaded = load_model(Path(model), {k: tuple(v) for k, v in (input_shapes or {}).items()}, dict(dims or {}),
                        lambda metadata: batch_binding(resolved, metadata))
    ensure_static(loaded, str(model))
    resolved = resolved or from_metadata_props(loaded.metadata)
    check_declared_sizes(loaded, spec.memory_bytes, spec.name, str(model), resolved is not None)
    opset = loaded.opset
    pipeline = with_partitioning(Pipeline.parse(passes), target, spec, None)
    graph_model = PassManager(pipeline).run(loaded)
    memory = plan_memory(graph_model, target_alignment(spec))
    partition_plan = plan_of(graph_model)
    report = build_report(graph_model, layer_devices(graph_model, partition_plan) or spec.device, memory)
    on_cpu = {p.node: p.reason for p in partition_plan.placements.values()} if partition_plan else {}
    for layer, node in zip(report["layers"], graph_model.graph.nodes):
        layer["support"] = support_of(node, spec, opset, on_cpu)
    compliance = check_static(resolved, graph_model, spec, plan=memory).to_dict() if resolved else None
    return Analysis(
        model=str(model),
        target=spec.name,
        profile=resolved.name if resolved else None,
        dim_bindings=[binding.to_dict() for binding in loaded.dim_bindings],
        pipeline=str(pipeline),
        layers=report["layers"],
        totals=report["totals"],
        unsupported=[{"node": layer["name"], "op": layer["op"], "reason": layer["support"]["reason"]}
                     for layer in report["layers"] if not layer["support"]["lowered"]],
        memory={"arena_bytes": memory.arena_bytes, "lower_bound_bytes": memory.lower_bound,
                "algorithm": memory.algorithm},
        compliance=compliance,
        seconds=round(time.perf_counter() - started, 3),
    )


def support_of(node, spec, opset: int, on_cpu: Mapping[str, str]) -> dict:
    """Whether the target lowers ``node``, and where it runs; a partitioned target's CPU
    nodes carry the partitioner's reason for not running on the accelerator."""
    from edgec.targets.support import cpu_lowering

    verdict = cpu_lowering(opset)(node)
    return {"lowered": verdict.ok, "reason": verdict.reason or on_cpu.get(node.name, "")}


def format_analysis(analysis: Analysis) -> str:
    """The table and summary ``edgec analyze`` prints."""
    from ..tables import table

    rows = [(layer["name"], layer["op"], "x".join(map(str, layer["output_shape"])) or "-", f"{layer['macs']:,}",
             f"{layer['parameters']:,}", layer["device"],
             "yes" if layer["support"]["lowered"] else f"NO: {layer['support']['reason']}")
            for layer in analysis.layers]
    totals, memory = analysis.totals, analysis.memory
    lines = [f"{analysis.model} for {analysis.target}"
             + (f" under profile {analysis.profile}" if analysis.profile else "")]
    lines += table(("layer", "op", "output", "MACs", "params", "device", "lowered"), rows, right=("MACs", "params"))
    lines += [
        "",
        f"MACs        {totals['macs']:,}",
        f"parameters  {totals['parameters']:,} ({human_size(totals['weight_bytes'])} of weights)",
        f"arena       {human_size(memory['arena_bytes'])} planned ({memory['algorithm']}); "
        f"lower bound {human_size(memory['lower_bound_bytes'])}",
        f"unsupported {len(analysis.unsupported)} node(s)"
        + "".join(f"\n  {u['node']} ({u['op']}): {u['reason']}" for u in analysis.unsupported),
    ]
    if analysis.compliance is not None:
        checks = analysis.compliance["checks"]
        lines += ["", f"profile {analysis.profile}: {'meets' if analysis.compliance['ok'] else 'VIOLATES'} "
                  f"its static checks"]
        lines += [f"  {'PASS' if c['ok'] else 'FAIL':<5} {c['attribute']}: required {c['required']}; "
                  f"found {c['found']}" for c in checks]
    return "\n".join(lines)
