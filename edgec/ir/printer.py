"""Deterministic text form of the IR.

The same model always prints the same text: attributes are sorted, values keep
their ONNX names (new ones are numbered ``v0``, ``v1``... by the graph), and
large constants are elided with a content hash instead of an address. The
parser in ``edgec.ir.parser`` reads this text back, except for elided data and
opaque subgraphs. Example::

    model ir_version=8 opset_import={"": 17} {
      input %x: float32[1,4]
      init %w: float32[4,2] = [0.5, ...]
      %y = MatMul(%x, %w) : float32[1,2]
      output %y
    }
"""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import onnx

from .core import Attr, Dim, Model, Node, Value, dtype_of_array

BARE_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
ELIDE_ABOVE = 32
"""Constants with more elements than this print as a hash unless asked otherwise."""


def quote_name(name: str) -> str:
    return name if BARE_NAME.match(name) else json.dumps(name)


def format_type(dtype: str | None, shape: tuple[Dim, ...] | None) -> str:
    if dtype is None:
        return "?"
    if shape is None:
        return f"{dtype}[...]"
    dims = ",".join("?" if d is None else str(d) if isinstance(d, int) else quote_name(d) for d in shape)
    return f"{dtype}[{dims}]"


def format_scalar(item, single: bool = True) -> str:
    if isinstance(item, (bool, np.bool_)):
        return "1" if item else "0"
    if isinstance(item, (int, np.integer)):
        return str(int(item))
    if isinstance(item, (bytes, str)):
        text = item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else item
        return json.dumps(text)
    number = float(item)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if single and float(np.float32(number)) == number:
        return str(np.float32(number))  # shortest text that reads back to the same float32
    return repr(number)


def format_data(array: np.ndarray, elide: bool) -> str:
    if elide and array.size > ELIDE_ABOVE:
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
        return f"<elided sha256={digest}>"
    flat = array.reshape(-1)
    if flat.dtype.kind not in "biufcSUO":  # ml_dtypes (bfloat16, float8...) print via float32
        flat = flat.astype(np.float32)
    single = flat.dtype.itemsize <= 4
    return "[" + ", ".join(format_scalar(x, single) for x in flat.tolist()) + "]"


def format_attr(attr: Attr, elide: bool) -> str:
    kind, value = attr.type, attr.value
    A = onnx.AttributeProto
    if kind in (A.INT, A.FLOAT, A.STRING):
        return format_scalar(float(value) if kind == A.FLOAT else value)
    if kind in (A.INTS, A.FLOATS, A.STRINGS):
        if not value:
            return {A.INTS: "ints[]", A.FLOATS: "floats[]", A.STRINGS: "strings[]"}[kind]
        items = [float(v) if kind == A.FLOATS else v for v in value]
        return "[" + ", ".join(format_scalar(v) for v in items) + "]"
    if kind == A.TENSOR:
        return f"tensor<{format_type(dtype_of_array(value), value.shape)}> {format_data(value, elide)}"
    if kind == A.GRAPH:
        return f"graph<{quote_name(value.name)}, {len(value.node)} nodes>"
    return f"opaque<{A.AttributeType.Name(kind)}>"


def format_value_ref(value: Value | None) -> str:
    return "_" if value is None else "%" + quote_name(value.name)


def format_node(node: Node, elide: bool = True) -> str:
    outputs = ", ".join(format_value_ref(v) for v in node.outputs)
    args = ", ".join(format_value_ref(v) for v in node.inputs)
    text = f"{outputs} = {node.qualified_op}({args})" if node.outputs else f"{node.qualified_op}({args})"
    if node.attrs:
        attrs = ", ".join(f"{key}={format_attr(node.attrs[key], elide)}" for key in sorted(node.attrs))
        text += " {" + attrs + "}"
    if node.outputs:
        text += " : " + ", ".join(format_type(v.dtype, v.shape) for v in node.outputs)
    if node.name:
        text += " @" + quote_name(node.name)
    return text


def print_model(model: Model, elide: bool = True) -> str:
    """The model as text. ``elide=False`` prints every constant in full."""
    graph = model.graph
    opsets = ", ".join(f"{json.dumps(domain)}: {version}" for domain, version in sorted(model.opset_imports.items()))
    header = f"model ir_version={model.ir_version} opset_import={{{opsets}}}"
    if model.producer_name:
        header += f" producer={json.dumps(model.producer_name)}"
    if model.producer_version:
        header += f" producer_version={json.dumps(model.producer_version)}"
    if graph.name != "main":
        header += f" graph={json.dumps(graph.name)}"
    if model.initializers_as_inputs:
        header += " initializers_as_inputs=1"
    lines = [header + " {"]
    for key in sorted(model.metadata):
        lines.append(f"  meta {json.dumps(key)} = {json.dumps(model.metadata[key])}")
    for function in model.functions:
        lines.append(f"  # function {function.domain}::{function.name} ({len(function.node)} nodes, opaque)")
    for value in graph.inputs:
        lines.append(f"  input {format_value_ref(value)}: {format_type(value.dtype, value.shape)}")
    for value in graph.initializers.values():
        lines.append(
            f"  init {format_value_ref(value)}: {format_type(value.dtype, value.shape)} = {format_data(value.const, elide)}"
        )
    for node in graph.nodes:
        lines.append("  " + format_node(node, elide))
    for value in graph.outputs:
        lines.append(f"  output {format_value_ref(value)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
