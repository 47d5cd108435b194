"""ONNX's node conformance tests through ``edgec.backend``.

The cases are generated from ``onnx.backend.test.case.node`` (``edgec.conformance``)
into pytest's cache directory, once per onnx version. ``conformance_expected_failures.txt``
lists every test edgec fails, with its reason class: a listed test that passes, or fails
for another class, and an unlisted test that fails, both fail here, so the list stays
true. The default run takes a fixed sample, the first test of each op in name order;
``-m long`` runs the whole suite (``benchmarks/conformance.py`` measures it against raw
TVM and onnxruntime).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from edgec.conformance import classify, compare, generate

EXPECTED_FAILURES = Path(__file__).with_name("conformance_expected_failures.txt")


def read_expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """``test_name: reason class  # note`` per line; blank lines and ``#`` comments skipped."""
    expected = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, klass = line.partition(":")
            expected[name.strip()] = klass.strip()
    return expected


def all_cases(config) -> list:
    return generate(Path(config.cache.mkdir("onnx-node-tests")))


def sample(cases) -> list:
    """The first test of each op, by name: every op once, the same tests every run."""
    first = {}
    for case in cases:
        first.setdefault(case.op, case)
    return sorted(first.values(), key=lambda c: c.name)


def pytest_generate_tests(metafunc):
    if "node_case" in metafunc.fixturenames:
        cases = all_cases(metafunc.config)
        chosen = {c.name for c in sample(cases)}
        metafunc.parametrize("node_case", [
            pytest.param(c, id=c.name, marks=() if c.name in chosen else pytest.mark.long) for c in cases])


def outcome(case) -> tuple[str | None, str]:
    """(None, '') when edgec matches the reference, else (reason class, message)."""
    from edgec.backend import EdgecBackend

    model, inputs, expected = case.load()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            actual = list(EdgecBackend.prepare(model).run(inputs))
    except Exception as exc:
        return classify(exc, model), f"{type(exc).__name__}: {exc}"
    problem = compare(expected, actual)
    return (None, "") if problem is None else ("wrong result", problem)


def test_node(node_case):
    expected = read_expected_failures().get(node_case.name)
    klass, message = outcome(node_case)
    if expected is None:
        assert klass is None, f"{node_case.name} fails ({klass}): {message}"
    else:
        assert klass is not None, f"{node_case.name} passes now: remove it from {EXPECTED_FAILURES.name}"
        assert klass == expected, f"{node_case.name} fails as {klass!r}, listed as {expected!r}: {message}"


def test_expected_failures_name_real_tests(request):
    """Every listed test exists and every class is a known one."""
    from edgec.conformance import REASON_CLASSES

    names = {c.name for c in all_cases(request.config)}
    listed = read_expected_failures()
    assert sorted(set(listed) - names) == []
    assert sorted({k for k in listed.values()} - set(REASON_CLASSES)) == []


def test_sample_covers_every_op(request):
    cases = all_cases(request.config)
    assert {c.op for c in sample(cases)} == {c.op for c in cases}
    assert len(cases) == 1404  # onnx 1.23's single-node tests; a new onnx changes this on purpose
