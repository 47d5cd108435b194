"""x86-64 CPUs, compiled with TVM's LLVM backend.

``x86-64`` is this machine's own CPU: LLVM names it (``znver5``, ``skylake-avx512``...)
and the core count is the physical cores, so the code uses every vector
extension the host has.
"""

from __future__ import annotations

import functools

from .base import TargetSpec, physical_cores, register_family


@functools.cache
def host_cpu() -> str:
    import tvm

    return tvm.get_global_func("target.llvm_get_system_cpu")()


def host_features() -> tuple[str, ...]:
    with open("/proc/cpuinfo") as info:
        flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    return tuple(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avx_vnni") if f in flags)


def host_memory() -> int:
    with open("/proc/meminfo") as info:
        total_kib = next(int(line.split()[1]) for line in info if line.startswith("MemTotal:"))
    return total_kib * 1024


@register_family("x86")
def x86_targets() -> list[TargetSpec]:
    cores = physical_cores()
    features = host_features()
    return [
        TargetSpec(
            name="x86-64",
            family="x86",
            description="this machine's x86-64 CPU (LLVM -mcpu=native equivalent)",
            triple="x86_64-linux-gnu",
            tvm_target={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": host_cpu(), "num-cores": cores},
            host_machine="x86_64",
            cores=cores,
            features=features,
            vector_bits=512 if "avx512f" in features else 256 if "avx2" in features else 128,
            vector_registers=32 if "avx512f" in features else 16,
            memory_bytes=host_memory(),
            dtypes=("float32", "float16", "int8", "uint8", "int32", "int64", "bool"),
        )
    ]
