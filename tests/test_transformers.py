"""Text transformers as users export them (tests/transformer_models.py): BERT-, DistilBERT- and
GPT-2-style models and a 2-layer encoder, by torch's dynamo exporter (opset 18) and its
TorchScript one (opset 17), with a symbolic batch and sequence length. They compile with the
sequence bound by --dim and the batch by default, run, and match onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec.cli import main
from edgec.runtime import load
from tests.conftest import without_progress
from tests.models import ort_run

pytest.importorskip("transformers", reason="the test models are built from transformers configs (pip install -e '.[test]')")
pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript (pip install -e '.[test]')")

from tests.transformer_models import EXPORTERS, MODELS, SEQ, export  # noqa: E402

SLOW = {("gpt2", "dynamo"), ("bert", "dynamo")}
"""The longest exports (torch.export traces the whole model)."""

def cases() -> list:
    params = []
    for name in MODELS:
        for exporter in EXPORTERS:
            marks = [pytest.mark.slow] if (name, exporter) in SLOW else []
            params.append(pytest.param(name, exporter, marks=marks, id=f"{name}-{exporter}"))
    return params


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(name, exporter) -> (onnx path, example inputs), exported once per module."""
    pytest.importorskip("torch", reason="the models are exported with torch==2.13.0")
    cache: dict = {}
    folder = tmp_path_factory.mktemp("transformers")

    def get(name: str, exporter: str):
        if (name, exporter) not in cache:
            cache[name, exporter] = export(name, exporter, folder / f"{name}-{exporter}.onnx")
        return cache[name, exporter]

    return get


def sequence_dims(path) -> list[str]:
    """The symbolic dims past the leading one, by name: 'seq' from the TorchScript exporter's
    dynamic_axes; the dynamo exporter names its own ('s41', ...), one per input when it cannot
    prove two inputs share one."""
    names = []
    for value in onnx.load(path).graph.input:
        for dim in value.type.tensor_type.shape.dim[1:]:
            if dim.dim_param and dim.dim_param not in names:
                names.append(dim.dim_param)
    return names


@pytest.mark.parametrize("name, exporter", cases())
def test_export_compiles_runs_and_matches_onnxruntime(name, exporter, exported, tmp_path, capsys):
    path, feeds = exported(name, exporter)
    opset = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
    assert opset == EXPORTERS[exporter]
    seq_dims = sequence_dims(path)
    assert seq_dims and all(feed.shape == (1, SEQ) for feed in feeds.values())
    artifact = tmp_path / "model.edgec"
    args = ["compile", str(path), "-t", "x86-64", "-o", str(artifact)]
    for dim in seq_dims:
        args += ["--dim", f"{dim}={SEQ}"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err
    notice = without_progress(err).splitlines()[0]
    assert notice.startswith("edgec: note: bound symbolic dims: ")
    assert "dim 0" in notice and "= 1 from the default batch size" in notice
    assert all(f"= {SEQ} from --dim {dim}={SEQ}" in notice for dim in seq_dims)

    expected = ort_run(path, feeds)
    actual = load(artifact).run(feeds)
    assert list(actual) == list(expected)
    for output, want in expected.items():
        assert actual[output].shape == want.shape and actual[output].dtype == want.dtype
        scale = np.abs(want).max()
        assert scale > 0
        assert np.abs(actual[output] - want).max() <= 1e-4 * scale, output
