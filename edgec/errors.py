"""edgec's error types and the exit codes the CLI maps them to.

Exit codes (documented in the README and in ``edgec --help``):
  0 success; 1 the input could not be compiled or run; 2 usage error (bad flag,
  missing file, unknown target, unwritable output); 3 the model cannot meet its
  profile.
"""

from __future__ import annotations


class EdgecError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code = 1


class UsageError(EdgecError):
    """Bad flags, missing files, unknown names: the command line is wrong."""

    exit_code = 2


class ModelError(EdgecError):
    """The ONNX file cannot be read or is not a model edgec accepts."""


class CompileError(EdgecError):
    """A pass or the lowering failed on a model that imported fine."""


class ArtifactError(EdgecError):
    """An artifact cannot be loaded or run with the given inputs."""


class DeviceError(EdgecError):
    """A lab device cannot be reached, stays busy, drops the session, or cannot run the artifact."""


class ProfileViolation(EdgecError):
    """The model cannot meet its profile (a hard constraint is violated)."""

    exit_code = 3
