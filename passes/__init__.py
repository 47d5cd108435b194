"""edgec's graph passes, one per module. Importing this package registers them all."""

from . import eliminate_dead, fold_batchnorm, fold_constants, remove_identity

__all__ = ["eliminate_dead", "fold_batchnorm", "fold_constants", "remove_identity"]
