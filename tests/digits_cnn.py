"""A small CNN trained on scikit-learn's 8x8 digits, exported to ONNX, for the profile acceptance tests.

Training is seeded and single-threaded so the same weights come out on every run,
and takes a few seconds on two cores. ``trained_digits`` caches the ``.onnx`` and
the held-out data in pytest's cache, keyed by the torch version and this file's
training settings, so later runs skip training.

The exporter is torch's TorchScript one (``dynamo=False``): the dynamo exporter
needs onnxscript, which edgec does not otherwise depend on.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SEED = 0
EPOCHS = 12
HELD_OUT = 0.3
INPUT = "image"
OUTPUT = "logits"
OPSET = 17


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x, train y, held-out x, held-out y); images scaled to [0, 1], shaped [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=HELD_OUT, random_state=SEED, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def build_net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )


def train(x: np.ndarray, y: np.ndarray):
    """Adam, minibatches of 32, a fixed shuffle per epoch: deterministic on CPU."""
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    net = build_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(SEED)
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), 32):
            batch = order[start : start + 32]
            optimizer.zero_grad()
            loss_fn(net(xs[batch]), ys[batch]).backward()
            optimizer.step()
    return net.eval()


def export(net, path: Path, dynamic_batch: bool = False) -> None:
    """Batch 1, static shapes (or a symbolic batch named ``batch``, as most exports have),
    TorchScript exporter; IR version kept within onnxruntime's reach."""
    import onnx
    import torch

    dynamic_axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # torch deprecates this exporter in favour of the onnxscript-based one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net, (torch.zeros(1, 1, 8, 8),), str(path), input_names=[INPUT], output_names=[OUTPUT],
            opset_version=OPSET, dynamo=False, dynamic_axes=dynamic_axes,
        )
    model = onnx.load(path)
    if model.ir_version > 13:
        model.ir_version = 13
        onnx.save(model, path)


def cache_key() -> str:
    import torch

    settings = f"{torch.__version__}|{SEED}|{EPOCHS}|{HELD_OUT}|{OPSET}|{build_net()}"
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def trained_digits(cache_dir: Path, dynamic_batch: bool = False) -> tuple[Path, Path]:
    """(model.onnx, held-out .npz with ``image`` [N, 1, 8, 8] and ``labels`` [N]); trained once per cache key.
    ``dynamic_batch``: the same weights exported with a symbolic batch dim."""
    folder = Path(cache_dir) / f"digits-{cache_key()}"
    static_path, dynamic_path = folder / "digits_cnn.onnx", folder / "digits_cnn_batch.onnx"
    model_path, data_path = dynamic_path if dynamic_batch else static_path, folder / "digits_heldout.npz"
    if static_path.is_file() and dynamic_path.is_file() and data_path.is_file():
        return model_path, data_path
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_split()
    logger.info("training the digits CNN on %d images", len(x_train))
    net = train(x_train, y_train)
    export(net, static_path)
    export(net, dynamic_path, dynamic_batch=True)
    np.savez(data_path, **{INPUT: x_test, "labels": y_test})
    return model_path, data_path


def digits_fixture(request, tmp_path_factory, dynamic_batch: bool = False) -> tuple[Path, Path]:
    """``trained_digits`` for a test fixture: skipped without torch or scikit-learn, trained once
    into pytest's cache (or a temp dir when the cache plugin is off)."""
    import pytest

    pytest.importorskip("torch", reason="the digits CNN is trained with torch==2.13.0 (pip install torch==2.13.0)")
    pytest.importorskip("sklearn", reason="the digits data set comes from scikit-learn")
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("edgec-digits") if cache is not None else tmp_path_factory.mktemp("digits-cache")
    return trained_digits(folder, dynamic_batch=dynamic_batch)
