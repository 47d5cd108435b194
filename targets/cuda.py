"""NVIDIA GPUs through TVM's CUDA backend, with their host CPU.

The partition pass (passes/partition.py) gives each node the GPU or the host CPU, with
the reason for every node that stays on the CPU; each GPU partition is lowered with TVM's
CUDA pipeline, which schedules every kernel with dlight, and each CPU partition through
edgec's CPU path for the host (targets/partitioned.py).

Compiling needs no GPU. TVM 0.27 keeps the kernels as CUDA source inside the
library (``fmt == "cuda"``) and its CUDA runtime compiles them when the library is
loaded, through the ``tvm_callback_cuda_compile`` that ``tvm.support.nvcc``
registers (NVRTC from the ``cuda-bindings`` package, or nvcc). So the machine that
runs a CUDA artifact needs a GPU and one of those compilers.
"""

from __future__ import annotations

from .arm64 import CROSS_COMPILER, CROSS_PACKAGE
from .base import TargetSpec, register_family

GPU_DTYPES = ("float32", "float16", "int8", "int32", "int64", "bool")


@register_family("cuda")
def cuda_targets() -> list[TargetSpec]:
    return [
        TargetSpec(
            name="jetson-orin",
            family="cuda",
            description="Jetson Orin NX 16GB: 8x Cortex-A78AE + Ampere GPU (sm_87)",
            triple="aarch64-linux-gnu",
            tvm_target={
                "kind": "cuda", "arch": "sm_87",
                "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a78ae",
                         "mattr": ["+neon", "+dotprod", "+fullfp16"], "num-cores": 8},
            },
            host_machine="aarch64",
            cores=8,
            features=("asimd", "asimddp", "asimdhp"),
            memory_bytes=16 * 1024**3,
            device="cuda",
            power_watts=25.0,
            power_source="NVIDIA Jetson Orin NX 16GB module datasheet: 10/15/25 W power modes (25 W maximum)",
            dtypes=GPU_DTYPES,
            cross_compiler=CROSS_COMPILER,
            cross_package=CROSS_PACKAGE,
        ),
        TargetSpec(
            name="cuda",
            family="cuda",
            description="x86-64 host + NVIDIA Hopper GPU (sm_90, H100 class), the GPU lab machine",
            triple="x86_64-linux-gnu",
            tvm_target={"kind": "cuda", "arch": "sm_90", "host": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}},
            host_machine="x86_64",
            cores=16,
            memory_bytes=80 * 1024**3,
            device="cuda",
            power_watts=700.0,
            power_source="NVIDIA H100 SXM datasheet: up to 700 W TDP",
            dtypes=GPU_DTYPES,
        ),
    ]
