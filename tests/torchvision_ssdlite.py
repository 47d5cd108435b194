"""torchvision's SSD-lite (``ssdlite320_mobilenet_v3_large``, random weights) exported by torch's
TorchScript exporter: the whole model, or its network alone (backbone and head: raw box
deltas and class logits, before the data-dependent post-processing).

PyPI's torchvision wheels are CUDA builds: next to the CPU build of torch their C extension
does not load (``libc10_cuda.so``), and without it torchvision does not import. The export
needs only the ``torchvision::nms`` op (for tracing; its ONNX symbolic is torchvision's own),
so when the extension is missing this defines that op with a plain CPU implementation and
skips the meta registrations of the others.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path


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


def _import_torchvision():
    import torch

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


def export_ssdlite(path: Path, whole: bool = True, calibrated: bool = False, score_thresh: float | None = None) -> Path:
    """``path`` holding the export: input ``image`` [3, 320, 320] (whole) or [1, 3, 320, 320] (network).

    Random weights make every class logit ~1e-15 whatever the image (the signal dies in the
    backbone): ``calibrated`` sets the batch norms' statistics from random images, so the
    scores and boxes follow the image. ``score_thresh`` replaces torchvision's 0.001."""
    import onnx
    import torch

    if importlib.util.find_spec("torchvision") is None:
        raise ImportError("torchvision is not installed (pip install torchvision)")
    torchvision = _import_torchvision()
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    if calibrated:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # a plain average over the calibration batches
                module.reset_running_stats()
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model.head(list(model.backbone(torch.rand(4, 3, 320, 320)).values()))
    if score_thresh is not None:
        model.score_thresh = score_thresh
    model.eval()

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.head = model.backbone, model.head

        def forward(self, image):
            head = self.head(list(self.backbone(image).values()))
            return head["bbox_regression"], head["cls_logits"]

    image = torch.rand(3, 320, 320)
    net, args, outputs = ((model, ([image],), ["boxes", "scores", "labels"]) if whole else
                          (Network(), (image[None],), ["bbox_regression", "cls_logits"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), input_names=["image"], output_names=outputs, opset_version=17,
                          dynamo=False)
    exported = onnx.load(path)
    exported.ir_version = min(exported.ir_version, 13)
    onnx.save(exported, path)
    return path
