"""ONNX's node conformance tests: generated data, output comparison, failure classes.

onnx >= 1.20 ships the node tests as code (``onnx.backend.test.case.node``), not data.
``generate`` runs those generators once, as onnx's own runner does, and writes each
single-node case (``_expanded`` function bodies left out) in onnx's on-disk layout,
``DIR/node/NAME/model.onnx`` and ``test_data_set_0/{input,output}_N.pb``, so the
tests and ``benchmarks/conformance.py`` judge every backend on the same bytes.

Outputs are compared as onnx's runner does, dtype included, with rtol 1e-3, atol 1e-4,
NaNs equal, integers and booleans exact. An edgec failure gets one reason class
(``classify``), which the expected-failures file records.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

RTOL, ATOL = 1e-3, 1e-4
STAMP = "generated.json"
"""Written last into a generated directory: its onnx version says the data is complete and current."""


@dataclass
class Case:
    name: str
    op: str
    directory: Path

    @property
    def model_path(self) -> Path:
        return self.directory / "model.onnx"

    def load(self) -> tuple[onnx.ModelProto, list, list]:
        """The model, its inputs and its reference outputs (sequences as lists, optionals as None/value)."""
        model = onnx.load(str(self.model_path))
        data = self.directory / "test_data_set_0"
        inputs = [read_value(data / f"input_{i}.pb", v.type) for i, v in enumerate(model.graph.input)
                  if (data / f"input_{i}.pb").exists()]
        outputs = [read_value(data / f"output_{i}.pb", v.type) for i, v in enumerate(model.graph.output)]
        return model, inputs, outputs


def generate(directory: Path) -> list[Case]:
    """Write every single-node case under ``directory`` (once per onnx version) and list them."""
    directory = Path(directory)
    stamp = directory / STAMP
    if not stamp.exists() or json.loads(stamp.read_text()).get("onnx") != onnx.__version__:
        import warnings

        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings(), np.errstate(all="ignore"):  # the generators divide by zero on purpose
            warnings.simplefilter("ignore")
            cases = [c for c in collect_testcases() if "_expanded" not in c.name]
        for case in cases:
            write_case(directory / "node" / case.name, case.model, *case.data_sets[0])
        stamp.write_text(json.dumps({"onnx": onnx.__version__, "cases": len(cases)}))
    return list_cases(directory)


def list_cases(directory: Path) -> list[Case]:
    cases = []
    for path in sorted((Path(directory) / "node").iterdir()):
        graph = onnx.load(str(path / "model.onnx"), load_external_data=False).graph
        cases.append(Case(path.name, graph.node[0].op_type, path))
    return cases


def write_case(directory: Path, model: onnx.ModelProto, inputs, outputs) -> None:
    data = directory / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    for kind, values, infos in (("input", inputs, model.graph.input), ("output", outputs, model.graph.output)):
        for i, (value, info) in enumerate(zip(values, infos)):
            (data / f"{kind}_{i}.pb").write_bytes(value_proto(value, info).SerializeToString())


def value_proto(value, info: onnx.ValueInfoProto):
    """``value`` serialized the way onnx's data generator does for the value's declared type."""
    kind = info.type.WhichOneof("value")
    if kind == "sequence_type":
        return numpy_helper.from_list(value, info.name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, info.name)
    if kind == "map_type":
        return numpy_helper.from_dict(value, info.name)
    if isinstance(value, onnx.TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), info.name)


def read_value(path: Path, type_proto: onnx.TypeProto):
    kind = type_proto.WhichOneof("value")
    data = path.read_bytes()
    proto = {"sequence_type": onnx.SequenceProto, "optional_type": onnx.OptionalProto,
             "map_type": onnx.MapProto}.get(kind, onnx.TensorProto)()
    proto.ParseFromString(data)
    if kind == "sequence_type":
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        return numpy_helper.to_dict(proto)
    return numpy_helper.to_array(proto)


def mismatch(expected, actual) -> str | None:
    """None when ``actual`` matches ``expected`` (same dtype, as onnx's runner asks; rtol 1e-3,
    atol 1e-4, NaNs equal, ints exact), else what differs, in one line."""
    if isinstance(expected, list) or expected is None:
        if not isinstance(actual, list) and actual is not None:
            return f"expected a {'sequence' if isinstance(expected, list) else 'missing optional'}, got a tensor"
        if expected is None or actual is None:
            return None if expected is actual else "optional presence differs"
        if len(expected) != len(actual):
            return f"sequence length {len(actual)}, expected {len(expected)}"
        return next((m for e, a in zip(expected, actual) if (m := mismatch(e, a))), None)
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype and not (expected.dtype.kind in "OUS" and actual.dtype.kind in "OUS"):
        return f"dtype {actual.dtype}, expected {expected.dtype}"
    if expected.shape != actual.shape:
        return f"shape {list(actual.shape)}, expected {list(expected.shape)}"
    if expected.dtype.kind in "OUS" or actual.dtype.kind in "OUS":
        return None if np.array_equal(expected.astype(object), actual.astype(object)) else "strings differ"
    if expected.dtype.kind in "iub":
        if not np.array_equal(expected, actual):
            return f"{int(np.sum(expected != actual))} of {expected.size} integer elements differ"
        return None
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    close = np.isclose(a, e, rtol=RTOL, atol=ATOL, equal_nan=True)
    if close.all():
        return None
    worst = np.nanmax(np.abs(np.where(close, 0, np.nan_to_num(a - e, nan=np.inf))))
    return f"{int((~close).sum())} of {e.size} elements differ (max abs diff {worst:.3g})"


def compare(expected: list, actual: list) -> str | None:
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        if (problem := mismatch(e, a)) is not None:
            return f"output {i}: {problem}"
    return None


REASON_CLASSES = {
    "wrong result": "the outputs differ from the reference",
    "internal error": "an exception that is not one of edgec's errors (a bug)",
    "op not supported": "TVM's frontend or edgec refuses the op",
    "shape decided at run time": "an output or intermediate shape depends on input values",
    "dtype not supported": "an input or output dtype the lowering cannot take",
    "0-d tensor": "a 0-d (scalar) input, output or constant",
    "sequence or optional": "ONNX sequence, optional or map values",
    "refused": "a one-line refusal naming the op, the node and the reason",
    "timeout": "did not finish in the time limit",
    "crash": "the process died",
}

ZERO_D = re.compile(r"0-d|ndim 0 but get|expected 0 dim|rank 0|scalar", re.I)


def classify(error: BaseException | None, model: onnx.ModelProto) -> str:
    """The reason class of one edgec failure; ``error`` None means the outputs were wrong."""
    from ..errors import EdgecError

    if error is None:
        return "wrong result"
    text = f"{error}"
    graph = model.graph
    if any(v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape") and not v.type.tensor_type.shape.dim
           for v in [*graph.input, *graph.output]) and ZERO_D.search(text):
        return "0-d tensor"
    if not isinstance(error, EdgecError):
        return "internal error"
    if any(v.type.WhichOneof("value") != "tensor_type" for v in [*graph.input, *graph.output]):
        return "sequence or optional"
    if re.search(r"tensor '[^']*' is not supported|dtype|data ?type|float8|bfloat16|float4|int4|uint4|string|complex", text, re.I):
        return "dtype not supported"
    if re.search(r"run time|symbolic|dynamic|only constant|must be (a )?constant|non-constant|ShapeExpr|tirx?\.|expr\.Var|Var'? "
                 r"|relax\.TensorType|has not been computed", text, re.I):
        return "shape decided at run time"
    if re.search(r"not (yet )?(supported|implemented)|OpNotImplemented|no converter|unsupported op", text, re.I):
        return "op not supported"
    return "refused"
