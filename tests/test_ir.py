"""The IR's text form, parser and verifier."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.frontend.importer import import_proto
from edgec.ir import Value, VerificationError, parse_model, print_model, verify
from edgec.ir.parser import ParseError
from tests.models import small_cnn

TEXT = """\
model ir_version=8 opset_import={"": 17} {
  input %x: float32[N,4]
  init %w: float32[4,2] = [0.5, -1.0, 0.25, 2.0, 1e-05, 3.0, -0.125, 7.0]
  init %shape: int64[2] = [-1, 2]
  %y = MatMul(%x, %w) : float32[N,2] @mm
  %"a/b" = Reshape(%y, %shape) {allowzero=0} : float32[?,2]
  %z = Clip(%"a/b", _, %w) : float32[?,2]
  output %z
}
"""


def test_text_round_trips_exactly():
    model = parse_model(TEXT)
    assert print_model(model, elide=False) == TEXT


def test_printing_is_deterministic_and_elides_large_constants(roundtrip_text):
    model = import_proto(small_cnn())
    first, second = print_model(model), print_model(import_proto(small_cnn()))
    assert first == second
    assert "<elided sha256=" in first  # conv weights are large
    roundtrip_text(model)


def test_symbolic_and_unknown_dims_are_kept():
    model = parse_model(TEXT)
    assert model.graph.inputs[0].shape == ("N", 4)
    assert model.graph.nodes[1].outputs[0].shape == (None, 2)
    assert model.graph.nodes[2].inputs[1] is None


def test_parse_errors_name_the_line():
    broken = TEXT.replace("%y = MatMul(%x, %w)", "%y = MatMul(%x, %nope)")
    with pytest.raises(ParseError, match=r"line 5: value %nope is used before it is defined"):
        parse_model(broken)
    with pytest.raises(ParseError, match="line 2: unknown dtype 'float33'"):
        parse_model(TEXT.replace("float32[N,4]", "float33[N,4]"))
    with pytest.raises(ParseError, match="elided constant data cannot be parsed"):
        parse_model(print_model(import_proto(small_cnn())))


def test_verifier_accepts_imported_models():
    verify(import_proto(small_cnn()))
    verify(parse_model(TEXT))


def test_verifier_reports_use_before_definition_and_cycles():
    model = parse_model(TEXT)
    nodes = model.graph.nodes
    nodes[0], nodes[1] = nodes[1], nodes[0]
    with pytest.raises(VerificationError, match="uses 'y' before it is defined .*not in topological order"):
        verify(model)

    model = parse_model(TEXT)
    reshape, clip = model.graph.nodes[1], model.graph.nodes[2]
    model.graph.set_input(reshape, 0, clip.outputs[0])  # z feeds reshape, which feeds z
    with pytest.raises(VerificationError, match="has a cycle"):
        verify(model)


def test_verifier_reports_type_mismatches():
    model = parse_model(TEXT)
    model.graph.nodes[0].outputs[0].dtype = "float16"
    with pytest.raises(VerificationError, match=r"node 'mm' \(MatMul\): output 'y' is recorded as float16 but the op yields float32"):
        verify(model)

    model = parse_model(TEXT)
    model.graph.nodes[0].outputs[0].shape = ("N", 3)
    with pytest.raises(VerificationError, match="dim 1 is recorded as 3 but the op yields 2"):
        verify(model)

    model = parse_model(TEXT)
    model.graph.initializers["w"].const = np.zeros((2, 4), np.float32)
    with pytest.raises(VerificationError, match=r"initializer 'w' is declared float32\[4, 2\] but holds float32\[2, 4\]"):
        verify(model)


def test_verifier_reports_double_definitions_and_undefined_outputs():
    model = parse_model(TEXT)
    model.graph.nodes[1].outputs[0].name = "y"
    with pytest.raises(VerificationError, match="value 'y' is defined twice"):
        verify(model)

    model = parse_model(TEXT)
    model.graph.outputs.append(Value("ghost", "float32", (1,)))
    with pytest.raises(VerificationError, match="graph output 'ghost' is not defined"):
        verify(model)
