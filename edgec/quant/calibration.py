"""Calibration for static quantization: the data, the statistics, and the calibrators.

Calibration data is an ``.npz`` with one array per model input, samples on the
first axis. Each array is either ``[N, *input_shape]`` (N whole inputs) or, when
the input's first dimension is a batch, ``[N, *input_shape[1:]]`` (N samples fed
in batches of the input's batch size). Every problem with the file is a
``UsageError`` that names the file, the input and what is wrong.

Statistics are collected by running the float graph with onnxruntime, every
tensor that needs a range exposed as an extra output. A first run over the data
gives each tensor's min and max; calibrators that need a histogram run the data
again into a histogram over ``[-amax, amax]``.

Values whose magnitude reaches ``mask_threshold`` (attention masks filled with
-1e9 or float32's minimum) are sentinels, not signal: they are left out of every
statistic, and counted so the quantize pass can keep such tensors unquantized.

Calibrators turn the statistics of one tensor into a range ``lo <= 0 <= hi``:
- ``minmax``: the observed range.
- ``percentile``: the ``(100-p)``-th and ``p``-th percentiles, read from the histogram.
- ``entropy``: TensorRT's KL-divergence threshold on the histogram of ``|x|``
  (every candidate threshold from ``levels`` bins up to all bins is tried, with
  the clipped mass folded into the last bin), clamped to the observed range.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:  # the command line reads CALIBRATORS without importing the IR (and onnx)
    from ..ir import Model

logger = logging.getLogger(__name__)

CALIBRATORS = ("minmax", "entropy", "percentile")


# -- the data --------------------------------------------------------------------------------


@dataclass
class CalibrationData:
    """Validated calibration arrays and how to cut them into model inputs."""

    path: Path
    arrays: dict[str, np.ndarray]
    batched: dict[str, bool]
    """Per input: True when the array holds samples ``[N, *shape[1:]]``, fed in batches."""
    batch_sizes: dict[str, int]
    samples: int

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """One feed dict per model run."""
        runs = {name: len(a) // self.batch_sizes[name] if self.batched[name] else len(a) for name, a in self.arrays.items()}
        for index in range(min(runs.values())):
            feed = {}
            for name, array in self.arrays.items():
                size = self.batch_sizes[name]
                feed[name] = array[index * size : (index + 1) * size] if self.batched[name] else array[index]
            yield feed


def matches(shape: tuple, expected: tuple) -> bool:
    """Does a concrete shape fit a declared one (symbolic or unknown dims match anything)?"""
    return len(shape) == len(expected) and all(not isinstance(e, int) or e == s for s, e in zip(shape, expected))


def load_calibration(path: Path, model: Model, flag: str = "--calib") -> CalibrationData:
    """Read and check ``path`` against ``model``'s inputs; every failure is one UsageError line
    starting with ``flag`` and the path."""
    from ..ir import numpy_dtype

    path = Path(path)
    where = f"{flag} {path}"
    if not path.is_file():
        raise UsageError(f"{where}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{where}: not a readable .npz ({exc})") from None
    inputs = model.graph.inputs
    missing = [v.name for v in inputs if v.name not in stored]
    if missing:
        found = ", ".join(sorted(stored)) or "no arrays"
        expected = ", ".join(v.name for v in inputs)
        raise UsageError(f"{where}: no array for input(s) {', '.join(missing)} (the file has {found}; the model's inputs are {expected})")
    extra = sorted(set(stored) - {v.name for v in inputs})
    if extra:
        logger.info("%s: ignoring arrays that are not model inputs: %s", where, ", ".join(extra))
    arrays, batched, batch_sizes = {}, {}, {}
    for value in inputs:
        array = stored[value.name]
        expected_dtype = numpy_dtype(value.dtype) if value.dtype else None
        if expected_dtype is not None and array.dtype != expected_dtype:
            raise UsageError(f"{where}: input '{value.name}' has dtype {array.dtype}, the model expects {expected_dtype}")
        shape = tuple(value.shape or ())
        if value.shape is not None and array.ndim == len(shape) + 1 and matches(array.shape[1:], shape):
            batched[value.name], batch_sizes[value.name] = False, 1
        elif value.shape and array.ndim == len(shape) and matches(array.shape[1:], shape[1:]):
            batched[value.name] = True
            batch_sizes[value.name] = shape[0] if isinstance(shape[0], int) else len(array)
        else:
            declared = "x".join(str(d) for d in shape)
            raise UsageError(f"{where}: input '{value.name}' has shape {list(array.shape)}; expected samples on the first "
                             f"axis: [N, {', '.join(map(str, shape))}] or [N, {', '.join(map(str, shape[1:]))}] (input is {declared})")
        if len(array) == 0:
            raise UsageError(f"{where}: input '{value.name}' has no samples (an empty calibration set)")
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array)
            if bad.any():
                first = int(np.argwhere(bad.reshape(len(array), -1).any(axis=1))[0, 0])
                raise UsageError(f"{where}: input '{value.name}' has {int(bad.sum())} NaN/Inf values (first in sample {first})")
        arrays[value.name] = array
    runs = {name: len(a) // batch_sizes[name] if batched[name] else len(a) for name, a in arrays.items()}
    if min(runs.values()) == 0:
        name = min(runs, key=runs.get)
        raise UsageError(f"{where}: input '{name}' has {len(arrays[name])} samples, fewer than one batch of {batch_sizes[name]}")
    if len(set(runs.values())) > 1:
        raise UsageError(f"{where}: inputs give different numbers of runs ({', '.join(f'{n}: {r}' for n, r in runs.items())})")
    return CalibrationData(path, arrays, batched, batch_sizes, min(runs.values()))


# -- statistics ------------------------------------------------------------------------------


@dataclass
class TensorStats:
    """What calibration saw of one tensor, sentinel values excluded."""

    lo: float = np.inf
    hi: float = -np.inf
    count: int = 0
    sentinels: int = 0
    """Values with magnitude at or above the mask threshold, left out of everything else."""
    histogram: np.ndarray | None = field(default=None, repr=False)
    """Counts over ``[-amax, amax]`` in ``2 * bins`` equal bins (amax = max(|lo|, |hi|))."""

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi), 0.0) if self.count else 0.0


def kept(array: np.ndarray, mask_threshold: float) -> tuple[np.ndarray, int]:
    """The finite-magnitude values of ``array`` and how many sentinels were dropped."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    keep = np.abs(flat) < mask_threshold
    return flat[keep], int(flat.size - keep.sum())


class StatsCollector:
    """Accumulates TensorStats over runs: ranges first, then (if asked) histograms."""

    def __init__(self, names: list[str], bins: int = 2048, mask_threshold: float = 1e4):
        self.stats = {name: TensorStats() for name in names}
        self.bins = bins
        self.mask_threshold = mask_threshold

    def observe_range(self, name: str, array: np.ndarray) -> None:
        values, sentinels = kept(array, self.mask_threshold)
        stats = self.stats[name]
        stats.sentinels += sentinels
        if values.size:
            stats.lo = min(stats.lo, float(values.min()))
            stats.hi = max(stats.hi, float(values.max()))
            stats.count += values.size

    def observe_histogram(self, name: str, array: np.ndarray) -> None:
        stats = self.stats[name]
        if stats.histogram is None:
            stats.histogram = np.zeros(2 * self.bins, dtype=np.int64)
        values, _ = kept(array, self.mask_threshold)
        amax = stats.amax
        if values.size and amax > 0:
            stats.histogram += np.histogram(values, bins=2 * self.bins, range=(-amax, amax))[0]


class Statistics:
    """Runs the float ONNX graph over the calibration data with onnxruntime.

    Construction runs the range pass over ``names``; ``add_histograms`` runs the data
    again for the tensors whose calibrator needs a histogram. Graph inputs are read
    from the feeds; every other name must be a node output and becomes an extra
    graph output of ``proto`` (which is modified)."""

    def __init__(self, proto, names: list[str], data: CalibrationData, bins: int = 2048, mask_threshold: float = 1e4):
        import onnx

        from ..frontend.reference import ort_session

        self.inputs = {i.name for i in proto.graph.input}
        outputs = {o.name for o in proto.graph.output}
        typed = {vi.name: vi for vi in proto.graph.value_info}
        for name in names:
            if name not in self.inputs and name not in outputs:
                proto.graph.output.append(typed.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.session = ort_session(proto.SerializeToString(), optimize=False)
        self.data = data
        self.collector = StatsCollector(list(names), bins, mask_threshold)
        self.stats = self.collector.stats
        self.run(list(names), self.collector.observe_range)

    def add_histograms(self, names: list[str]) -> None:
        self.run(list(names), self.collector.observe_histogram)

    def run(self, names: list[str], observe) -> None:
        wanted = [n for n in names if n not in self.inputs]
        for feed in self.data.feeds():
            results = dict(zip(wanted, self.session.run(wanted, feed))) if wanted else {}
            for name in names:
                observe(name, feed[name] if name in self.inputs else results[name])


# -- calibrators -----------------------------------------------------------------------------


def calibrate(stats: TensorStats, method: str, levels: int, percentile: float = 99.99) -> tuple[float, float]:
    """The range ``(lo, hi)``, with ``lo <= 0 <= hi``, that ``method`` picks for a tensor.

    ``levels`` is the number of quantized steps available (255 for 8 bits); the entropy
    calibrator uses half of them for signed tensors, all of them for non-negative ones."""
    if stats.count == 0:
        return 0.0, 0.0
    lo, hi = min(stats.lo, 0.0), max(stats.hi, 0.0)
    if method == "minmax":
        return lo, hi
    if stats.histogram is None:
        raise ValueError(f"calibrator {method!r} needs a histogram")
    amax = stats.amax
    if amax == 0:
        return 0.0, 0.0
    if method == "percentile":
        return percentile_range(stats.histogram, amax, percentile, lo, hi)
    if method == "entropy":
        magnitude = fold_histogram(stats.histogram)
        target = levels if stats.lo >= 0 else (levels + 1) // 2
        threshold = entropy_threshold(magnitude, amax, target)
        return max(lo, -threshold), min(hi, threshold)
    raise ValueError(f"unknown calibrator {method!r} (known: {', '.join(CALIBRATORS)})")


def fold_histogram(histogram: np.ndarray) -> np.ndarray:
    """The histogram of ``|x|`` over ``[0, amax]`` from one over ``[-amax, amax]``."""
    half = len(histogram) // 2
    return histogram[half:] + histogram[:half][::-1]


def percentile_range(histogram: np.ndarray, amax: float, percentile: float, lo: float, hi: float) -> tuple[float, float]:
    """The lower and upper percentiles, interpolated linearly inside their bins."""
    edges = np.linspace(-amax, amax, len(histogram) + 1)
    cdf = np.concatenate([[0], np.cumsum(histogram)]) / histogram.sum()

    def quantile(q: float) -> float:
        index = int(np.searchsorted(cdf, q, side="left"))
        index = min(max(index, 1), len(histogram))
        below, above = cdf[index - 1], cdf[index]
        fraction = 0.0 if above == below else (q - below) / (above - below)
        return float(edges[index - 1] + fraction * (edges[index] - edges[index - 1]))

    q = percentile / 100.0
    return max(lo, min(quantile(1.0 - q), 0.0)), min(hi, max(quantile(q), 0.0))


def entropy_threshold(histogram: np.ndarray, amax: float, levels: int) -> float:
    """TensorRT's calibration: the threshold whose clipped-and-quantized histogram is
    closest, in KL divergence, to the clipped reference.

    For each candidate ``i`` (bins kept), the reference ``P`` is the first ``i`` bins
    with all clipped mass added to the last; ``Q`` merges those ``i`` bins into
    ``levels`` groups and spreads each group's mass evenly over its non-empty bins."""
    bins = len(histogram)
    if bins <= levels:
        return amax
    counts = histogram.astype(np.float64)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = mass at or beyond bin i
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1):
        reference = counts[:i].copy()
        reference[i - 1] += tail[i]
        if reference.sum() == 0:
            continue
        group = (np.arange(i) * levels) // i  # which quantized bin each of the i bins merges into
        nonzero = counts[:i] > 0
        group_mass = np.bincount(group, weights=counts[:i], minlength=levels)
        group_bins = np.bincount(group, weights=nonzero, minlength=levels)
        expanded = np.where(nonzero, group_mass[group] / np.maximum(group_bins[group], 1), 0.0)
        kl = kl_divergence(reference, expanded)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return (best_i / bins) * amax


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P || Q) of two unnormalized histograms; Q's empty bins where P has mass are
    smoothed with a small epsilon, as TensorRT does."""
    p = p / p.sum()
    q_total = q.sum()
    if q_total == 0:
        return np.inf
    q = q / q_total
    support = p > 0
    q = np.where(support & (q == 0), 1e-8, q)
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def quant_params(lo: float, hi: float, unsigned: bool) -> tuple[np.float32, np.integer]:
    """Asymmetric 8-bit (scale, zero point) covering ``[lo, hi]`` (which contains 0)."""
    qmin, qmax = (0, 255) if unsigned else (-128, 127)
    scale = np.float32((hi - lo) / (qmax - qmin))
    if not scale > 0:
        scale = np.float32(1.0)
    zero = int(np.clip(np.round(qmin - lo / float(scale)), qmin, qmax))
    return scale, (np.uint8 if unsigned else np.int8)(zero)
