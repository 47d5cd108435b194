"""Edge profiles: parsing, units, inheritance, overrides, built-ins, errors, metadata_props."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgec.errors import UsageError
from edgec.profiles.profile import (
    builtin_profiles,
    from_metadata_props,
    load_profile,
    profile_from_dict,
    to_metadata_props,
)
from edgec.units import format_duration, format_size_exact, parse_duration

BUILTINS = ["mobile", "smart-device", "infra-edge", "mcu",
            "basic-2d-image", "advanced-2d-image", "basic-audio", "advanced-audio"]


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, seconds", [
    ("33ms", 0.033), ("30fps", 1 / 30), ("1us", 1e-6), ("1µs", 1e-6), ("2s", 2.0), ("0.5 ms", 0.0005), ("250ns", 2.5e-7),
])
def test_durations_parse_as_people_write_them_and_read_back(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_duration_spellings():
    assert format_duration(1 / 30) == "30fps"
    assert format_duration(0.033) == "33ms"
    assert format_size_exact(2 * 10**9) == "2GB"
    assert format_size_exact(64 * 2**20) == "64MiB"
    for bad, message in (("33", "bad duration"), ("-1ms", "negative"), ("0fps", "positive"), ("3 parsecs", "bad duration")):
        with pytest.raises(ValueError, match=message):
            parse_duration(bad)


def test_units_in_a_profile(tmp_path):
    path = write(tmp_path, "p.toml", """
schema = 1
[memory]
working_set = "64MiB"
activation_arena = "512KiB"
weights = 4096
[latency]
steady_state = "30fps"
first_time = "1.5s"
""")
    profile = load_profile(path)
    assert profile.name == "p"
    assert profile.memory.working_set == 64 * 2**20
    assert profile.memory.activation_arena == 512 * 1024
    assert profile.memory.weights == 4096
    assert profile.latency.steady_state == pytest.approx(1 / 30)
    assert profile.latency.first_time == 1.5
    assert profile.batch_size == 1


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_loads_and_round_trips(name):
    profile = load_profile(name)
    assert profile.name == name and profile.description
    assert profile_from_dict(profile.to_dict()) == dataclasses.replace(profile, sources=("profile",))
    assert list(builtin_profiles())[: len(BUILTINS)] == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_value_has_a_comment_saying_why(name):
    """Each field is preceded by a comment line (its justification), possibly shared by a block."""
    lines = builtin_profiles()[name].read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"[a-z_]+ = ", line) and not line.startswith(("schema", "description", "extends")):
            before = [previous for previous in lines[:number] if previous.strip()]
            assert before[-1].startswith("#") or re.match(r"[a-z_]+ = ", before[-1]), f"{name}: {line} unexplained"


def test_builtin_values_from_the_working_group():
    mcu = load_profile("mcu")
    assert (mcu.memory.working_set, mcu.memory.weights) == (512 * 1024, 2 * 2**20)
    smart = load_profile("smart-device")
    assert smart.latency.steady_state == pytest.approx(1 / 30)
    assert smart.power.min_ips_per_watt == 6.0  # 30 inferences/s within 5 W
    assert smart.data_locality.on_device is True
    assert load_profile("basic-2d-image").accuracy.metric == "top5"


def test_extends_a_builtin_then_a_file(tmp_path):
    write(tmp_path, "camera.toml", """
schema = 1
extends = "advanced-2d-image"
description = "our camera"
[memory]
working_set = "1GiB"
""")
    child = write(tmp_path, "night.toml", """
schema = 1
extends = "camera.toml"
[latency]
steady_state = "15fps"
""")
    profile = load_profile(child)
    assert profile.name == "night" and profile.description == ""
    assert profile.accuracy.metric == "top1"  # advanced-2d-image over basic-2d-image's top5
    assert profile.accuracy.dataset == "imagenet"  # from basic-2d-image, two levels up
    assert profile.memory.working_set == 2**30  # from camera.toml
    assert profile.latency.steady_state == pytest.approx(1 / 15)  # night.toml wins
    assert [s.rsplit("/", 1)[-1] for s in profile.sources] == [
        "basic-2d-image.toml", "advanced-2d-image.toml", "camera.toml", "night.toml"]


def test_lists_are_replaced_not_merged(tmp_path):
    path = write(tmp_path, "p.toml", 'schema = 1\nextends = "mcu"\n[ops]\nallowed = ["Conv", "Relu"]\n')
    assert load_profile(path).ops.allowed == ("Conv", "Relu")


def test_overrides_apply_last_and_parse_values():
    profile = load_profile("mobile", ["memory.working_set=64MiB", "quantization.required=true",
                                      'ops.excluded=["Loop", "If"]', "latency.steady_state=10ms"])
    assert profile.memory.working_set == 64 * 2**20
    assert profile.quantization.required is True
    assert profile.ops.excluded == ("Loop", "If")
    assert profile.latency.steady_state == 0.01
    assert profile.sources[-1] == "--set latency.steady_state=10ms"


@pytest.mark.parametrize("override, message", [
    ("memory.working_set=lots", r"--set memory.working_set=lots: field 'memory.working_set': bad size"),
    ("memory.workingset=1MiB", r"field 'memory.workingset': unknown field \(known in \[memory\]"),
    ("working_set=1MiB", r"--set working_set=1MiB: expected SECTION.FIELD=VALUE"),
    ("latency.steady_state=2s", r"field 'latency.first_time': conflicts with latency.steady_state \(--set"),
])
def test_bad_overrides_name_the_flag_and_field(override, message):
    with pytest.raises(UsageError, match=message):
        load_profile("mobile", [override])


BAD_PROFILES = [
    ("schema = 1\n[memory]\nworkingset = \"1MiB\"\n", 3, "memory.workingset", "unknown field"),
    ("schema = 1\n[memroy]\nworking_set = \"1MiB\"\n", 2, "memroy", "unknown section 'memroy'"),
    ("schema = 1\ncolour = \"red\"\n", 2, "colour", "unknown field"),
    ("schema = 1\n[latency]\nsteady_state = \"33 parsecs\"\n", 3, "latency.steady_state", "bad duration"),
    ("schema = 1\n[latency]\nsteady_state = 33\n", 3, "latency.steady_state", "write it as a string"),
    ("schema = 1\n[memory]\nweights = \"-2MiB\"\n", 3, "memory.weights", "negative"),
    ("schema = 1\n[memory]\nweights = -5\n", 3, "memory.weights", "negative"),
    ("schema = 1\n[memory]\nweights = true\n", 3, "memory.weights", "expected a size such as \"64MiB\", got bool True"),
    ("schema = 1\n[latency]\nbatch_size = 2.5\n", 3, "latency.batch_size", "input should be a valid integer, got float 2.5"),
    ("schema = 1\n[latency]\nbatch_size = \"4\"\n", 3, "latency.batch_size", "input should be a valid integer, got str '4'"),
    ("schema = 1\n[ops]\nallowed = [\"Conv\", 7]\n", 3, "ops.allowed", "item 1: input should be a valid string, got int 7"),
    ("schema = 1\n[latency]\nbatch_size = 0\n", 3, "latency.batch_size", "input should be greater than 0, got int 0"),
    ("schema = 1\n[accuracy]\nmetric = \"f1\"\n", 3, "accuracy.metric", "input should be 'top1', 'top5', 'cosine', 'mse' or 'mae', got str 'f1'"),
    ("schema = 1\n[accuracy]\nmin = 0.9\n", 3, "accuracy.min", "needs accuracy.metric"),
    ("schema = 1\n[accuracy]\nmetric = \"mse\"\nmin = 0.9\n", 4, "accuracy.min", "mse is lower-is-better; use accuracy.max"),
    ("schema = 1\n[accuracy]\nmetric = \"top1\"\nmin = 95\n", 4, "accuracy.min", "top1 is at most 1"),
    ("schema = 1\n[ops]\nallowed = [\"Conv\", \"Konv\"]\n", 3, "ops.allowed", "unknown ONNX operator 'Konv'"),
    ("schema = 1\n[dtypes]\ncompute = [\"float33\"]\n", 3, "dtypes.compute", "unknown dtype 'float33'"),
    ("schema = 1\n[data_locality]\non_device = \"yes\"\n", 3, "data_locality.on_device", "input should be a valid boolean, got str 'yes'"),
    ("schema = 1\nmemory = 5\n", 2, "memory", "expected a table"),
    ("schema = 2\n", 1, "schema", "schema 2 is not supported"),
    ("[memory]\nweights = \"1MiB\"\n", 1, "schema", "missing; add 'schema = 1'"),
    ("schema = 1\n[latency]\nsteady_state = \"33ms\"\nfirst_time = \"10ms\"\n", 4, "latency.first_time",
     "conflicts with latency.steady_state (line 3): first-time latency 10ms is below steady-state latency 33ms"),
    ("schema = 1\n[ops]\nallowed = [\"Conv\", \"Relu\"]\nexcluded = [\"Relu\"]\n", 4, "ops.excluded",
     "conflicts with ops.allowed (line 3): Relu both allowed and excluded"),
    ("schema = 1\n[ops]\nexcluded = [\"Relu\", \"Relu\"]\n", 3, "ops.excluded", "Relu listed twice"),
    ("schema = 1\n[memory]\nworking_set = \"1MiB\"\nactivation_arena = \"2MiB\"\n", 4, "memory.activation_arena",
     "is part of the working set"),
    ("schema = 1\n[data_locality]\non_device = true\nnetwork_qos = \"5G\"\n", 4, "data_locality.network_qos",
     "an on-device model needs no network QoS"),
    ("schema = 1\n[quantization]\nrequired = true\n[dtypes]\nstorage = [\"float32\"]\n", 3,
     "quantization.required", "quantized weights need an integer storage type"),
    ("schema = 1\nextends = \"tablet\"\n", 2, "extends", "unknown profile 'tablet'"),
    ("schema = 1\nextends = \"missing.toml\"\n", 2, "extends", "no such profile file"),
]


@pytest.mark.parametrize("text, line, field, message", BAD_PROFILES, ids=[b[2] + ":" + b[3][:24] for b in BAD_PROFILES])
def test_bad_profile_errors_name_file_line_and_field(tmp_path, text, line, field, message):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(UsageError) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"{path}:{line}: field '{field}': ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, line, field, message", BAD_PROFILES, ids=[b[2] + ":" + b[3][:24] for b in BAD_PROFILES])
def test_bad_profile_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys, text, line, field, message):
    from edgec.cli import main

    path = write(tmp_path, "bad.toml", text)
    assert main(["profiles", "show", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"edgec: error: {path}:{line}: field '{field}': ") and message in captured.err


def test_conflict_across_files_names_both_places(tmp_path):
    write(tmp_path, "base.toml", 'schema = 1\n[latency]\nfirst_time = "20ms"\n')
    child = write(tmp_path, "child.toml", 'schema = 1\nextends = "base.toml"\n[latency]\nsteady_state = "30ms"\n')
    with pytest.raises(UsageError, match=rf"^{tmp_path}/base.toml:3: field 'latency.first_time': conflicts with "
                                         rf"latency.steady_state \({tmp_path}/child.toml:4\)"):
        load_profile(child)


def test_cycle_in_extends_is_named(tmp_path):
    write(tmp_path, "a.toml", 'schema = 1\nextends = "b.toml"\n')
    write(tmp_path, "b.toml", 'schema = 1\n\nextends = "a.toml"\n')
    with pytest.raises(UsageError, match=rf"^{tmp_path}/b.toml:3: field 'extends': cycle: a.toml -> b.toml -> a.toml$"):
        load_profile(tmp_path / "a.toml")


def test_a_file_cannot_extend_itself(tmp_path):
    path = write(tmp_path, "self.toml", 'schema = 1\nextends = "self.toml"\n')
    with pytest.raises(UsageError, match="cycle: self.toml -> self.toml"):
        load_profile(path)


def test_dotted_keys_and_inline_tables_get_their_line(tmp_path):
    path = write(tmp_path, "p.toml", 'schema = 1\n\nmemory.working_set = "lots"\n')
    with pytest.raises(UsageError, match=rf"^{path}:3: field 'memory.working_set': bad size"):
        load_profile(path)
    path = write(tmp_path, "q.toml", 'schema = 1\nlatency = {batch_size = 1, steady_state = "fast"}\n')
    with pytest.raises(UsageError, match=rf"^{path}:2: field 'latency.steady_state'"):
        load_profile(path)


def test_invalid_toml_and_unknown_names(tmp_path):
    path = write(tmp_path, "p.toml", "schema = = 1\n")
    with pytest.raises(UsageError, match=rf"^{path}: not valid TOML"):
        load_profile(path)
    with pytest.raises(UsageError, match=r"unknown profile 'tablet' \(built-in: mobile, smart-device"):
        load_profile("tablet")
    with pytest.raises(UsageError, match="no such profile file"):
        load_profile(tmp_path / "nope.toml")


def test_metadata_props_round_trip():
    profile = load_profile("mcu", ["accuracy.metric=top1", "accuracy.min=0.9", "latency.steady_state=30fps"])
    props = to_metadata_props(profile)
    assert all(key.startswith("edge.profile.") and isinstance(value, str) for key, value in props.items())
    assert props["edge.profile.memory.working_set"] == "512KiB"
    assert props["edge.profile.latency.steady_state"] == "30fps"
    assert props["edge.profile.data_locality.on_device"] == "true"
    assert from_metadata_props({"other": "x", **props}) == dataclasses.replace(profile, sources=("metadata_props",))
    assert from_metadata_props({"author": "me"}) is None


def test_metadata_props_survive_an_onnx_file(tmp_path):
    import onnx

    from tests.models import small_cnn

    model = small_cnn()
    onnx.helper.set_model_props(model, to_metadata_props(load_profile("smart-device")))
    onnx.save(model, tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert from_metadata_props(props).to_dict() == load_profile("smart-device").to_dict()


def test_bad_metadata_props_name_the_key():
    with pytest.raises(UsageError, match=r"^metadata_props 'edge.profile.memory.weights': field 'memory.weights': bad size"):
        from_metadata_props({"edge.profile.schema": "1", "edge.profile.memory.weights": "heavy"})
    with pytest.raises(UsageError, match=r"field 'latency.batch_size': expected a JSON value"):
        from_metadata_props({"edge.profile.schema": "1", "edge.profile.latency.batch_size": "one"})
    with pytest.raises(UsageError, match="field 'schema': missing"):
        from_metadata_props({"edge.profile.name": "x"})


def test_to_toml_reads_back(tmp_path):
    profile = load_profile("advanced-audio", ["memory.working_set=2GB"])
    path = write(tmp_path, "resolved.toml", profile.to_toml())
    again = load_profile(path)
    assert again.to_dict() == profile.to_dict()
    assert 'working_set = "2GB"' in profile.to_toml()
