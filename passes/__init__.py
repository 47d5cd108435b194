"""edgec's graph passes, one per module. Importing this package registers them all."""

from . import (
    eliminate_dead,
    fold_batchnorm,
    fold_constants,
    fold_conv_affine,
    partition,
    plan_memory,
    quantize,
    remove_identity,
    reorder_for_memory,
)

__all__ = ["eliminate_dead", "fold_batchnorm", "fold_constants", "fold_conv_affine", "partition", "plan_memory", "quantize", "remove_identity", "reorder_for_memory"]
