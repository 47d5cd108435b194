"""Fuzzing the compile front end (import, checks, passes, memory plan, export) with
structured ONNX mutations and byte flips: a bad model is an EdgecError with a one-line
message, never another exception. The default run is bounded and reproducible; ``-m
slow`` runs longer with fresh randomness; ``benchmarks/fuzz.py`` runs for a set time."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import HypothesisChooser, front_end, make_case

FAST = settings(max_examples=int(os.environ.get("EDGEC_FUZZ_EXAMPLES", "300")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow], database=None)
SLOW = settings(max_examples=int(os.environ.get("EDGEC_FUZZ_SLOW_EXAMPLES", "20000")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.data())
def test_front_end_refuses_bad_models_cleanly(data):
    error = front_end(make_case(HypothesisChooser(data)))
    assert error is None, error


@pytest.mark.slow
@SLOW
@given(st.data())
def test_front_end_refuses_bad_models_cleanly_long(data):
    error = front_end(make_case(HypothesisChooser(data)))
    assert error is None, error
