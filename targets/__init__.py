"""Target families: each module holds one family's capabilities; ``lowering`` holds
the TVM path they share. This package is the only part of edgec that imports tvm
(the runtime uses TVM's runtime library through tvm_ffi alone)."""

from .base import TargetSpec, all_targets, get_target, physical_cores
from .lowering import Lowered, lower

__all__ = ["TargetSpec", "all_targets", "get_target", "physical_cores", "Lowered", "lower"]
