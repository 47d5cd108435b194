"""ONNX's node conformance tests through ``edgec.conformance.backend``.

The cases are generated from ``onnx.backend.test.case.node`` (``edgec.conformance.cases``)
into pytest's cache directory, once per onnx version. ``conformance_expected_failures.txt``
lists every test edgec fails, with its reason class: a listed test that passes, or fails
for another class, and an unlisted test that fails, both fail here, so the list stays
true. The default run takes a fixed sample, the first test of each op in name order;
``-m slow`` the next two of each op; ``-m long`` the rest (all three: the whole suite;
``benchmarks/conformance.py`` measures it against raw TVM and onnxruntime).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest

from edgec.conformance.backend import EdgecBackend
from edgec.conformance.cases import REASON_CLASSES, classify, compare, generate
from edgec.errors import CompileError

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
    """The generated node tests, in pytest's cache (or a temp dir when the cache plugin is off)."""
    cache = getattr(config, "cache", None)
    folder = cache.mkdir("onnx-node-tests") if cache is not None else Path(tempfile.gettempdir()) / "edgec-onnx-node-tests"
    return generate(Path(folder))


def sample(cases, per_op: int = 1) -> list:
    """The first ``per_op`` tests of each op, by name: every op, the same tests every run."""
    taken: dict[str, list] = {}
    for case in cases:
        if len(taken.setdefault(case.op, [])) < per_op:
            taken[case.op].append(case)
    return sorted((c for group in taken.values() for c in group), key=lambda c: c.name)


FIXED = (
    "test_layer_normalization_2d_axis0", "test_isinf_negative", "test_isinf_positive", "test_convtranspose_output_shape",
    "test_bitshift_left_int32_shift_ge_width", "test_bitshift_right_int8_negative_input", "test_spacetodepth_crd_mode_example",
    "test_attention_causal_boolmask_nan_robustness", "test_attention_4d_fp16", "test_attention_3d", "test_pow_types_int32_int32",
    "test_shape_start_1", "test_rms_normalization_2d_axis0", "test_slice", "test_unsqueeze_axis_0", "test_celu",
    "test_nllloss_NC", "test_cast_e8m0_FLOAT8E8M0_to_FLOAT", "test_mod_float_edge_cases_fmod_0_float32",
    "test_scatternd", "test_maxunpool_export_without_output_shape", "test_l2normalization_axis_0",
    "test_lstm_with_peepholes", "test_gru_seq_length", "test_gru_batchwise", "test_simple_rnn_bidirectional",
    "test_qlinearmatmul_3D_int8_float16", "test_reversesequence_batch", "test_dropout_default_mask",
    "test_expand_dim_changed", "test_mvn", "test_optional_has_element_optional_input",
    "test_training_dropout_zero_ratio_mask",
    "test_resize_downsample_scales_linear", "test_resize_downsample_scales_cubic_antialias",
    "test_resize_downsample_scales_linear_align_corners", "test_resize_upsample_scales_linear_half_pixel_symmetric",
    "test_resize_upsample_sizes_nearest_axes_3_2", "test_resize_downsample_sizes_nearest_not_larger",
    "test_resize_tf_crop_and_resize_axes_2_3", "test_onehot_with_negative_axis", "test_split_zero_size_splits_opset18",
    "test_reduce_max_bool_inputs", "test_reduce_min_bool_inputs", "test_cumprod_1d_reverse_exclusive", "test_cumprod_2d_axis_0",
    "test_eyelike_with_dtype", "test_nonzero_example",
)
"""Tests edgec once failed, crashed on or got wrong (fixed in targets/onnx_rewrites.py, resize.py and
cpu_schedules.py): in the default run whatever the sample holds."""
REFUSED = {
    "test_batchnorm_example_training_mode": "training mode", "test_roialign_mode_max": "max mode",
    "test_cast_FLOAT_to_FLOAT8E4M3FN": "float8e4m3fn tensor",
    "test_cast_FLOAT_to_INT4": "int4 tensor",
    "test_split_to_sequence_1": "is not a tensor",
}
"""Tests whose op edgec refuses in one line naming the node, instead of a wrong result or a crash."""


def pytest_generate_tests(metafunc):
    """One test per op in the default run, up to three per op under ``slow``, the rest under ``long``."""
    if "node_case" in metafunc.fixturenames:
        cases = all_cases(metafunc.config)
        default = {c.name for c in sample(cases)}
        slow = {c.name for c in sample(cases, per_op=3)} - default
        metafunc.parametrize("node_case", [
            pytest.param(c, id=c.name, marks=() if c.name in default else pytest.mark.slow if c.name in slow
                         else pytest.mark.long) for c in cases])


def outcome(case) -> tuple[str | None, str]:
    """(None, '') when edgec matches the reference, else (reason class, message)."""
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
    names = {c.name for c in all_cases(request.config)}
    listed = read_expected_failures()
    assert sorted(set(listed) - names) == []
    assert sorted({k for k in listed.values()} - set(REASON_CLASSES)) == []


def test_sample_covers_every_op(request):
    cases = all_cases(request.config)
    assert {c.op for c in sample(cases)} == {c.op for c in cases}
    assert len(cases) == 1404  # onnx 1.23's single-node tests; a new onnx changes this on purpose


@pytest.mark.parametrize("name", FIXED)
def test_fixed(request, name):
    case = next(c for c in all_cases(request.config) if c.name == name)
    assert outcome(case) == (None, "")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_the_node(request, name):
    case = next(c for c in all_cases(request.config) if c.name == name)
    model = case.load()[0]
    node = model.graph.node[0]
    with pytest.raises(CompileError) as refusal:
        EdgecBackend.prepare(model)
    text = str(refusal.value)
    assert "\n" not in text and REFUSED[name] in text
    assert f"'{node.name or node.output[0]}'" in text and (node.op_type in text or "graph output" in text)


def test_backend_runs_on_the_cpu_only():
    assert EdgecBackend.supports_device("CPU") and not EdgecBackend.supports_device("CUDA")


def test_backend_takes_inputs_by_position_or_name(request):
    case = next(c for c in all_cases(request.config) if c.name == "test_add")
    model, inputs, expected = case.load()
    rep = EdgecBackend.prepare(model)
    names = [v.name for v in model.graph.input]
    for outputs in (rep.run(inputs), rep.run(dict(zip(names, inputs)))):
        assert compare(expected, list(outputs)) is None
