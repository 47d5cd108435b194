"""The model report: per layer and in total, what runs where and what it costs.

Computed from the IR after the passes, when shapes are static, and stored in the
artifact's manifest so ``edgec report`` needs nothing but the artifact. MACs are
counted for the ops that dominate them (Conv, ConvTranspose, Gemm, MatMul); other
ops count 0. The arena is the memory plan's (plan-memory), or an estimate without one.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UsageError
from ..ir import Model, Node
from ..profiles.compliance import estimate_arena, planned_arena, runtime_intermediates
from ..tables import table
from ..units import human_size


def prod(values) -> int:
    return int(np.prod([int(v) for v in values], dtype=np.int64))


def macs(node: Node) -> int:
    """Multiply-accumulates of one node from its static shapes (0 when not countable)."""
    out = node.outputs[0] if node.outputs else None
    if out is None or not out.is_static:
        return 0
    op = node.op_type
    if op in ("Conv", "ConvInteger", "ConvTranspose") and node.inputs[1] is not None and node.inputs[1].is_static:
        weight = node.inputs[1].shape
        if op != "ConvTranspose":  # each output element sums C_in/group x kernel products
            return prod(out.shape) * prod(weight[1:])
        if node.inputs[0].is_static:  # each input element feeds C_out/group x kernel outputs
            return prod(node.inputs[0].shape) * prod(weight[1:])
        return 0
    if op == "Gemm" and node.inputs[0].is_static:
        a = node.inputs[0].shape
        k = a[0] if node.attr("transA", 0) else a[1]
        return prod(out.shape) * int(k)
    if op in ("MatMul", "MatMulInteger") and node.inputs[0].is_static:
        return prod(out.shape) * int(node.inputs[0].shape[-1])
    return 0


@dataclass
class Layer:
    name: str
    op: str
    output_shape: list[int]
    dtype: str
    macs: int
    parameters: int
    weight_bytes: int
    device: str


def layer_table(model: Model, device: str | list[str]) -> list[Layer]:
    """``device``: where every layer runs, or each layer's device in graph order (a partitioned model)."""
    devices = [device] * len(model.graph.nodes) if isinstance(device, str) else device
    layers = []
    for index, node in enumerate(model.graph.nodes):
        weights = [v for v in node.inputs if v is not None and v.is_constant]
        out = node.outputs[0] if node.outputs else None
        layers.append(
            Layer(
                name=node.name or (out.name if out else f"node{index}"),
                op=node.qualified_op,
                output_shape=list(out.shape) if out is not None and out.shape is not None else [],
                dtype=(out.dtype or "?") if out is not None else "?",
                macs=macs(node),
                parameters=sum(int(v.const.size) for v in weights),
                weight_bytes=sum(int(v.const.nbytes) for v in weights),
                device=devices[index],
            )
        )
    return layers


def build_report(model: Model, device: str | list[str], plan=None) -> dict:
    """``plan``, the model's memory plan, gives the arena; without one it is estimated."""
    layers = layer_table(model, device)
    arena = planned_arena(plan) if plan is not None else estimate_arena(model.graph)
    weight_bytes = sum(v.const.nbytes for v in model.graph.initializers.values())
    total_macs = sum(layer.macs for layer in layers)
    by_device: dict[str, int] = {}
    for layer in layers:
        by_device[layer.device] = by_device.get(layer.device, 0) + layer.macs
    return {
        "layers": [asdict(layer) for layer in layers],
        "totals": {
            "macs": total_macs,
            "parameters": sum(int(v.const.size) for v in model.graph.initializers.values()),
            "weight_bytes": int(weight_bytes),
            "arena_bytes": arena.peak,
            "arena_method": f"peak at {arena.at}; {arena.how}",
            "working_set_bytes": arena.peak + int(weight_bytes),
            "working_set_method": "arena + weights, without the runtime's own memory",
            "macs_share": {d: (m / total_macs if total_macs else 0.0) for d, m in by_device.items()},
        },
    }


def with_runtime_memory(report: dict, runtime_memory: dict | None) -> dict:
    """The report with what TVM's VM allocates per call, which the working set then counts instead of the plan."""
    if not runtime_memory:
        return report
    totals = report["totals"]
    memory = runtime_memory
    intermediates = runtime_intermediates(memory)
    if memory["runs_in_arena"]:
        where = (f"one arena at edgec's offsets for TVM's {memory['tensors']} intermediates "
                 f"({human_size(intermediates)}; TVM's own storages would take {human_size(memory['tvm_storage_bytes'])})")
    else:
        where = f"TVM's own storages ({human_size(intermediates)}; not in edgec's arena: {memory['why_not']})"
    allocated = intermediates + memory["output_bytes"] + memory["workspace_bytes"]
    totals["runtime_bytes"] = allocated
    totals["runtime_method"] = (f"{where} + outputs ({human_size(memory['output_bytes'])}) + the largest kernel "
                                f"scratch ({human_size(memory['workspace_bytes'])})")
    totals["working_set_bytes"] = allocated + totals["weight_bytes"]
    totals["working_set_method"] = "what the VM allocates + weights, without the runtime's own code and data"
    return report


def firmware_flash_bytes(memory: dict) -> int:
    """A firmware model's flash: its objects' code, weights and constants, and .data's initial image."""
    sections = memory["model_sections"]
    return sections.get("text", 0) + sections.get("rodata", 0) + sections.get("data", 0)


def firmware_ram_bytes(memory: dict) -> int:
    """A firmware model's RAM: its objects' .data and .bss (arena, workspace, descriptors) and the stack."""
    sections = memory["model_sections"]
    return sections.get("data", 0) + sections.get("bss", 0) + memory["stack_bytes"]


def with_firmware_memory(report: dict, memory: dict | None) -> dict:
    """The report with a microcontroller firmware's flash and RAM, measured on the linked ELF's sections."""
    if not memory:
        return report
    totals, sections = report["totals"], memory["model_sections"]
    totals["flash_bytes"] = firmware_flash_bytes(memory)
    totals["flash_method"] = (f"the model's objects in the linked ELF: .text {human_size(sections.get('text', 0))} "
                              f"(kernels, call sequence) + .rodata {human_size(sections.get('rodata', 0))} (weights, "
                              f"constants) + .data {human_size(sections.get('data', 0))} (initial image)")
    totals["ram_bytes"] = firmware_ram_bytes(memory)
    totals["ram_method"] = (f".data + .bss {human_size(sections.get('data', 0) + sections.get('bss', 0))} (arena "
                            f"{human_size(memory['arena_bytes'])}, kernel workspace {human_size(memory['workspace_bytes'])}, "
                            f"tensor descriptors) + stack {human_size(memory['stack_bytes'])}; no heap")
    totals["working_set_bytes"] = totals["ram_bytes"]
    totals["working_set_method"] = "RAM of the firmware (weights execute from flash)"
    return report


COLUMNS = ["name", "op", "output_shape", "dtype", "macs", "parameters", "weight_bytes", "device"]


def format_table(report: dict) -> str:
    rows = [[str(layer[c]) if c != "output_shape" else "x".join(map(str, layer[c])) for c in COLUMNS]
            for layer in report["layers"]]
    lines = table(COLUMNS, rows, right=("macs", "parameters", "weight_bytes"))
    t = report["totals"]
    share = ", ".join(f"{d} {100 * s:.1f}%" for d, s in t["macs_share"].items())
    lines += [
        "",
        f"MACs          {t['macs']:,} ({share})",
        f"parameters    {t['parameters']:,}",
        f"weights       {human_size(t['weight_bytes'])} (flash)",
        f"arena         {human_size(t['arena_bytes'])} (RAM, {t['arena_method']})",
        *([f"VM allocates  {human_size(t['runtime_bytes'])} ({t['runtime_method']})"]
          if "runtime_bytes" in t and "flash_bytes" not in t else []),
        *([f"flash         {human_size(t['flash_bytes'])} ({t['flash_method']})",
           f"RAM           {human_size(t['ram_bytes'])} ({t['ram_method']})"] if "flash_bytes" in t else []),
        f"working set   {human_size(t['working_set_bytes'])} ({t['working_set_method']})",
    ]
    return "\n".join(lines)


def format_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for layer in report["layers"]:
        writer.writerow(["x".join(map(str, layer[c])) if c == "output_shape" else layer[c] for c in COLUMNS])
    return out.getvalue()


def format_memory(manifest: dict) -> str:
    """The memory plan: arena, lower bound, weights, what the VM allocates, and every tensor's place."""
    plan = manifest["memory_plan"]
    totals = manifest["report"]["totals"]
    tensors = sorted(plan["tensors"], key=lambda t: (t["first_step"], t["offset"], t["name"]))
    lines = [
        f"arena         {human_size(plan['arena_bytes'])} ({plan['algorithm']}"
        f"{', proven smallest' if plan['optimal'] else ''}; alignment {plan['alignment']} B)",
        f"lower bound   {human_size(plan['lower_bound_bytes'])} (the most bytes live at one step, "
        f"first at step {plan['peak_step']})",
        f"no reuse      {human_size(plan['naive_bytes'])} (every tensor in its own buffer)",
        f"weights       {human_size(totals['weight_bytes'])}",
    ]
    if "runtime_bytes" in totals:
        lines.append(f"VM allocates  {human_size(totals['runtime_bytes'])} ({totals['runtime_method']})")
    if plan["unplanned"]:
        lines.append(f"unplanned     {', '.join(plan['unplanned'])} (unknown size)")
    header = ["tensor", "offset", "size", "steps", "dtype", "shape", "in place of"]
    rows = [[t["name"], str(t["offset"]), str(t["size"]), f"{t['first_step']}-{t['last_step']}", t["dtype"],
             "x".join(map(str, t["shape"])), t["shares"] or ""] for t in tensors]
    lines += ["", *table(header, rows, right=("offset", "size"))]
    return "\n".join(lines)


def byte_unit(size: int) -> tuple[str, int]:
    """The unit a plot of sizes up to ``size`` reads best in: B, KiB or MiB."""
    return ("MiB", 2**20) if size >= 2**20 else ("KiB", 2**10) if size >= 2**10 else ("B", 1)


def plot_memory(manifest: dict, path) -> None:
    """Draw ``memory_figure`` to the PNG ``path``."""
    from matplotlib import pyplot

    figure = memory_figure(manifest)
    figure.savefig(path, metadata={"Software": None})
    pyplot.close(figure)


def memory_figure(manifest: dict):
    """Tensor lifetimes against arena offsets: one rectangle per tensor, labelled unless too thin, steps across,
    bytes up in the unit the arena reads best in; the arena and its lower bound as two lines
    of different color and style, with their sizes in the legend below the plot."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'edgec[plot]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.patches import Rectangle

    plan = manifest["memory_plan"]
    unit, scale = byte_unit(plan["arena_bytes"])
    figure, axes = pyplot.subplots(figsize=(12, 6.5), dpi=100)
    colors = pyplot.get_cmap("tab20").colors
    steps = max((t["last_step"] + 1 for t in plan["tensors"]), default=1)
    for index, tensor in enumerate(plan["tensors"]):
        box = Rectangle((tensor["first_step"], tensor["offset"] / scale), tensor["last_step"] + 1 - tensor["first_step"],
                        tensor["size"] / scale, facecolor=colors[index % len(colors)], edgecolor="black", linewidth=0.3)
        axes.add_patch(box)
        if tensor["size"] < plan["arena_bytes"] / 40:
            continue  # a sliver: too thin for a label (the --memory table lists it)
        label = axes.text(tensor["first_step"] + 0.1, (tensor["offset"] + tensor["size"] / 2) / scale,
                          f"{tensor['name']} {human_size(tensor['size'])}", fontsize=7, va="center", clip_on=True)
        label.set_clip_path(box)  # a label shows only inside its own tensor
    axes.axhline(plan["arena_bytes"] / scale, color="black", linestyle="-", linewidth=1.5,
                 label=f"arena {human_size(plan['arena_bytes'])} ({plan['algorithm']})")
    axes.axhline(plan["lower_bound_bytes"] / scale, color="red", linestyle="--", linewidth=1.5,
                 label=f"lower bound {human_size(plan['lower_bound_bytes'])} (most bytes live at one step, "
                       f"step {plan['peak_step']})")
    axes.set_xlim(0, steps)
    axes.set_ylim(0, max(plan["arena_bytes"], 1) / scale * 1.08)
    axes.set_xlabel("step (node in execution order)")
    axes.set_ylabel(f"arena offset ({unit})")
    axes.set_title(f"{manifest['source']['file']}: {len(plan['tensors'])} tensors in {human_size(plan['arena_bytes'])}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    figure.tight_layout()
    return figure


DEVICE_COLORS = {"cpu": "#8fbcdb", "cuda": "#76b900", "cpu-test-double": "#f2b56b"}
"""Partition colors by device (any other device gets grey)."""


def plot_partitions(manifest: dict, path) -> None:
    """The partition graph: one box per partition colored by its device, host inputs on the left and
    outputs on the right, each edge labelled with the bytes that cross it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'edgec[plot]'") from None
    import networkx as nx

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    plan = manifest["partition_plan"]
    graph = nx.DiGraph()
    graph.add_node("inputs", layer=0, label="host inputs", device=None)
    for partition in plan["partitions"]:
        graph.add_node(partition["id"], device=partition["device"],
                       label=f"#{partition['id']}\n{partition['device']}\n{len(partition['nodes'])} "
                             f"node{'s' if len(partition['nodes']) != 1 else ''}")
    graph.add_node("outputs", label="host outputs", device=None)
    for crossing in plan["crossings"]:
        source = "inputs" if crossing["from"] is None else crossing["from"]
        dest = "outputs" if crossing["to"] is None else crossing["to"]
        moved = graph.edges[source, dest]["bytes"] if graph.has_edge(source, dest) else 0
        graph.add_edge(source, dest, bytes=moved + crossing["bytes"])
    for layer, generation in enumerate(nx.topological_generations(graph)):
        for node in generation:
            graph.nodes[node]["layer"] = layer
    positions = nx.multipartite_layout(graph, subset_key="layer")
    colors = [DEVICE_COLORS.get(graph.nodes[n]["device"], "#dddddd") if graph.nodes[n]["device"] else "white"
              for n in graph.nodes]
    figure, axes = pyplot.subplots(figsize=(max(6, 2.2 * len(graph)), 5), dpi=100)
    nx.draw_networkx_nodes(graph, positions, node_color=colors, node_size=2600, edgecolors="black", ax=axes)
    nx.draw_networkx_labels(graph, positions, labels=nx.get_node_attributes(graph, "label"), font_size=8, ax=axes)
    nx.draw_networkx_edges(graph, positions, node_size=2600, arrowsize=14, ax=axes)
    nx.draw_networkx_edge_labels(graph, positions, font_size=7, ax=axes,
                                 edge_labels={e: human_size(d["bytes"]) for e, d in graph.edges.items()})
    devices = list(dict.fromkeys(p["device"] for p in plan["partitions"]))
    axes.legend(handles=[Patch(facecolor=DEVICE_COLORS.get(d, "#dddddd"), edgecolor="black", label=d) for d in devices],
                loc="upper right")
    axes.set_title(f"{manifest['source']['file']} on {plan['target']}: {len(plan['partitions'])} partitions")
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    pyplot.close(figure)
