"""Reads the text printed by ``edgec.ir.printer`` back into a Model.

Tests use it to write their input and expected graphs as text. Elided constants
and opaque attributes cannot be read back; the parser says so with the line.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx

from ..errors import EdgecError
from .core import DTYPES, Attr, Dim, Graph, Model, Value, numpy_dtype

TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>(?:-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+)|-?inf|nan)(?![A-Za-z0-9_]))
  | (?P<word>[A-Za-z0-9_.]+)
  | (?P<punct>::|[{}()\[\]<>=,:%@_?*])
    """,
    re.VERBOSE,
)


class ParseError(EdgecError):
    exit_code = 1


class Tokens:
    def __init__(self, text: str):
        self.items: list[tuple[str, str, int]] = []
        line, pos = 1, 0
        while pos < len(text):
            match = TOKEN.match(text, pos)
            if match is None:
                raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
            kind = match.lastgroup
            if kind == "newline":
                line += 1
            elif kind != "space":
                self.items.append((kind, match.group(), line))
            pos = match.end()
        self.index = 0

    def peek(self) -> str | None:
        return self.items[self.index][1] if self.index < len(self.items) else None

    def peek_kind(self) -> str | None:
        return self.items[self.index][0] if self.index < len(self.items) else None

    @property
    def line(self) -> int:
        return self.items[min(self.index, len(self.items) - 1)][2] if self.items else 1

    def next(self) -> str:
        if self.index >= len(self.items):
            raise ParseError("unexpected end of text")
        token = self.items[self.index][1]
        self.index += 1
        return token

    def expect(self, wanted: str) -> None:
        line, got = self.line, self.next()
        if got != wanted:
            raise ParseError(f"line {line}: expected {wanted!r}, got {got!r}")

    def accept(self, wanted: str) -> bool:
        if self.peek() == wanted:
            self.index += 1
            return True
        return False

    def error(self, message: str) -> ParseError:
        return ParseError(f"line {self.line}: {message}")


def parse_name(tokens: Tokens) -> str:
    if tokens.peek_kind() == "string":
        return json.loads(tokens.next())
    if tokens.peek_kind() in ("word", "number"):
        return tokens.next()
    raise tokens.error(f"expected a name, got {tokens.peek()!r}")


def parse_type(tokens: Tokens) -> tuple[str | None, tuple[Dim, ...] | None]:
    if tokens.accept("?"):
        return None, None
    dtype = tokens.next()
    if dtype not in DTYPES:
        raise tokens.error(f"unknown dtype {dtype!r}")
    tokens.expect("[")
    if tokens.accept("..."):
        tokens.expect("]")
        return dtype, None
    dims: list[Dim] = []
    while not tokens.accept("]"):
        token = tokens.next()
        dims.append(None if token == "?" else int(token) if token.isdigit() else json.loads(token) if token.startswith('"') else token)
        tokens.accept(",")
    return dtype, tuple(dims)


def parse_scalar(token: str):
    if token.startswith('"'):
        return json.loads(token)
    if token in ("inf", "-inf", "nan") or any(c in token for c in ".eE"):
        return float(token)
    return int(token)


def parse_list(tokens: Tokens) -> list:
    tokens.expect("[")
    items = []
    while not tokens.accept("]"):
        items.append(parse_scalar(tokens.next()))
        tokens.accept(",")
    return items


def parse_data(tokens: Tokens, dtype: str, shape: tuple[Dim, ...] | None) -> np.ndarray:
    if tokens.peek() == "<":
        raise tokens.error("elided constant data cannot be parsed; print the model with elide=False")
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise tokens.error("a constant needs a static shape")
    items = parse_list(tokens)
    target = numpy_dtype(dtype)
    if dtype == "string":
        data = np.array([s.encode() for s in items], dtype=object)
    else:
        data = np.array(items, dtype=np.float64 if target.kind not in "biu" else np.int64).astype(target)
    expected = int(np.prod(shape, dtype=np.int64))
    if data.size != expected:
        raise tokens.error(f"constant has {data.size} elements, its type needs {expected}")
    return data.reshape(shape)


def parse_attr(tokens: Tokens) -> Attr:
    A = onnx.AttributeProto
    token = tokens.peek()
    if token in ("ints", "floats", "strings"):
        tokens.next()
        tokens.expect("[")
        tokens.expect("]")
        return Attr({"ints": A.INTS, "floats": A.FLOATS, "strings": A.STRINGS}[token], [])
    if token == "tensor":
        tokens.next()
        tokens.expect("<")
        dtype, shape = parse_type(tokens)
        tokens.expect(">")
        return Attr(A.TENSOR, parse_data(tokens, dtype, shape))
    if token in ("graph", "opaque"):
        raise tokens.error(f"{token} attributes are opaque and cannot be parsed")
    if token == "[":
        items = parse_list(tokens)
        if all(isinstance(i, str) for i in items):
            return Attr(A.STRINGS, items)
        if all(isinstance(i, int) for i in items):
            return Attr(A.INTS, items)
        return Attr(A.FLOATS, [float(i) for i in items])
    value = parse_scalar(tokens.next())
    kind = A.STRING if isinstance(value, str) else A.FLOAT if isinstance(value, float) else A.INT
    return Attr(kind, value)


def parse_value_ref(tokens: Tokens) -> str | None:
    if tokens.accept("_"):
        return None
    tokens.expect("%")
    return parse_name(tokens)


def parse_model(text: str) -> Model:
    """Parse the printer's text form into a Model with a linked graph."""
    tokens = Tokens(text)
    tokens.expect("model")
    model = Model(Graph())
    while not tokens.accept("{"):
        key = tokens.next()
        tokens.expect("=")
        if key == "opset_import":
            tokens.expect("{")
            model.opset_imports = {}
            while not tokens.accept("}"):
                domain = json.loads(tokens.next())
                tokens.expect(":")
                model.opset_imports[domain] = int(tokens.next())
                tokens.accept(",")
        elif key == "ir_version":
            model.ir_version = int(tokens.next())
        elif key in ("producer", "producer_version", "graph"):
            text_value = json.loads(tokens.next())
            if key == "graph":
                model.graph.name = text_value
            else:
                setattr(model, "producer_name" if key == "producer" else key, text_value)
        elif key == "initializers_as_inputs":
            model.initializers_as_inputs = tokens.next() == "1"
        else:
            raise tokens.error(f"unknown model field {key!r}")

    graph = model.graph
    defined: dict[str, Value] = {}

    def define(value: Value, line: int) -> Value:
        if value.name in defined:
            raise ParseError(f"line {line}: value %{value.name} is defined twice")
        defined[value.name] = value
        return value

    def lookup(name: str | None, line: int) -> Value | None:
        if name is None:
            return None
        if name not in defined:
            raise ParseError(f"line {line}: value %{name} is used before it is defined")
        return defined[name]

    while not tokens.accept("}"):
        line = tokens.line
        keyword = tokens.peek()
        if keyword == "meta":
            tokens.next()
            key = json.loads(tokens.next())
            tokens.expect("=")
            model.metadata[key] = json.loads(tokens.next())
        elif keyword == "input":
            tokens.next()
            name = parse_value_ref(tokens)
            tokens.expect(":")
            dtype, shape = parse_type(tokens)
            graph.add_input(define(Value(name, dtype, shape), line))
        elif keyword == "init":
            tokens.next()
            name = parse_value_ref(tokens)
            tokens.expect(":")
            dtype, shape = parse_type(tokens)
            tokens.expect("=")
            data = parse_data(tokens, dtype, shape)
            define(graph.add_initializer(name, data), line)
        elif keyword == "output":
            tokens.next()
            graph.outputs.append(lookup(parse_value_ref(tokens), line))
        else:
            parse_node(tokens, graph, define, lookup, line)
    if tokens.peek() is not None:
        raise tokens.error(f"unexpected {tokens.peek()!r} after the model")
    return model


def parse_node(tokens: Tokens, graph: Graph, define, lookup, line: int) -> None:
    output_names: list[str | None] = []
    if tokens.peek() in ("%", "_"):
        output_names.append(parse_value_ref(tokens))
        while tokens.accept(","):
            output_names.append(parse_value_ref(tokens))
        tokens.expect("=")
    op = tokens.next()
    domain = ""
    if tokens.accept("::"):
        domain, op = op, tokens.next()
    tokens.expect("(")
    input_names: list[str | None] = []
    while not tokens.accept(")"):
        input_names.append(parse_value_ref(tokens))
        tokens.accept(",")
    attrs: dict[str, Attr] = {}
    if tokens.accept("{"):
        while not tokens.accept("}"):
            key = tokens.next()
            tokens.expect("=")
            attrs[key] = parse_attr(tokens)
            tokens.accept(",")
    types: list[tuple[str | None, tuple[Dim, ...] | None]] = []
    if tokens.accept(":"):
        types.append(parse_type(tokens))
        while tokens.accept(","):
            types.append(parse_type(tokens))
    if types and len(types) != len(output_names):
        raise ParseError(f"line {line}: {len(output_names)} outputs but {len(types)} types")
    name = parse_name(tokens) if tokens.accept("@") else ""
    inputs = [lookup(n, line) for n in input_names]
    outputs = []
    for index, out_name in enumerate(output_names):
        if out_name is None:
            raise ParseError(f"line {line}: node outputs must be named")
        dtype, shape = types[index] if types else (None, None)
        outputs.append(define(Value(out_name, dtype, shape), line))
    graph.make_node(op, inputs, outputs, attrs, domain, name)
