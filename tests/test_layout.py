"""The package layout of ARCHITECTURE.md: one package per stage, and each stage imports only
the stages its table lists (function-level imports included), read from the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"edgec": ROOT / "edgec", "edgec.passes": ROOT / "passes", "edgec.targets": ROOT / "targets"}
TOP_LEVEL = {"__init__", "api", "cli", "entry", "errors", "units", "tables", "host", "validation"}
SHARED = {"edgec", "errors", "units", "tables", "host", "validation"}
"""Anyone may import these (``edgec`` itself: ``__version__``)."""

PASS_INFRASTRUCTURE = {"compiler.pass_manager", "compiler.pipelines", "compiler.arena"}
ALLOWED = {
    "ir": {"frontend.exporter"},
    "frontend": {"ir"},
    "profiles": {"ir", "frontend", "deploy", "reports"},
    "quant": {"ir", "frontend", "profiles", "passes"},
    "passes": {"ir", "frontend", "profiles", "quant", "reports.report", "targets.base", "targets.support",
               *PASS_INFRASTRUCTURE},
    "targets": {"ir", "frontend", "passes", "deploy", "runtime", *PASS_INFRASTRUCTURE},
    "compiler": {"ir", "frontend", "profiles", "quant", "passes", "targets", "deploy", "runtime", "reports"},
    "reports": {"ir", "frontend", "profiles", "passes", "compiler", "targets"},
    "deploy": {"runtime"},
    "runtime": {"deploy.artifact", "deploy.manifest", "deploy.emulator"},
    "conformance": {"compiler", "runtime"},
}
"""Stage -> what it may import: a stage, or one module of it (``"targets.base"``)."""


def modules():
    """(module name, package it sits in, parsed source) for every module of edgec."""
    for root, directory in SOURCES.items():
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([root, *parts[:-1]] if is_package else [root, *parts])
            package = name if is_package else name.rsplit(".", 1)[0]
            yield name, package, ast.parse(path.read_text(), str(path))


def imported(package: str, tree: ast.Module):
    """The edgec modules a module imports, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            names = [f"{base}.{node.module}"] if node.module else [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        yield from (name for name in names if name == "edgec" or name.startswith("edgec."))


def stage_path(module: str) -> str:
    """``edgec.passes.partition`` -> ``passes.partition``; ``edgec`` -> ``edgec``."""
    return module.split(".", 1)[1] if "." in module else module


def allowed(importer: str, target: str) -> bool:
    source, wanted = stage_path(importer).split(".")[0], stage_path(target)
    if wanted.split(".")[0] in SHARED | {source, "__version__"}:
        return True
    if source not in ALLOWED:  # api, cli, entry: the front ends may import anything
        return source in {"api", "cli", "entry"}
    return any(wanted == entry or wanted.startswith(entry + ".") for entry in ALLOWED[source])


def test_only_the_front_ends_and_shared_helpers_sit_at_the_top():
    assert {path.stem for path in (ROOT / "edgec").glob("*.py")} == TOP_LEVEL


def test_every_stage_imports_only_what_its_table_allows():
    found = {name: sorted(set(imported(package, tree))) for name, package, tree in modules()}
    assert "edgec.compiler.driver" in found["edgec.reports.analyze"]  # the parse sees function-level imports
    broken = [f"{name} imports {target}" for name, targets in found.items() for target in targets
              if not allowed(name, target)]
    assert broken == []


def test_the_table_refuses_an_import_against_the_flow():
    assert not allowed("edgec.frontend.importer", "edgec.passes.quantize")
    assert not allowed("edgec.runtime", "edgec.compiler.driver")
    assert not allowed("edgec.passes.partition", "edgec.targets.lowering")
    assert allowed("edgec.passes.partition", "edgec.targets.base")
    assert allowed("edgec.cli", "edgec.targets.tuning")
