"""The typed manifest (edgec/deploy/manifest.py) and its published JSON Schema.

jsonschema is not an edgec dependency, so ``assert_matches_schema`` is a small checker of the
keywords the generated schema uses (type, properties, required, items, additionalProperties,
anyOf); real manifests of each format are checked against the published file here and in
test_partitioned (format 2) and test_cortex_m (format 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.cli import main
from edgec.deploy.artifact import open_artifact
from edgec.deploy.manifest import Manifest, ManifestFieldError, json_schema
from edgec.errors import ArtifactError
from edgec.runtime import load
from tests.models import small_cnn
from tests.test_artifact_trust import craft, listed

SCHEMA = Path(__file__).resolve().parent.parent / "edgec" / "deploy" / "manifest.schema.json"
JSON_TYPES = {"object": dict, "array": list, "string": str, "null": type(None), "boolean": bool}


def schema_errors(value, schema: dict, where: str = "manifest") -> list[str]:
    """Where ``value`` breaks ``schema``: [] when it matches."""
    if "anyOf" in schema:
        return [] if any(not schema_errors(value, option, where) for option in schema["anyOf"]) else [where]
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(of_type(value, kind) for kind in kinds):
        return [f"{where}: {type(value).__name__} is not {'/'.join(kinds)}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{where}.{key}: missing" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                errors += schema_errors(item, sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def of_type(value, kind: str) -> bool:
    if kind == "integer":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float)
    return isinstance(value, JSON_TYPES[kind])


def assert_matches_schema(manifest: dict) -> None:
    assert schema_errors(manifest, json.loads(SCHEMA.read_text())) == []


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("manifest")
    onnx.save(small_cnn(), directory / "cnn.onnx")
    assert main(["compile", str(directory / "cnn.onnx"), "-t", "x86-64", "-o", str(directory / "cnn.edgec"), "-q"]) == 0
    return directory / "cnn.edgec"


def test_published_schema_is_the_one_the_dataclasses_give():
    assert json.loads(SCHEMA.read_text()) == json_schema()


def test_a_compiled_manifest_matches_the_schema_and_parses_typed(artifact):
    opened = open_artifact(artifact)
    assert_matches_schema(opened.manifest)
    typed = opened.typed
    assert typed.format_version == 1 and typed.target.name == "x86-64" and typed.target.device == "cpu"
    assert [spec.name for spec in typed.signature.inputs] == [spec["name"] for spec in opened.manifest["signature"]["inputs"]]
    assert sum(w.nbytes for w in typed.weights) == sum(w["nbytes"] for w in opened.manifest["weights"]) > 0
    assert typed.members["weights.bin"].size == opened.offsets["weights.bin"][1]


def test_the_checker_refuses_what_the_schema_does_not_allow(artifact):
    manifest = open_artifact(artifact).manifest
    broken = {**manifest, "target": {**manifest["target"], "triple": 64}}
    del broken["signature"]
    assert schema_errors(broken, json.loads(SCHEMA.read_text())) == [
        "manifest.signature: missing", "manifest.target.triple: int is not string"]


def test_a_manifest_of_the_first_format_loads_and_runs(artifact, tmp_path):
    """The fields the first format had, and nothing added since (dim bindings, the target's
    device and features, versions, reports): defaults fill them and the model runs."""
    opened = open_artifact(artifact)
    members = {name: opened.read_member(name) for name in opened.manifest["members"]}
    target = {key: opened.manifest["target"][key] for key in ("name", "triple")}
    oldest = listed({"format": "edgec-artifact", "format_version": 1, "target": target,
                     "signature": opened.manifest["signature"], "weights": opened.manifest["weights"]}, members)
    path = craft(tmp_path / "old.edgec", oldest, list(members.items()))
    typed = open_artifact(path).typed
    assert (typed.dim_bindings, typed.target.device, typed.target.features, typed.report) == ([], "cpu", [], None)
    assert_matches_schema(oldest)
    feeds = load(artifact).random_inputs(1)
    np.testing.assert_array_equal(load(path).run(feeds)["logits"], load(artifact).run(feeds)["logits"])


@pytest.mark.parametrize("change, field", [
    (lambda m: m["target"].pop("triple"), "target.triple"),
    (lambda m: m["target"].update(features="avx2"), "target.features"),
    (lambda m: m["signature"]["inputs"][0].update(shape=[1, "two"]), "signature.inputs"),
    (lambda m: m["target"].update(cores="two"), "target.cores"),
    (lambda m: m.update(source="cnn.onnx"), "source"),
    (lambda m: m.update(dim_bindings=[{"input": "x"}]), "dim_bindings[0].axis"),
])
def test_a_field_of_the_wrong_type_is_named(artifact, tmp_path, change, field):
    opened = open_artifact(artifact)
    manifest = json.loads(json.dumps(opened.manifest))
    change(manifest)
    members = {name: opened.read_member(name) for name in manifest["members"]}
    with pytest.raises(ArtifactError) as caught:
        open_artifact(craft(tmp_path / "bad.edgec", manifest, list(members.items())))
    assert f"member 'manifest.json'" in str(caught.value) and f"field '{field}" in str(caught.value)
    assert str(caught.value).count("\n") == 0


def test_parse_takes_a_bool_for_no_integer():
    with pytest.raises(ManifestFieldError, match="field 'format_version'"):
        Manifest.parse({"format": "edgec-artifact", "format_version": True})
