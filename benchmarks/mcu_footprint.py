"""Flash and RAM of the digits CNN as Cortex-M firmware, next to TensorFlow Lite Micro.

    python benchmarks/mcu_footprint.py                     # markdown on stdout
    python benchmarks/mcu_footprint.py --output mcu.json   # also mcu.md

The digits CNN (tests/digits_cnn.py: two 3x3 convs, 8 and 16 channels, on 8x8 images,
then a 64x10 Gemm) is compiled in fp32 and in int8 (``--calib`` on 300 training
images, 8-bit weights) for every ``cortex-m*`` target, and run once under
qemu-system-arm to check it still matches onnxruntime. Measured, from the linked
ELF's sections of the model's own objects (model.c, kernels.c, weights.c):

- code: .text (the kernels TVM's C code generator wrote, edgec's call sequence);
- weights: .rodata (weights and constants, in flash);
- RAM: .data + .bss (the arena at edgec's offsets, the kernels' workspace, the
  static tensor descriptors) + the 16 KiB stack the linker script reserves.

Then the choice of code generator: the fp32 kernels of the same lowering, once through
TVM's C code generator and arm-none-eabi-gcc (-O2, what the targets use) and once through
TVM's LLVM back end for ``thumbv7em-none-eabihf`` / ``cortex-m7``; the ``.text`` of each
object file (``--llvm`` table).

What TFLite Micro would need is not measured here: its sources are not reachable
from this machine, so nothing of it was built or run. The comparison takes two
things from it instead, named as such in the table:

- its interpreter's code, from the TFLM paper (David et al., "TensorFlow Lite
  Micro: Embedded Machine Learning on TinyML Systems", MLSys 2021): the runtime
  "fits in 16 KB on an Arm Cortex-M3", before any kernel;
- its arena's activation part, computed with TFLM's planner rule (greedy by size,
  no in-place reuse: ``plan_memory(..., algorithm="greedy-by-size", inplace=False)``,
  as benchmarks/memory_plan.py does) on the same graph. TFLM's arena also holds
  per-tensor and per-op runtime structures, not counted, so the figure is a lower
  bound of its arena.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgec.cli import main as edgec  # noqa: E402
from edgec.compiler.pass_manager import PassManager  # noqa: E402
from edgec.compiler.pipelines import get_pipeline  # noqa: E402
from edgec.deploy.artifact import open_artifact  # noqa: E402
from edgec.deploy.emulator import export_project  # noqa: E402
from edgec.frontend.importer import import_proto  # noqa: E402
from edgec.passes.plan_memory import plan_memory  # noqa: E402
from edgec.runtime import load  # noqa: E402
from edgec.targets import get_target  # noqa: E402
from edgec.targets.cortex_m import elf_sections, llvm_kernels  # noqa: E402
from tests.digits_cnn import INPUT, digits_split, trained_digits  # noqa: E402
from tests.models import ort_run  # noqa: E402

TARGETS = ["cortex-m7", "cortex-m4", "cortex-m55"]
TFLM_INTERPRETER_BYTES = 16 * 1024
"""TFLM paper (MLSys 2021): the core runtime fits in 16 KB on a Cortex-M3."""


def measure(workdir: Path) -> list[dict]:
    model_path, data_path = trained_digits(workdir / "digits")
    calib = workdir / "calib.npz"
    np.savez(calib, **{INPUT: digits_split()[0][:300]})
    image = np.load(data_path)[INPUT][:1]
    reference = ort_run(onnx.load(model_path), {INPUT: image})["logits"]
    tflm_activations = plan_memory(import_proto(onnx.load(model_path)), algorithm="greedy-by-size",
                                   inplace=False).arena_bytes
    rows = []
    for target in TARGETS:
        for kind, flags in (("fp32", []), ("int8", ["--calib", str(calib), "--full-range"])):
            artifact = workdir / f"{target}-{kind}.edgec"
            assert edgec(["compile", str(model_path), "-t", target, "-o", str(artifact), "-q", *flags]) == 0
            manifest = open_artifact(artifact).manifest
            memory = manifest["target"]["mcu_memory"]
            sections = memory["model_sections"]
            got = load(artifact).run({INPUT: image})["logits"]
            rows.append({
                "target": target, "dtype": kind, "code": sections.get("text", 0), "weights": sections.get("rodata", 0),
                "data": sections.get("data", 0), "bss": sections.get("bss", 0), "stack": memory["stack_bytes"],
                "arena": memory["arena_bytes"], "workspace": memory["workspace_bytes"],
                "flash": manifest["report"]["totals"]["flash_bytes"], "ram": manifest["report"]["totals"]["ram_bytes"],
                "graph_weights": manifest["report"]["totals"]["weight_bytes"],
                "max_rel_diff_vs_ort": float(np.abs(got - reference).max() / np.abs(reference).max()),
                "tflm_interpreter": TFLM_INTERPRETER_BYTES, "tflm_activations": tflm_activations,
            })
    return rows


def kernel_code(workdir: Path) -> dict:
    """``.text`` bytes of the digits CNN's fp32 kernels for cortex-m7: TVM's C code generator then
    arm-none-eabi-gcc -O2 (the artifact's own kernels.o), and TVM's LLVM back end for thumbv7em."""
    import subprocess

    model_path, _ = trained_digits(workdir / "digits")
    artifact = workdir / "cortex-m7-fp32.edgec"
    project = workdir / "project-fp32"
    export_project(open_artifact(artifact), project)
    subprocess.run(["make", "-s", "-C", str(project), "kernels.o"], check=True)
    gcc = elf_sections((project / "kernels.o").read_bytes())
    target = get_target("cortex-m7")
    model = PassManager(get_pipeline("default")).run(import_proto(onnx.load(model_path)))
    llvm = elf_sections(llvm_kernels(model, target))
    text = lambda sections: sum(size for name, size in sections.items() if name.startswith(".text"))  # noqa: E731
    return {"c_gcc_text": text(gcc), "llvm_text": text(llvm)}


def kib(size: int) -> str:
    return f"{size / 1024:.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| target | dtype | code KiB | weights KiB | flash KiB | arena KiB | workspace KiB | RAM KiB (with 16 KiB stack) "
             "| TFLM interpreter code KiB (published) | TFLM activations KiB (its planner, computed) | rel diff vs ort |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['dtype']} | {kib(r['code'])} | {kib(r['weights'])} | {kib(r['flash'])} "
                     f"| {kib(r['arena'])} | {kib(r['workspace'])} | {kib(r['ram'])} | {kib(r['tflm_interpreter'])} "
                     f"| {kib(r['tflm_activations'])} | {r['max_rel_diff_vs_ort']:.1e} |")
    return "\n".join(lines)


@click.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as JSON (and .md).")
def main(output: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="edgec-mcu-bench-") as workdir:
        rows = measure(Path(workdir))
        code = kernel_code(Path(workdir))
    text = (table(rows) + "\n\nKernels' code, digits CNN fp32, cortex-m7: TVM's C code generator + arm-none-eabi-gcc -O2 "
            f"{code['c_gcc_text']} B of .text; TVM's LLVM back end for thumbv7em {code['llvm_text']} B.")
    rows.append({"kernel_code": code})
    click.echo(text)
    if output:
        output.write_text(json.dumps(rows, indent=2) + "\n")
        output.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
