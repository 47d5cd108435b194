"""Operator support: whether a device runs a node, and why not, decided without importing TVM.

The one interface the partitioner and ``edgec analyze`` ask, after torch.fx's
``OperatorSupport``, except that a predicate returns a :class:`Verdict` carrying the reason,
never a bare bool, so edgec can say why a node stayed on the CPU. Predicates are small and
compose (:func:`chain`, :func:`any_chain`); a device's capability is a chain of them driven by
its tables (op -> the dtypes it computes), which live beside the device's target family
(``targets/cuda.py``) and register here with :func:`register_support`.

The CPU lowers what TVM's ONNX frontend converts: its ops are read from the installed
frontend's source (the keys of its ``_get_convert_map``), since importing TVM's frontend
costs seconds; an op TVM lacks is still lowered when ONNX defines it as a function of other
ops, which edgec's lowering expands, or ``qoperator`` rewrites it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import onnx.defs

from edgec.ir import Node
from edgec.ir.printer import format_type

from .qoperator import REWRITTEN

if TYPE_CHECKING:
    from .base import TargetSpec


@dataclass(frozen=True)
class Verdict:
    """Whether a device can run a node, and why not: a reason, never a bare bool."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


YES = Verdict(True)
Predicate = Callable[[Node], Verdict]
"""A support predicate: a node in, a verdict with its reason out."""


def chain(*predicates: Predicate) -> Predicate:
    """All must accept; the first refusal is the answer."""

    def check(node: Node) -> Verdict:
        for predicate in predicates:
            verdict = predicate(node)
            if not verdict:
                return verdict
        return YES

    return check


def any_chain(*predicates: Predicate) -> Predicate:
    """One must accept; when none does, every reason is kept."""

    def check(node: Node) -> Verdict:
        refusals = []
        for predicate in predicates:
            verdict = predicate(node)
            if verdict:
                return verdict
            refusals.append(verdict.reason)
        return Verdict(False, " and ".join(refusals))

    return check


def default_domain(node: Node) -> Verdict:
    if node.domain in ("", "ai.onnx"):
        return YES
    return Verdict(False, f"ops of domain '{node.domain}' have no accelerator lowering in edgec")


CONTROL_FLOW = ("If", "Loop", "Scan")


def not_control_flow(node: Node) -> Verdict:
    """Subgraphs run in TVM's VM on the host; only their bodies' kernels could move."""
    if node.op_type in CONTROL_FLOW or node.implicit_inputs:
        return Verdict(False, f"control flow ({node.op_type}) runs on the host")
    return YES


def static_outputs(node: Node) -> Verdict:
    """A kernel is launched with sizes known before it runs."""
    for value in node.outputs:
        if not value.is_static:
            return Verdict(False, f"output '{value.name}' has a data-dependent shape "
                                  f"({format_type(value.dtype, value.shape)})")
    return YES


def not_denied(deny: dict[str, str]) -> Predicate:
    def check(node: Node) -> Verdict:
        why = deny.get(node.op_type)
        return Verdict(False, f"{node.op_type}: {why}") if why else YES

    return check


def op_dtypes(table: dict[str, tuple[str, ...]], device: str) -> Predicate:
    """The op is in the device's table, and its result (the first output; later ones are
    indices or masks) has a dtype listed for it."""

    def check(node: Node) -> Verdict:
        accepted = table.get(node.op_type)
        if accepted is None:
            return Verdict(False, f"{node.op_type} is not in the {device} capability table")
        dtype = node.outputs[0].dtype
        if dtype not in accepted:
            return Verdict(False, f"{node.op_type} on {device} computes {'/'.join(accepted)}, not {dtype}")
        return YES

    return check


def tensor_dtypes(accepted: tuple[str, ...], whose: str) -> Predicate:
    """Every activation the node reads or writes has a dtype in ``accepted``."""

    def check(node: Node) -> Verdict:
        for value in [*node.inputs, *node.outputs]:
            if value is not None and not value.is_constant and value.dtype not in accepted:
                return Verdict(False, f"'{value.name}' is {value.dtype}, which {whose} does not list")
        return YES

    return check


def input_rank(low: int, high: int) -> Predicate:
    def check(node: Node) -> Verdict:
        shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
        if shape is not None and low <= len(shape) <= high:
            return YES
        return Verdict(False, f"{node.op_type} input rank {len(shape) if shape else '?'} is outside {low}..{high}")

    return check


def attr_in(name: str, allowed: tuple, default) -> Predicate:
    def check(node: Node) -> Verdict:
        value = node.attr(name, default)
        if isinstance(value, bytes):
            value = value.decode()
        if value in allowed:
            return YES
        takes = ", ".join(map(repr, allowed))
        return Verdict(False, f"{node.op_type} {name}={value!r} (the accelerator takes {takes})")

    return check


def has_attr(name: str) -> Predicate:
    def check(node: Node) -> Verdict:
        return YES if name in node.attrs else Verdict(False, f"no '{name}' attribute")

    return check


def input_constant(index: int, what: str) -> Predicate:
    def check(node: Node) -> Verdict:
        value = node.inputs[index] if index < len(node.inputs) else None
        return YES if value is not None and value.is_constant else Verdict(False, f"{what} is not a constant")

    return check


def input_absent(index: int, what: str) -> Predicate:
    def check(node: Node) -> Verdict:
        absent = index >= len(node.inputs) or node.inputs[index] is None
        return YES if absent else Verdict(False, f"{what} is given")

    return check


def single_output(what: str) -> Predicate:
    def check(node: Node) -> Verdict:
        return YES if len(node.outputs) == 1 else Verdict(False, f"{node.op_type} with {what}")

    return check


def static_axes(index: int) -> Predicate:
    """Axes are an attribute (older opsets) or an input (newer): either way known at compile time."""
    return any_chain(has_attr("axes"), input_constant(index, "axes"), input_absent(index, "axes"))

def conditions(table: dict[str, Predicate]) -> Predicate:
    def check(node: Node) -> Verdict:
        condition = table.get(node.op_type)
        return condition(node) if condition else YES

    return check


FLOAT = ("float32", "float16")
NUMERIC = FLOAT + ("int8", "int32", "int64")
ANY = NUMERIC + ("bool",)


def ops(names: str, dtypes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(names.split(), dtypes)


# -- devices -----------------------------------------------------------------------------------

DEVICE_SUPPORT: dict[str, Callable[[TargetSpec], Predicate]] = {}
"""Second device -> its capability for a target. The CPU takes every node the target lowers."""


def register_support(device: str) -> Callable:
    def add(capability: Callable[[TargetSpec], Predicate]):
        DEVICE_SUPPORT[device] = capability
        return capability

    return add


def supported_devices() -> list[str]:
    """Every device with a capability, accelerators first: the families register theirs when
    imported, the test double is registered here."""
    from .base import all_targets

    all_targets()
    return sorted(DEVICE_SUPPORT, key=lambda device: device == TEST_DOUBLE)


def device_support(target: TargetSpec, device: str) -> Predicate:
    """What ``device`` runs of the nodes ``target`` compiles."""
    if device not in supported_devices():
        raise KeyError(device)
    return DEVICE_SUPPORT[device](target)


TEST_DOUBLE = "cpu-test-double"
TEST_DOUBLE_OPS: dict[str, tuple[str, ...]] = ops("Relu LeakyRelu Sigmoid Tanh Clip Add Sub Mul Div Max Min", FLOAT)
"""The test double's table: float elementwise ops only, so that a CNN alternates between
its partitions and the CPU's, and every crossing is exercised."""


@register_support(TEST_DOUBLE)
def double_capability(target: TargetSpec) -> Predicate:
    return chain(default_domain, not_control_flow, static_outputs, op_dtypes(TEST_DOUBLE_OPS, TEST_DOUBLE))


# -- the CPU ------------------------------------------------------------------------------------

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


def cpu_lowering(opset: int) -> Predicate:
    """Whether a CPU target lowers the node: TVM converts its op, or ONNX defines it as a
    function of other ops at ``opset``."""

    def check(node: Node) -> Verdict:
        if node.domain not in ("", "ai.onnx"):
            return Verdict(False, f"domain '{node.domain}' has no lowering on this target")
        if (node.op_type in tvm_converted_ops() or node.op_type in REWRITTEN
                or has_function_body(node.op_type, node.domain, opset)):
            return YES
        return Verdict(False, f"no converter in TVM's ONNX frontend and no ONNX function body for {node.op_type}")

    return check
