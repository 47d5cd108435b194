"""What every pass test does: run the pass, compare graphs, compare numbers."""

from __future__ import annotations

import numpy as np

from edgec.compiler.pass_manager import PassResult, Pipeline
from edgec.frontend.exporter import export_model
from edgec.ir import Model, parse_model, print_model, verify
from tests.models import ort_run


def run_pass(pipeline_text: str, model: Model) -> PassResult:
    spec = Pipeline.parse(pipeline_text).passes[0]
    result = spec.create()(model)
    verify(result.model)
    return result


def assert_golden(model: Model, expected_text: str) -> None:
    """Structural comparison: both sides go through the parser and printer."""
    actual = print_model(model, elide=False)
    expected = print_model(parse_model(expected_text), elide=False)
    assert actual == expected


def assert_idempotent(pipeline_text: str, model: Model) -> PassResult:
    """``modified`` is true on the first run and false on the second."""
    first = run_pass(pipeline_text, model)
    assert first.modified
    second = run_pass(pipeline_text, first.model)
    assert not second.modified
    return first


def assert_same_numbers(before_onnx, after: Model, feeds: dict, rtol=1e-5, atol=1e-6) -> None:
    expected = ort_run(before_onnx, feeds)
    actual = ort_run(export_model(after), feeds)
    assert list(actual) == list(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol, err_msg=name)
