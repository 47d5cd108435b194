"""The Python API (edgec/api.py, exported lazily by the edgec package): the CLI's compile is
a shell over ``edgec.compile``, with the same defaults and errors, and ``edgec.load`` pulls
in no compiler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.cli import main
from edgec.deploy.artifact import open_artifact
from edgec.errors import UsageError
from tests.models import ort_run
from tests.test_pipelines import conv_affine_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE, SAMPLE = ROOT / "examples" / "digits_mlp.onnx", ROOT / "examples" / "digits_sample.npz"


def test_compile_then_load_matches_the_cli_and_onnxruntime(tmp_path):
    result = edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec")
    assert result.output == tmp_path / "d.edgec" and str(result).startswith(str(result.output))
    feeds = dict(np.load(SAMPLE))
    actual = edgec.load(result.output).run(feeds)
    assert main(["run", str(result.output), "--inputs", str(SAMPLE), "--output", str(tmp_path / "cli.npz")]) == 0
    with np.load(tmp_path / "cli.npz") as cli:
        np.testing.assert_array_equal(actual["logits"], cli["logits"])
    np.testing.assert_allclose(actual["logits"], ort_run(onnx.load(EXAMPLE), feeds)["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target, reduce_range", [("x86-64-v3", True), ("x86-64-vnni", False)])
def test_calib_takes_the_targets_weight_bits_like_the_cli(tmp_path, target, reduce_range):
    """7-bit weights on AVX2 (its int8 dot product saturates on 8-bit ones), 8-bit with VNNI:
    the same recorded pipeline from the API and from the CLI."""
    model, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(conv_affine_model(), model)
    np.savez(calib, x=np.random.default_rng(0).standard_normal((4, 1, 3, 8, 8)).astype(np.float32))
    api = edgec.compile(model, target, output=tmp_path / "api.edgec", calib=calib)
    assert main(["compile", str(model), "-t", target, "--calib", str(calib), "-o", str(tmp_path / "cli.edgec"), "-q"]) == 0
    pipeline = api.manifest["pipeline"]
    assert ("reduce-range=true" in pipeline) == reduce_range
    assert open_artifact(tmp_path / "cli.edgec").manifest["pipeline"] == pipeline


def test_quantize_keywords_need_calib(tmp_path):
    with pytest.raises(UsageError, match="need --calib"):
        edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec", per_tensor_weights=True)
    assert not (tmp_path / "d.edgec").exists()


def test_loading_imports_no_compiler(tmp_path):
    edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec")
    script = (f"import sys, json, numpy as np, edgec\n"
              f"edgec.load({str(tmp_path / 'd.edgec')!r}).run(dict(np.load({str(SAMPLE)!r})))\n"
              "print(json.dumps(sorted(m for m in ('onnx', 'tvm', 'edgec.api', 'edgec.compiler.driver', 'edgec.passes')"
              " if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'compyle'"):
        edgec.compyle  # noqa: B018
