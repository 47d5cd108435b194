"""The accuracy budget: revert the layers most sensitive to quantization to float until
the quantized model is within the allowed drop (what NNCF's accuracy control and Intel
Neural Compressor's tuning do).

1. The float model and the quantized one run in onnxruntime with graph optimizations
   off (the QDQ graph's meaning, which edgec's integer kernels match to 1 LSB) over the
   data; the metric compares their outputs with the data's ``labels`` (top-k) or, for
   the other metrics, with the float model's outputs.
2. When the drop is over budget, each quantized op is ranked by SQNR: the model with
   only that op quantized, its outputs against the float model's,
   ``10 log10(sum f^2 / sum (f - q)^2)``. The lowest SQNR is the most sensitive.
3. Ops go back to float (the quantize pass's ``exclude``) in that order, one at a
   time, measuring again after each, until the drop fits.

The budget is ``--max-drop`` (or the profile's ``accuracy.max_drop``), and the profile's
absolute bound (``accuracy.min``, or ``accuracy.max`` for lower-is-better metrics) when
its metric is the one measured: the stricter of the two applies.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..frontend.exporter import export_model
from ..frontend.importer import convert_model
from ..ir import Model
from ..profiles.profile import METRICS, Profile
from .calibration import load_calibration

logger = logging.getLogger(__name__)

NOT_MET = "the budget is not met even with every quantized op reverted"


@dataclass(frozen=True)
class Budget:
    """What the quantized model must keep, and the data it is measured on."""

    data: Path
    metric: str
    max_drop: float | None
    bound: float | None = None
    """The profile's absolute accuracy.min (accuracy.max for lower-is-better metrics)."""

    def allowed_drop(self, float_value: float) -> float:
        limits = [self.max_drop] if self.max_drop is not None else []
        if self.bound is not None:
            limits.append(drop(self.metric, float_value, self.bound))
        return min(limits)

    def to_dict(self) -> dict:
        return {"data": self.data.name, "metric": self.metric, "max_drop": self.max_drop, "bound": self.bound}


def resolve_budget(data: Path | None, metric: str | None, max_drop: float | None, profile: Profile | None) -> Budget | None:
    """The budget from the flags and the profile's accuracy section (flags win); None without ``--data``."""
    accuracy = profile.accuracy if profile else None
    metric = metric or (accuracy.metric if accuracy else None) or "top1"
    if metric not in METRICS:
        raise UsageError(f"unknown metric '{metric}' (known: {', '.join(METRICS)})")
    bound = None
    if accuracy is not None and data is not None and accuracy.metric == metric:
        bound = accuracy.min if METRICS[metric] == "higher" else accuracy.max
        max_drop = accuracy.max_drop if max_drop is None else max_drop
    if (data is None and max_drop is not None) or (data is not None and max_drop is None and bound is None):
        raise UsageError("--data and --max-drop (or a profile's accuracy.max_drop or accuracy.min) go together: "
                         "the accuracy budget needs both")
    if data is None:
        return None
    if not Path(data).is_file():
        raise UsageError(f"--data {data}: no such file")
    return Budget(Path(data), metric, max_drop, bound)


@dataclass
class BudgetResult:
    model: Model
    """The quantized model that meets the budget (or the float-most one tried)."""
    metric: str
    float_value: float
    quantized_value: float
    max_drop: float
    """The allowed drop: ``--max-drop``, or less where the profile's absolute bound is stricter."""
    first_value: float
    """The metric with every op quantized, before any revert."""
    reverted: list[str] = field(default_factory=list)
    sqnr_db: dict[str, float] = field(default_factory=dict)
    """Per quantized op, measured only when the first try missed the budget."""

    @property
    def drop(self) -> float:
        return drop(self.metric, self.float_value, self.quantized_value)

    @property
    def met(self) -> bool:
        return self.drop <= self.max_drop

    def why(self, name: str) -> str:
        """Why ``name`` is in float, for the per-layer report."""
        return f"accuracy budget (SQNR {self.sqnr_db[name]:.1f} dB quantized alone)"

    def summary(self) -> list[str]:
        lines = [(f"{self.metric}: float {self.float_value:.4g}, all quantized {self.first_value:.4g}, "
                  f"kept {self.quantized_value:.4g} (drop {self.drop:.4g}, budget {self.max_drop:g})")]
        return lines + [f"kept in float: {name} (SQNR {self.sqnr_db[name]:.1f} dB alone)" for name in self.reverted]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "float": self.float_value, "quantized": self.quantized_value,
                "all_quantized": self.first_value, "max_drop": self.max_drop, "met": self.met,
                "kept_float": [{"node": name, "sqnr_db": round(self.sqnr_db[name], 2),
                                "why": "lowest SQNR, reverted to meet the accuracy budget"} for name in self.reverted]}


def drop(metric: str, reference: float, value: float) -> float:
    return reference - value if METRICS[metric] == "higher" else value - reference


def sqnr_db(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> float:
    signal = sum(float(np.sum(np.square(reference[n].astype(np.float64)))) for n in reference)
    noise = sum(float(np.sum(np.square(reference[n].astype(np.float64) - actual[n]))) for n in reference)
    return ratio_db(signal, noise)


def ratio_db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, np.finfo(np.float64).tiny) / noise)


def session(model: Model, extra_outputs: tuple[str, ...] = ()):
    """An onnxruntime session of ``model`` with graph optimizations off, and ``extra_outputs``
    (node outputs) exposed."""
    import onnx

    from ..frontend.reference import ort_session

    proto = export_model(model)
    typed = {vi.name: vi for vi in proto.graph.value_info}
    for name in extra_outputs:
        proto.graph.output.append(typed.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort_session(proto.SerializeToString(), optimize=False)


def run_all(model: Model, data) -> dict[str, np.ndarray]:
    """Every output over the data, in onnxruntime with graph optimizations off."""
    runner = session(model)
    names = [o.name for o in runner.get_outputs()]
    parts: dict[str, list] = {name: [] for name in names}
    for feed in data.feeds():
        for name, value in zip(names, runner.run(None, feed)):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def fit_budget(prepared: Model, options, budget: Budget) -> BudgetResult:
    """Quantize ``prepared`` (a float model after the passes before quantize) with the quantize
    pass's ``options``, then revert ops to float by SQNR until the budget holds."""
    from ..passes.quantize import Quantize, node_key
    from ..profiles.compliance import expected_values, metric_value

    metric = budget.metric
    data = load_calibration(budget.data, prepared, flag="--data")
    with np.load(budget.data) as npz:
        arrays = {name: npz[name] for name in npz.files}
    user_excluded = options.excluded
    sites = [node_key(n) for n in prepared.graph.nodes
             if Quantize.find_site(n) is not None and node_key(n) not in user_excluded]

    def quantized(excluded: list[str]) -> Model:
        copy = convert_model(export_model(prepared))
        settings = dataclasses.replace(options, exclude=";".join([*user_excluded, *excluded]))
        return Quantize(settings)(copy).model

    reference = run_all(prepared, data)
    expected, _ = expected_values(metric, arrays, reference, reference)
    float_value = metric_value(metric, reference, expected)
    max_drop = budget.allowed_drop(float_value)

    def measure(model: Model) -> float:
        return metric_value(metric, run_all(model, data), expected)

    model = quantized([])
    value = measure(model)
    result = BudgetResult(model, metric, float_value, value, max_drop, value)
    logger.info("%s: float %.4g, quantized %.4g (drop %.4g, budget %.4g)", metric, float_value, value,
                result.drop, max_drop)
    if result.drop <= max_drop:
        return result
    for site in sites:
        only = quantized([s for s in sites if s != site])
        result.sqnr_db[site] = sqnr_db(reference, run_all(only, data))
    for site in sorted(sites, key=lambda s: result.sqnr_db[s]):
        result.reverted.append(site)
        result.model = quantized(result.reverted)
        result.quantized_value = measure(result.model)
        logger.info("reverted %s (SQNR %.1f dB): %s %.4g", site, result.sqnr_db[site], metric, result.quantized_value)
        if result.drop <= max_drop:
            break
    return result
