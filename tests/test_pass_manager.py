"""Pipelines, the pass manager and its instruments."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from edgec.compiler.instruments import CrashReproducer, DumpIRInstrument, PrintIRInstrument, StatisticsInstrument, TimingInstrument
from edgec.compiler.pass_manager import PASS_REGISTRY, Pass, PassError, PassManager, PassResult, Pipeline, register_pass
from edgec.errors import UsageError
from edgec.frontend.importer import import_proto, load_model
from edgec.ir import Model, parse_model
from tests.models import small_cnn

DEFAULT = "remove-identity,fold-constants,fold-batchnorm,fold-conv-affine,eliminate-dead,reorder-for-memory"


@pytest.mark.parametrize(
    "text",
    [DEFAULT, "fold-constants{size-limit=64MiB},eliminate-dead", "eliminate-dead,eliminate-dead", "fold-constants{size-limit=1000}"],
)
def test_pipelines_round_trip(text):
    pipeline = Pipeline.parse(text)
    assert str(pipeline) == text
    assert str(Pipeline.parse(str(pipeline))) == text


def test_pipeline_normalizes_spacing_and_default_options():
    assert str(Pipeline.parse(" fold-constants{ size-limit=1GiB } , eliminate-dead ")) == "fold-constants,eliminate-dead"
    assert Pipeline.parse("fold-constants{size-limit=2KiB}").passes[0].options.size_limit == 2048


@pytest.mark.parametrize(
    "text, message",
    [
        ("fold-everything", "unknown pass 'fold-everything'"),
        ("fold-constants{limit=3}", "pass 'fold-constants' has no option 'limit' .options: size-limit"),
        ("fold-constants{size-limit=lots}", "option 'size-limit': bad size 'lots'"),
        ("fold-constants{size-limit=-5MiB}", "is negative"),
        ("eliminate-dead,,", "cannot parse"),
    ],
)
def test_pipeline_errors_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        Pipeline.parse(text)


def cnn() -> Model:
    return import_proto(small_cnn())


def test_timing_statistics_and_print_ir_instruments():
    stream = io.StringIO()
    instruments = [
        PrintIRInstrument(stream, after_all=True),
        TimingInstrument(stream),
        StatisticsInstrument(stream),
    ]
    PassManager(Pipeline.parse(DEFAULT), instruments).run(cnn())
    report = stream.getvalue()
    for name in DEFAULT.split(","):
        assert f"// -----// IR Dump After {name}" in report
        assert f"  {name}\n" in report  # a timing row
    assert "Execution time report" in report and "Total Execution Time" in report
    assert "'remove-identity'\n  (S)      1 removed-identity\n  (S)      1 removed-dropout" in report
    assert "(S)      1 folded-into-conv" in report


def test_print_ir_after_one_pass_and_after_change():
    stream = io.StringIO()
    PassManager(Pipeline.parse(DEFAULT), [PrintIRInstrument(stream, after={"fold-batchnorm"})]).run(cnn())
    assert stream.getvalue().count("IR Dump After") == 1
    stream = io.StringIO()
    # fold-constants has nothing to fold in this model, so it is not printed.
    PassManager(Pipeline.parse(DEFAULT), [PrintIRInstrument(stream, after_change=True)]).run(cnn())
    assert "After fold-constants" not in stream.getvalue() and "After fold-batchnorm" in stream.getvalue()


def test_dump_ir_dir_writes_numbered_files(tmp_path):
    PassManager(Pipeline.parse(DEFAULT), [DumpIRInstrument(tmp_path / "ir")]).run(cnn())
    names = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert names == ["000_input.txt", "001_remove-identity.txt", "002_fold-constants.txt",
                     "003_fold-batchnorm.txt", "004_fold-conv-affine.txt", "005_eliminate-dead.txt",
                     "006_reorder-for-memory.txt"]
    assert "BatchNormalization" in (tmp_path / "ir" / "000_input.txt").read_text()
    assert "BatchNormalization" not in (tmp_path / "ir" / "003_fold-batchnorm.txt").read_text()


@pytest.fixture
def exploding_pass():
    @register_pass
    class Explode(Pass):
        name = "test-explode"

        def call(self, model):
            raise ValueError("boom")

    yield Explode
    del PASS_REGISTRY["test-explode"]


def test_failure_names_the_pass_and_history_and_writes_a_reproducer(tmp_path, exploding_pass):
    pipeline = Pipeline.parse("remove-identity,fold-batchnorm,test-explode,eliminate-dead")
    stream = io.StringIO()
    instruments = [CrashReproducer(tmp_path / "crash"), PrintIRInstrument(stream, after_failure=True)]
    with pytest.raises(PassError, match=r"ValueError: boom in pass 'test-explode' after: remove-identity, fold-batchnorm"):
        PassManager(pipeline, instruments).run(cnn())
    crash = tmp_path / "crash"
    assert (crash / "pipeline.txt").read_text().strip() == str(pipeline)
    assert "Identity" in (crash / "input.txt").read_text()  # the input, before any pass ran
    replayed = load_model(crash / "input.onnx")
    assert [n.op_type for n in replayed.graph.nodes] == [n.op_type for n in cnn().graph.nodes]
    assert "edgec opt" in (crash / "replay.sh").read_text()
    assert "IR Dump After test-explode Failed" in stream.getvalue()


def test_verifier_runs_after_each_pass():
    @register_pass
    class Corrupt(Pass):
        name = "test-corrupt"

        def call(self, model):
            model.graph.nodes.reverse()
            return PassResult(model, modified=True)

    try:
        with pytest.raises(PassError, match="before it is defined .* in pass 'test-corrupt' after: \\(none\\)"):
            PassManager(Pipeline.parse("test-corrupt")).run(cnn())
        PassManager(Pipeline.parse("test-corrupt"), verify_each=False).run(cnn())
    finally:
        del PASS_REGISTRY["test-corrupt"]


def test_in_place_declaration_is_checked():
    @register_pass
    class Liar(Pass):
        name = "test-liar"
        in_place = True

        @dataclass
        class Options:
            pass

        def call(self, model):
            return PassResult(parse_model("model ir_version=8 opset_import={\"\": 17} {\n}\n"), modified=True)

    try:
        with pytest.raises(PassError, match="declared in-place but returned a new model"):
            PassManager(Pipeline.parse("test-liar")).run(cnn())
    finally:
        del PASS_REGISTRY["test-liar"]


def test_error_diagnostics_fail_the_pipeline():
    from edgec.compiler.pass_manager import Diagnostic

    @register_pass
    class Complain(Pass):
        name = "test-complain"

        def call(self, model):
            return PassResult(model, False, diagnostics=[Diagnostic("error", "cannot handle this", "node 'n1' (Foo)")])

    try:
        with pytest.raises(PassError, match=r"error: node 'n1' \(Foo\): cannot handle this in pass 'test-complain'"):
            PassManager(Pipeline.parse("test-complain")).run(cnn())
    finally:
        del PASS_REGISTRY["test-complain"]



@pytest.mark.parametrize("error, code", [("UsageError", 2), ("ProfileViolation", 3)])
def test_a_user_facing_error_in_a_pass_keeps_its_type_and_exit_code(error, code):
    """A pass that finds the command line wrong (or the profile unmet) says so with the CLI's
    exit code for that, not the compile error's 1; the pass and history are still named."""
    import edgec.errors

    raised = getattr(edgec.errors, error)

    @register_pass
    class Refuse(Pass):
        name = "test-refuse"

        def call(self, model):
            raise raised("quantize needs calibration data")

    try:
        with pytest.raises(raised, match="^quantize needs calibration data in pass 'test-refuse' after: remove-identity") as info:
            PassManager(Pipeline.parse("remove-identity,test-refuse")).run(cnn())
        assert info.value.exit_code == code
    finally:
        del PASS_REGISTRY["test-refuse"]
