"""Which ONNX ops a CPU target lowers, decided without importing TVM.

``edgec analyze`` answers before any TVM work, and importing TVM's ONNX frontend costs
seconds. So the ops TVM converts are read from the installed frontend's source (the keys
of its ``_get_convert_map``), and an op TVM lacks is still lowered when ONNX defines it as
a function of other ops, which edgec's lowering expands, or ``qoperator`` rewrites it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

import onnx.defs

from .qoperator import REWRITTEN

FRONTEND = ("relax", "frontend", "onnx", "onnx_frontend.py")


@functools.cache
def tvm_converted_ops() -> frozenset[str]:
    """The op names the installed TVM's ONNX frontend has a converter for."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    source = Path(next(iter(spec.submodule_search_locations))).joinpath(*FRONTEND)
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_get_convert_map":
            returned = next(n.value for n in ast.walk(node) if isinstance(n, ast.Return))
            return frozenset(key.value for key in returned.keys if isinstance(key, ast.Constant))
    return frozenset()


def has_function_body(op_type: str, domain: str, opset: int) -> bool:
    """ONNX defines the op as a function of other ops at this opset (edgec expands it)."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return schema.has_function or schema.has_context_dependent_function


def cpu_support(op_type: str, domain: str, opset: int) -> str | None:
    """None when a CPU target lowers the op; else why not, in one phrase."""
    if domain not in ("", "ai.onnx"):
        return f"domain '{domain}' has no lowering on this target"
    if op_type in tvm_converted_ops() or op_type in REWRITTEN or has_function_body(op_type, domain, opset):
        return None
    return f"no converter in TVM's ONNX frontend and no ONNX function body for {op_type}"
