"""TVM's runtime library driven through ``tvm_ffi`` alone, without the ``tvm`` package.

``import tvm.runtime`` imports over a hundred Python modules of TVM's compiler side (about
three seconds of an app's cold start). Running an artifact needs only what
``libtvm_runtime`` registers: loading a library, the Relax VM, tensor allocation and
copies. This module reaches those global functions through ``tvm_ffi``, so a device
needs numpy, ``apache-tvm-ffi`` and TVM's runtime library, and pays for nothing else.

Tensors are made and read the way ``tvm.runtime.Tensor`` does it (an aligned allocation
then a byte copy), which is what TVM's generated code expects: 64-byte-aligned data.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from functools import cache
from pathlib import Path

import numpy as np

from ..host import physical_cores

THREAD_POOL_SPIN_COUNT = 1000
"""Spins of a thread waiting at the end of a kernel before it sleeps (TVM's default: 300,000)."""
POOLED_ALLOCATOR = 2
"""The VM's memory pool, as ``tvm.runtime.vm.VirtualMachine`` sets it by default."""


class Runtime:
    """The global functions of ``libtvm_runtime`` that running an artifact needs."""

    def __init__(self):
        # TVM's thread pool uses one thread on a 2-core machine unless told otherwise.
        os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
        # Each kernel ends with its threads waiting for each other. TVM pins every thread to a core
        # and lets a waiting thread spin 300,000 times before it sleeps; with one other busy process
        # on 2 cores, the waiting thread spins through the time slice its late partner needs, at
        # every kernel: MobileNetV2 216 ms pinned, Inception v2 204-231 ms unpinned, against 7.4 and
        # 39 ms on one thread. Unpinned with 1,000 spins they ran in 7.6 and 40 ms, and on a quiet
        # machine as fast as before (benchmarks/results/2026-12-05-x86-64-loaded.md).
        os.environ.setdefault("TVM_BIND_THREADS", "0")
        os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(THREAD_POOL_SPIN_COUNT))
        tvm_ffi = load_tvm_library("tvm_runtime", "RTLD_GLOBAL")
        if wheel_library("tvm_runtime_extra") is not None:  # TVM's sort and topk kernels call into it
            load_tvm_library("tvm_runtime_extra", "RTLD_GLOBAL")
        self.ffi = tvm_ffi
        self._alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy_from_bytes = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromBytes")
        self._copy_to_bytes = tvm_ffi.get_global_func("runtime.TVMTensorCopyToBytes")
        self._copy = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromTo")

    def device(self, kind: str):
        return self.ffi.device(kind, 0)

    def load_vm(self, library: str, device) -> object:
        """The ``main`` function of a Relax VM executable library, initialized for ``device``
        (and the CPU, which runs shape functions)."""
        executable = self.ffi.load_module(library)
        vm = executable["vm_load_executable"]()
        devices = [device] if device.dlpack_device_type() == 1 else [device, self.device("cpu")]
        vm["vm_initialization"](*(arg for dev in devices for arg in (dev.dlpack_device_type(), dev.index, POOLED_ALLOCATOR)))
        return vm["main"]

    def empty(self, shape: tuple[int, ...], dtype: np.dtype, device):
        return self._alloc(self.ffi.Shape(shape), self.ffi.dtype(dtype), device, None)

    def tensor(self, array: np.ndarray, device):
        """A tensor on ``device`` holding a copy of a C-contiguous ``array``."""
        tensor = self.empty(array.shape, array.dtype, device)
        self._copy_from_bytes(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
        return tensor

    def numpy(self, tensor, dtype: np.dtype) -> np.ndarray:
        """A numpy copy of ``tensor`` (on any device), whose elements are ``dtype``."""
        if tensor.device.dlpack_device_type() == 1 and dtype.isbuiltin and dtype.kind in "biuf":
            return np.from_dlpack(tensor).copy()
        array = np.empty(tuple(tensor.shape), dtype)
        self._copy_to_bytes(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
        return array

    def copy_to(self, tensor, device):
        """``tensor`` on ``device``: itself when it is there already, else a copy."""
        if tensor.device == device:
            return tensor
        target = self.empty(tuple(tensor.shape), tensor.dtype, device)
        self._copy(tensor, target)
        return target


def import_tvm_ffi():
    """``tvm_ffi``, imported without torch unless torch is already loaded.

    tvm_ffi imports torch whenever it is installed, for torch-tensor interop that this
    numpy-only runtime never uses; on a machine with torch that import is seconds of an
    app's start-up. Hidden for that one import, torch stays importable afterwards.
    """
    if "tvm_ffi" in sys.modules or "torch" in sys.modules:
        import tvm_ffi

        return tvm_ffi
    sys.modules["torch"] = None  # makes 'import torch' raise ImportError, which tvm_ffi allows
    try:
        import tvm_ffi
    finally:
        del sys.modules["torch"]
    return tvm_ffi


def wheel_library(name: str) -> Path | None:
    """The apache-tvm wheel's ``lib<name>.so``, or None where that wheel lacks it."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    return next((path for path in (package / "lib" / f"lib{name}.so", package / "lib64" / f"lib{name}.so")
                 if path.exists()), None)


def load_tvm_library(name: str, mode: str):
    """Load one of the apache-tvm wheel's libraries (``tvm_runtime``, ``tvm_compiler``) as
    ``import tvm`` does, without importing the package; returns ``tvm_ffi``, through which
    the library's global functions are reached."""
    tvm_ffi = import_tvm_ffi()
    from tvm_ffi.libinfo import load_lib_ctypes

    spec = importlib.util.find_spec("tvm")  # locates the wheel without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("TVM's libraries are not installed (pip install apache-tvm)")
    package = Path(next(iter(spec.submodule_search_locations)))
    if name != "tvm_runtime":  # the others resolve symbols from it
        load_lib_ctypes("tvm", "tvm_runtime", "RTLD_GLOBAL", extra_lib_paths=[package / "lib", package / "lib64"])
    load_lib_ctypes("tvm", name, mode, extra_lib_paths=[package / "lib", package / "lib64"])
    return tvm_ffi


@cache
def runtime() -> Runtime:
    """The process's one handle on TVM's runtime library."""
    return Runtime()
