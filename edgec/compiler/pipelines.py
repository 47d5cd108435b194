"""The pass pipelines edgec runs, defined once.

Named pipelines, in the spirit of TVM's ``relax.get_pipeline(name)`` and MLIR's registered
pipelines, are built from phases. A step that needs its own place (quantization before the
memory passes, partitioning at the end) inserts itself at a named point, so ``edgec quantize``
followed by ``edgec compile`` runs the same passes as ``edgec compile --calib``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line reads DEFAULT_PIPELINE without importing the passes (and onnx)
    from .pass_manager import PassSpec, Pipeline

CLEANUP = ("remove-identity", "fold-constants", "fold-batchnorm", "fold-conv-affine", "eliminate-dead")
"""Graph clean-ups every compile runs first; quantization calibrates their result."""

MEMORY = ("reorder-for-memory",)
"""Passes that order or place tensors: last, after every rewrite that adds or removes tensors."""

MEMORY_PASSES = frozenset({"reorder-for-memory", "plan-memory"})
"""Where the quantize point is in any pipeline, the user's included: before the first of these."""

PIPELINES = {
    "default": CLEANUP + MEMORY,
    "quantize-prepare": CLEANUP,
}
"""Each named pipeline's passes, in order, with default options."""

DEFAULT_PIPELINE = ",".join(PIPELINES["default"])


def get_pipeline(name: str) -> Pipeline:
    """The named pipeline, parsed (so its passes are checked against the registry)."""
    from .pass_manager import Pipeline

    return Pipeline.parse(",".join(PIPELINES[name]))


def insert_at_quantize_point(pipeline: Pipeline, spec: PassSpec) -> Pipeline:
    """``pipeline`` with ``spec`` before its first memory pass, or at its end."""
    from .pass_manager import Pipeline

    specs = list(pipeline.passes)
    at = next((i for i, existing in enumerate(specs) if existing.name in MEMORY_PASSES), len(specs))
    specs.insert(at, spec)
    return Pipeline(specs)


def append_at_partition_point(pipeline: Pipeline, spec: PassSpec) -> Pipeline:
    """``pipeline`` with ``spec`` at its end: partitioning sees the final graph."""
    from .pass_manager import Pipeline

    return Pipeline([*pipeline.passes, spec])
