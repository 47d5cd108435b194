"""Calibrators on known distributions, and every kind of bad calibration data."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.errors import UsageError
from edgec.ir import parse_model
from edgec.quant.calibration import StatsCollector, calibrate, load_calibration, quant_params

BINS = 2048


def stats_of(values: np.ndarray, bins: int = BINS, mask_threshold: float = 1e4):
    """Range pass then histogram pass over ``values`` fed in ten chunks, as calibration does."""
    collector = StatsCollector(["t"], bins, mask_threshold)
    chunks = np.array_split(values, 10)
    for chunk in chunks:
        collector.observe_range("t", chunk)
    for chunk in chunks:
        collector.observe_histogram("t", chunk)
    return collector.stats["t"]


def test_minmax_is_the_observed_range_widened_to_zero():
    values = np.random.default_rng(0).uniform(0.5, 3.0, 10_000)
    stats = stats_of(values)
    assert calibrate(stats, "minmax", 255) == (0.0, values.max())
    signed = np.concatenate([values, [-1.25]])
    assert calibrate(stats_of(signed), "minmax", 255) == (-1.25, values.max())


def test_percentile_clips_at_the_quantile():
    values = np.random.default_rng(1).standard_normal(200_000)
    stats = stats_of(values)
    lo, hi = calibrate(stats, "percentile", 255, percentile=99.9)
    assert np.mean(values > hi) == pytest.approx(0.001, abs=2e-5)  # 4 of the 200 values above
    assert np.mean(values < lo) == pytest.approx(0.001, abs=2e-5)
    bin_width = stats.amax / BINS  # the tail holds about one value per bin, so allow a few bins
    assert hi == pytest.approx(np.percentile(values, 99.9), abs=3 * bin_width)
    assert lo == pytest.approx(np.percentile(values, 0.1), abs=3 * bin_width)
    assert hi < 0.8 * values.max()


def test_entropy_clips_an_outlier_heavy_distribution():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.standard_normal(200_000), [60.0, -55.0, 80.0] * 10])
    stats = stats_of(values)
    lo, hi = calibrate(stats, "entropy", 255)
    assert calibrate(stats, "minmax", 255) == (values.min(), values.max())
    # The bulk (|x| < 4 holds all but ~60 values) is kept; the outliers far above it are clipped.
    assert 2.5 < hi < 10.0 and -10.0 < lo < -2.5
    assert hi == -lo  # one symmetric threshold for a signed tensor


def test_entropy_keeps_the_range_of_a_uniform_distribution():
    values = np.random.default_rng(3).uniform(0.0, 4.0, 200_000)
    lo, hi = calibrate(stats_of(values), "entropy", 255)
    assert lo == 0.0 and hi > 0.9 * values.max()


def test_mask_sentinels_stay_out_of_every_statistic():
    values = np.concatenate([np.linspace(-2.0, 3.0, 1000), [-1e9, np.finfo(np.float32).min]])
    stats = stats_of(values)
    assert stats.sentinels == 2 and stats.count == 1000
    assert calibrate(stats, "minmax", 255) == (-2.0, 3.0)
    assert stats.histogram.sum() == 1000


def test_quant_params_cover_the_range_and_represent_zero_exactly():
    scale, zero = quant_params(-1.0, 2.0, unsigned=False)
    assert zero.dtype == np.int8 and scale == np.float32(3.0 / 255)
    assert -128 - zero == pytest.approx(-1.0 / scale, abs=0.5)
    scale, zero = quant_params(0.0, 5.0, unsigned=True)
    assert zero.dtype == np.uint8 and zero == 0 and scale == np.float32(5.0 / 255)
    assert quant_params(0.0, 0.0, unsigned=False) == (np.float32(1.0), np.int8(-128))


MODEL = """\
model ir_version=8 opset_import={"": 17} {
  input %image: float32[1,1,4,4]
  %y = Relu(%image) : float32[1,1,4,4]
  output %y
}
"""


@pytest.fixture
def model():
    return parse_model(MODEL)


def test_samples_whole_or_batched(model, tmp_path):
    np.savez(tmp_path / "whole.npz", image=np.zeros((5, 1, 1, 4, 4), np.float32))
    np.savez(tmp_path / "batched.npz", image=np.zeros((7, 1, 4, 4), np.float32), labels=np.arange(7))
    whole = load_calibration(tmp_path / "whole.npz", model)
    batched = load_calibration(tmp_path / "batched.npz", model)
    assert whole.samples == 5 and [f["image"].shape for f in whole.feeds()] == [(1, 1, 4, 4)] * 5
    assert batched.samples == 7 and [f["image"].shape for f in batched.feeds()] == [(1, 1, 4, 4)] * 7


@pytest.mark.parametrize("arrays, message", [
    ({"img": np.zeros((3, 1, 4, 4), np.float32)}, "no array for input(s) image (the file has img"),
    ({"image": np.zeros((3, 1, 5, 4), np.float32)}, "input 'image' has shape [3, 1, 5, 4]"),
    ({"image": np.zeros((3, 1, 4, 4), np.float64)}, "input 'image' has dtype float64, the model expects float32"),
    ({"image": np.zeros((0, 1, 4, 4), np.float32)}, "input 'image' has no samples"),
    ({"image": np.full((3, 1, 4, 4), np.nan, np.float32)}, "input 'image' has 48 NaN/Inf values (first in sample 0)"),
])
def test_bad_data_is_one_usage_error_naming_file_and_input(model, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError) as caught:
        load_calibration(tmp_path / "bad.npz", model)
    assert str(caught.value).startswith(f"--calib {tmp_path / 'bad.npz'}: ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_inf_in_a_later_sample_is_found(model, tmp_path):
    data = np.zeros((4, 1, 4, 4), np.float32)
    data[2, 0, 1, 1] = np.inf
    np.savez(tmp_path / "inf.npz", image=data)
    with pytest.raises(UsageError, match=r"1 NaN/Inf values \(first in sample 2\)"):
        load_calibration(tmp_path / "inf.npz", model)


def test_missing_and_unreadable_files(model, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_calibration(tmp_path / "absent.npz", model)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        load_calibration(tmp_path / "junk.npz", model)
