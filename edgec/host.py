"""Facts about the machine edgec runs on."""

from __future__ import annotations

import ctypes
import os
import platform


def physical_cores() -> int:
    """Physical cores available to this process (hyperthreads counted once)."""
    cores = set()
    for cpu in sorted(os.sched_getaffinity(0)):
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{topology}/physical_package_id") as pkg, open(f"{topology}/core_id") as core:
                cores.add((pkg.read().strip(), core.read().strip()))
        except OSError:
            cores.add(("?", str(cpu)))
    return max(1, len(cores))


def cpu_features() -> set[str]:
    """This CPU's features by their ``/proc/cpuinfo`` names (x86 flags, arm64 HWCAP names)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return hwcap_features()
    try:
        with open("/proc/cpuinfo") as info:
            return set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    except OSError:
        return set()


AT_HWCAP, AT_HWCAP2 = 16, 26
HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
    "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2_NAMES = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
    "i8mm bf16 dgh rng bti mte"
).split()
"""Bit order of arm64 ``AT_HWCAP``/``AT_HWCAP2`` (Linux arch/arm64/include/uapi/asm/hwcap.h)."""


def hwcap_features() -> set[str]:
    """This aarch64 Linux process's CPU features, by their ``/proc/cpuinfo`` names.

    Read from the auxiliary vector, not ``/proc/cpuinfo``: under qemu-user the
    latter shows the host's CPU, while qemu fills auxv for the emulated ``-cpu``.
    """
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    features = set()
    for key, names in ((AT_HWCAP, HWCAP_NAMES), (AT_HWCAP2, HWCAP2_NAMES)):
        bits = libc.getauxval(key)
        features.update(name for bit, name in enumerate(names) if bits >> bit & 1)
    return features
