"""Shared fixtures. Tests import helpers as ``tests.models``; run pytest from the repo root."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgec.ir import parse_model, print_model


def pytest_configure(config):
    """PyPI's torchvision (a CUDA build) fails to import next to torch's CPU build, and transformers
    imports it for any model once it is installed: import it first through its workaround."""
    if importlib.util.find_spec("torchvision") is not None:
        from tests.torchvision_models import import_torchvision

        import_torchvision()


@pytest.fixture
def roundtrip_text():
    """Assert a model's text survives print -> parse -> print unchanged."""

    def check(model):
        text = print_model(model, elide=False)
        assert print_model(parse_model(text), elide=False) == text
        return text

    return check


def assert_close(actual: dict, expected: dict, rtol: float = 1e-3, atol: float = 1e-4) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol, err_msg=f"output {name}")


def without_progress(err: str) -> str:
    """stderr less the progress lines a compile prints off a terminal (``edgec: [  0.1s] step``):
    what the one-line-error checks read."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("edgec: ["))
