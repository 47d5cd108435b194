"""torchvision's SSD-lite (``ssdlite320_mobilenet_v3_large``, random weights) exported by torch's
TorchScript exporter: the whole model, or its network alone (backbone and head: raw box
deltas and class logits, before the data-dependent post-processing).

torchvision is imported through ``tests.torchvision_models.import_torchvision``, which works
around PyPI's CUDA build of torchvision next to the CPU build of torch.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from tests.torchvision_models import import_torchvision as _import_torchvision


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
