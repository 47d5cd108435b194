"""torchvision's classification models (random weights) exported to ONNX, and the import
workaround every torchvision helper here shares.

PyPI's torchvision wheels are CUDA builds: next to the CPU build of torch their C extension
does not load (``libc10_cuda.so``), and without it torchvision does not import. The exports
need only the ``torchvision::nms`` op (for tracing SSD-lite; its ONNX symbolic is torchvision's
own), so when the extension is missing ``import_torchvision`` defines that op with a plain CPU
implementation and skips the meta registrations of the others.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

CLASSIFIERS = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet18", "convnext_tiny")
"""The torchvision architectures of the latency benchmark (issue #16)."""


def _nms(dets, scores, iou_threshold: float):
    """Greedy NMS on one set of boxes, [x1, y1, x2, y2]: the indices kept, best first."""
    import torch

    x1, y1, x2, y2 = dets.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    alive = torch.ones(len(scores), dtype=torch.bool)
    keep = []
    for i in torch.argsort(scores, descending=True).tolist():
        if alive[i]:
            keep.append(i)
            inter = ((torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
                     * (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0))
            alive &= ~(inter / (area[i] + area - inter) > iou_threshold)
    return torch.tensor(keep, dtype=torch.int64)


def _assert_has_ops() -> None:
    """torchvision's check for its C extension, satisfied by the nms defined here."""


def import_torchvision():
    """The torchvision module, importable next to torch's CPU build (see the module docstring)."""
    import torch

    if importlib.util.find_spec("torchvision") is None:
        raise ImportError("torchvision is not installed (pip install --no-deps torchvision, the release of this torch)")
    package = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0])
    extension = next(iter(package.glob("_C*.so")), None)
    try:
        if extension is not None:
            torch.ops.load_library(str(extension))
    except OSError:
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
        if not hasattr(torch.ops.torchvision, "nms"):
            torch.library.define("torchvision::nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            torch.library.impl("torchvision::nms", "CPU")(_nms)
        import torchvision.ops.boxes

        torchvision.ops.boxes._assert_has_ops = _assert_has_ops
    import torchvision

    return torchvision


def export_classifier(name: str, path: Path, seed: int = 0) -> Path:
    """``path`` holding torchvision's ``name`` (``weights=None``, torch's seeded default init), in
    eval mode, exported by ``torch.onnx.export``'s default exporter: input ``input`` [1, 3, 224, 224],
    output ``logits`` [1, 1000]."""
    import onnx
    import torch

    if name not in CLASSIFIERS:
        raise ValueError(f"unknown torchvision model {name!r}; one of {', '.join(CLASSIFIERS)}")
    torchvision = import_torchvision()
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, 224, 224),), str(path), input_names=["input"],
                          output_names=["logits"], verbose=False)
    exported = onnx.load(path)  # the dynamo exporter may keep weights in a side file; load gathers them
    exported.ir_version = min(exported.ir_version, 13)  # onnxruntime 1.31 refuses IR 14
    onnx.save(exported, path)
    return path
