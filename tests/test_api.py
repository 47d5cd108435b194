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
from edgec.reports.check import FRESH_WORKING_SET
from edgec.errors import ProfileViolation, UsageError
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


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("### Python API")) + len("```python\n")
    return text[start:text.index("\n```", start)]


def test_the_readme_example_runs(tmp_path):
    """The README's one complete example (quantize, compile, check, load and run) as written,
    in a fresh process from a directory holding the examples."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("digits.qdq.onnx: 3 activation Q/DQ pairs") and lines[1].startswith("digits.edgec (x86-64")
    assert "against profile infra-edge: COMPLIANT" in done.stdout
    assert lines[-1] == str(np.load(ROOT / "examples" / "digits_labels.npy"))


def test_no_module_of_the_package_shares_an_api_name():
    """Importing edgec.<name> would set the module on the package, hiding the function."""
    import pkgutil

    assert {module.name for module in pkgutil.iter_modules(edgec.__path__)} & set(edgec.LAZY) == set()
    assert all(getattr(edgec, name).__module__ in ("edgec.api", "edgec.runtime") for name in edgec.LAZY)


def test_quantize_reports_what_the_cli_writes(tmp_path, capsys):
    result = edgec.quantize(EXAMPLE, calib=SAMPLE, output=tmp_path / "api.qdq.onnx", report=True)
    assert main(["quantize", str(EXAMPLE), "--calib", str(SAMPLE), "-o", str(tmp_path / "cli.qdq.onnx"), "--report"]) == 0
    assert f"wrote {tmp_path / 'cli.qdq.onnx'}: {result.activation_pairs} activation Q/DQ pairs" in capsys.readouterr().err
    assert result.activation_pairs == 3 and result.weight_bytes_after < result.weight_bytes_before
    assert [row.placement for row in result.layers] == ["int8"] * 3 and result.budget is None
    written = onnx.load(result.output)
    assert written.graph == onnx.load(tmp_path / "cli.qdq.onnx").graph
    record = json.loads({p.key: p.value for p in written.metadata_props}["edgec.quantization"])
    assert record["layers"] == json.loads(json.dumps(result.to_dict()))["layers"]


def test_quantize_needs_a_profile_for_overrides(tmp_path):
    with pytest.raises(UsageError, match="--set needs --profile"):
        edgec.quantize(EXAMPLE, calib=SAMPLE, output=tmp_path / "q.onnx", overrides=["latency.batch_size=2"])


def test_check_compares_and_certifies(tmp_path):
    artifact = edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec").output
    checked = edgec.check(artifact, model=EXAMPLE, inputs=SAMPLE)
    assert checked.ok and checked.error is None and checked.certificate is None
    assert [row.name for row in checked.comparison.rows] == ["logits"] and checked.comparison.rows[0].mismatched == 0
    certified = edgec.check(artifact, profile="mobile", output=tmp_path / "cert.json")
    assert not certified.ok and isinstance(certified.error, ProfileViolation)
    working_set = next(m for m in certified.certificate.measurements if m.attribute == "memory.working_set")
    assert working_set.how == FRESH_WORKING_SET and working_set.values["bytes"] > 0  # as bench measures it
    assert json.loads((tmp_path / "cert.json").read_text()) == certified.certificate.to_dict()


def test_check_of_an_int8_artifact_against_the_float_model_says_why(tmp_path):
    artifact = edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "q.edgec", calib=SAMPLE).output
    checked = edgec.check(artifact, model=EXAMPLE, inputs=SAMPLE)
    assert not checked.ok and checked.certificate is None
    assert "the artifact is quantized (int8) and the model is float" in str(checked.error)


def test_check_needs_something_to_check(tmp_path):
    artifact = edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec").output
    with pytest.raises(UsageError, match="nothing to check"):
        edgec.check(artifact)
    with pytest.raises(UsageError, match="--inputs .*missing.npz: no such file"):
        edgec.check(artifact, model=EXAMPLE, inputs=tmp_path / "missing.npz")


def test_bench_times_the_first_run_in_a_fresh_process(tmp_path):
    artifact = edgec.compile(EXAMPLE, target="x86-64", output=tmp_path / "d.edgec").output
    latency = edgec.bench(artifact, inputs=dict(np.load(SAMPLE)), repeat=3, warmup=0)
    assert len(latency.runs_s) == 3 and latency.first_s > 0 and "fresh Python process" in latency.first_how
    assert latency.working_set_how == FRESH_WORKING_SET and latency.working_set_bytes > 0  # as check measures it
    with pytest.raises(UsageError, match="--repeat must be at least 1"):
        edgec.bench(artifact, repeat=0)


def test_tune_refuses_a_bad_budget_before_measuring(tmp_path):
    with pytest.raises(UsageError, match="--trials 0: must be at least 1"):
        edgec.tune(EXAMPLE, "x86-64", db=tmp_path / "db", trials=0)
