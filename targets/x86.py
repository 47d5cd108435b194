"""x86-64 CPUs, compiled with TVM's LLVM backend.

``x86-64`` is this machine's own CPU: LLVM names it (``znver5``, ``skylake-avx512``...)
and the core count is the physical cores, so the code uses every vector
extension the host has. ``x86-64-v3`` (AVX2, Haswell and later) and ``x86-64-v4``
(AVX-512, Skylake-SP and Zen 4 and later) are the portable microarchitecture levels
of the x86-64 psABI, for artifacts that must run on a fleet of unknown x86 machines;
LLVM knows them by those names.

``features`` are ``/proc/cpuinfo`` flag names; the runtime refuses an artifact
whose features the running CPU lacks (AVX-512 code on an AVX2 CPU dies of SIGILL).
No x86 target declares a power figure: a CPU model's TDP is not the power of one
inference, and these targets name no particular chip. A custom board (``--target
board.toml`` with ``base = "x86-64"``) declares one with its source.
"""

from __future__ import annotations

import functools

from edgec.host import cpu_features

from .base import TargetSpec, physical_cores, register_family


@functools.cache
def host_cpu() -> str:
    """LLVM's name for this CPU (``znver4``, ``sapphirerapids``...), from TVM's LLVM. Asked
    through TVM's compiler library directly: importing the tvm package for it would cost
    seconds on every target lookup (``edgec targets``, ``analyze``, a compile's first checks)."""
    from edgec.runtime.tvm_runtime import load_tvm_library

    return load_tvm_library("tvm_compiler", "RTLD_LOCAL").get_global_func("target.llvm_get_system_cpu")()


LEVEL_V3 = ("sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe")
"""x86-64-v3's features, as ``/proc/cpuinfo`` flags (x86-64 psABI, microarchitecture levels)."""
LEVEL_V4 = LEVEL_V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
"""x86-64-v4's features: v3 plus the AVX-512 subsets every AVX-512 CPU since Skylake-SP has."""
HOST_FEATURES = LEVEL_V4 + ("avx512_vnni", "avx_vnni")
"""The flags recorded for the host target: the levels' and the int8 dot products (VNNI)."""
NO_POWER_FIGURE = "none declared: no particular chip; declare one in a custom board file"


def host_features() -> tuple[str, ...]:
    flags = cpu_features()
    return tuple(f for f in HOST_FEATURES if f in flags)


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
            power_source=NO_POWER_FIGURE,
            dtypes=DTYPES,
        ),
        level("x86-64-v3", LEVEL_V3, 256, 16, "portable x86-64 with AVX2 and FMA (Haswell, Zen 1 and later)"),
        level("x86-64-v4", LEVEL_V4, 512, 32, "portable x86-64 with AVX-512 (Skylake-SP, Ice Lake, Zen 4 and later)"),
        level("x86-64-vnni", LEVEL_V4 + ("avx512_vnni",), 512, 32,
              "AVX-512 with VNNI, the int8 dot product (Cascade Lake, Ice Lake, Zen 4 and later)", mcpu="cascadelake"),
    ]


DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")


def level(name: str, features: tuple[str, ...], vector_bits: int, registers: int, description: str,
          mcpu: str | None = None) -> TargetSpec:
    """A psABI microarchitecture level (or ``mcpu``, the oldest LLVM CPU with ``features``),
    tuned generically, all host cores."""
    cores = physical_cores()
    return TargetSpec(
        name=name,
        family="x86",
        description=description,
        triple="x86_64-linux-gnu",
        tvm_target={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu or name, "num-cores": cores},
        host_machine="x86_64",
        cores=cores,
        features=features,
        vector_bits=vector_bits,
        vector_registers=registers,
        power_source=NO_POWER_FIGURE,
        dtypes=DTYPES,
    )
