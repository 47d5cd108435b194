"""Bare-metal Cortex-M microcontrollers: a self-contained C project, no TVM runtime.

TVM 0.20+ has no microTVM and no AOT executor, so edgec writes the executor itself:

1. TVM's Relax CPU pipeline runs up to ``StaticPlanBlockMemory`` with the ``c``
   target; edgec's arena planner (``tvm_arena.account_tvm_memory``) packs every
   tensor TVM would allocate into one static arena at offsets it picks;
2. every kernel is scheduled by edgec's CPU rules (``cpu_schedules``: convs tiled with
   their epilogue per tile, so a fused conv + bias + ReLU needs a tile of scratch, not
   its whole output; parallel loops run as one task on the one core), then goes
   through TVM's C code generator, its argument checks compiled out
   (``tirx.disable_assert``: the call sequence below is the only caller and passes
   exactly the planned tensors);
3. ``model.c``, written here, is the ahead-of-time call sequence: a static
   ``DLTensor`` per tensor (data in the arena, in the caller's input buffers, in a
   static buffer of its own for what TVM allocates outside its plan, such as graph
   outputs, copied to the caller's buffers at the end, or in a ``const`` weight array
   in flash), one static argument array per kernel call, and ``<model>_init`` /
   ``<model>_run``. No graph or VM executor, no
   malloc (a kernel's large scratch comes from a static workspace, LIFO), no TVM
   runtime: only ``dlpack.h``'s struct, TVM's packed-call layout (``tvm_abi.h``) and
   the four backend calls kernels make (workspace, parallel launch), defined in ``model.c``;
4. Debian's ``arm-none-eabi-gcc`` (newlib, semihosting) builds the project into an
   ELF for an Arm MPS2/MPS3 board, which ``qemu-system-arm`` emulates (``harness.c``
   reads the inputs and writes the outputs through semihosting).

Why C and not LLVM's ``thumbv7em``: the C project is what a firmware build takes
(any vendor's toolchain, ``edgec export-c``), and it is smaller: the digits CNN's fp32
kernels are 2256 B of code through the C code generator and gcc -O2, 7102 B through
TVM's LLVM back end for the Cortex-M7 (``benchmarks/mcu_footprint.py``, which uses
:func:`llvm_kernels`). Speed could not be compared: an emulator's timing is not the chip's.

Int8 models use edgec's integer kernels (``int8.lower_integer_kernels``) without a
dot-product instruction: int8 x int8 products summed in int32, in C loops.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from edgec.deploy.artifact import FIRMWARE, PROJECT
from edgec.errors import CompileError

from .base import TargetSpec, register_family

logger = logging.getLogger(__name__)

TOOLCHAIN = "arm-none-eabi-gcc"
TOOLCHAIN_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi"
EMULATOR = "qemu-system-arm"
STACK_BYTES = 16 * 1024
"""The stack the firmware reserves (the linker script places and checks it)."""


@dataclass(frozen=True)
class Board:
    """The emulated board a core is checked on: qemu's machine and its memory map."""

    machine: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    cflags: tuple[str, ...]
    features: tuple[str, ...]
    """The Arm ISA extensions the code is built for (Thumb-2, the DSP instructions, the FPU)."""
    triple: str = "thumbv7em-none-eabihf"
    vectors_apart: bool = False
    """The reset vector table lives at 0 in its own small memory (ITCM), the code and weights elsewhere."""


BOARDS = {
    "cortex-m7": Board("mps2-an500", 0x0, 4 << 20, 0x20000000, 4 << 20,
                       ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"), ("thumb2", "dsp", "fpv5-d16")),
    "cortex-m4": Board("mps2-an386", 0x0, 4 << 20, 0x20000000, 4 << 20,
                       ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                       ("thumb2", "dsp", "fpv4-sp-d16")),
    # AN547: the 512 KiB ITCM at 0 holds the vectors, the 2 MiB SRAM at 0x01000000 stands in for flash.
    "cortex-m55": Board("mps3-an547", 0x01000000, 2 << 20, 0x21000000, 4 << 20,
                        ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"), ("thumb2", "dsp", "mve.fp", "fpv5-d16"),
                        "thumbv8.1m.main-none-eabihf", vectors_apart=True),
}


def mcu(name: str, description: str, mhz: int, power_watts: float, power_source: str) -> TargetSpec:
    board = BOARDS[name]
    return TargetSpec(
        name=name,
        family="cortex-m",
        description=description,
        triple=board.triple,
        tvm_target={"kind": "c"},
        host_machine=EMULATOR,
        cores=1,
        features=board.features,
        vector_bits=32,
        vector_registers=16,
        memory_bytes=board.ram_bytes,
        power_watts=power_watts,
        power_source=power_source,
        dtypes=("float32", "int8", "uint8", "int32", "bool"),
        cross_compiler=TOOLCHAIN,
        cross_package=TOOLCHAIN_PACKAGES,
        notes=f"{mhz} MHz class; checked on qemu-system-arm -M {board.machine}",
    )


@register_family("cortex-m")
def cortex_m_targets() -> list[TargetSpec]:
    return [
        mcu("cortex-m7", "Cortex-M7 microcontroller, FPU (STM32F7/H7 class), bare metal", 216, 0.5,
            "upper bound: an STM32F7 at 216 MHz draws about 100 mA at 3.3 V, rounded up"),
        mcu("cortex-m4", "Cortex-M4F microcontroller, single-precision FPU (STM32F4 class), bare metal", 168, 0.33,
            "upper bound: an STM32F4 at 168 MHz draws about 100 mA at 3.3 V"),
        mcu("cortex-m55", "Cortex-M55 microcontroller, Helium (MVE) and FPU (Alif Ensemble class), bare metal", 400, 0.2,
            "upper bound: a Cortex-M55 MCU at 400 MHz draws under 60 mA at 3.3 V"),
    ]


C_RESERVED = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "bool true false".split())
"""C keywords (and stdbool's names), which no tensor or model may be called."""


def c_identifier(name: str) -> str:
    """A C identifier from a model's or tensor's name: ``digits-cnn.v2`` -> ``digits_cnn_v2``;
    never a keyword, and never ``output<i>`` (the run function's output parameters)."""
    text = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "model"
    text = f"m_{text}" if text[0].isdigit() else text
    return f"{text}_" if text in C_RESERVED or re.fullmatch(r"output\d+", text) else text


def c_names(proto):
    """``proto`` with every tensor named by a C identifier: TVM's C code generator names
    kernel variables after tensors and writes ``0.weight`` as ``0_weight_type_index``."""
    graph = proto.graph
    names: dict[str, str] = {"": ""}
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        names.setdefault(value.name, "")
    for node in graph.node:
        for name in [*node.input, *node.output]:
            names.setdefault(name, "")
    taken = set()
    for name in names:
        if not name:
            continue
        base = candidate = c_identifier(name)
        suffix = 1
        while candidate in taken:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(candidate)
        names[name] = candidate
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        value.name = names[value.name]
    for node in graph.node:
        node.input[:] = [names[n] for n in node.input]
        node.output[:] = [names[n] for n in node.output]
    return proto


# --- lowering ------------------------------------------------------------------------------

@dataclass
class Tensor:
    """Where one tensor of the call sequence lives: ``kind`` is arena, input, weight, const or
    scratch (a static buffer of its own); ``index`` the arena offset or the position in that list."""

    kind: str
    index: int
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Plan:
    """The call sequence: kernels called in order on tensors; outputs copied where needed."""

    calls: list[tuple[str, list[Tensor]]]
    outputs: list[Tensor]
    arena_bytes: int
    consts: list[np.ndarray]
    scratch: list[int]
    """Bytes of each tensor TVM allocates outside the planned storages (kept in RAM, statically)."""


@dataclass
class Prepared:
    """The model in TVM after memory planning: ``mod`` (``main`` and its kernels), what ``main``
    takes (inputs, then the weights ``names``/``weights``) and the integer kernels' record."""

    mod: object
    inputs: list[tuple[str, tuple, str]]
    names: list[str]
    weights: list[np.ndarray]
    integer: object


def prepare(model, target: TargetSpec) -> Prepared:
    """Import, integer kernels, edgec's CPU schedules, and TVM's Relax pipeline with the ``c``
    target up to its memory planning; kernels keep their own names as global symbols."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    from .cpu_schedules import schedule_for_cpu
    from .int8 import lower_integer_kernels
    from .lowering import first_line, onnx_for_tvm, unique_names

    proto, shape_inputs = onnx_for_tvm(model)
    if shape_inputs:  # the firmware's C API takes tensors, it does not check their values
        pinned = shape_inputs[0]
        raise CompileError(f"{pinned.op} node '{pinned.node}': its output shape is the value of input '{pinned.input}'; "
                           f"target {target.name} compiles static shapes only")
    try:
        mod = from_onnx(c_names(proto), keep_params_in_input=True)
    except Exception as exc:  # TVM raises a variety of types; the op name is in the text
        raise CompileError(f"TVM's ONNX frontend rejected the model: {first_line(exc)}") from exc
    mod, integer = lower_integer_kernels(mod, None)
    # edgec's CPU rules tile each conv and compute its epilogue per tile, so a fused
    # conv + bias + ReLU needs a tile of scratch, not its whole output (parallel loops
    # run serially: TVMBackendParallelLaunch in model.c).
    mod, notes = schedule_for_cpu(mod, target)
    for note in notes:
        logger.info("kernel left to a fallback schedule: %s", note)
    main = mod["main"]
    num_inputs = int(main.attrs["num_input"])
    inputs = [(p.name, tuple(int(d) for d in p.ty.shape), str(p.ty.dtype)) for p in main.params[:num_inputs]]
    names = unique_names([param.name for param in main.params[num_inputs:]])
    mod, detached = detach_params(mod)
    weights = [param.numpy() for param in detached.get("main", [])]
    c_target = tvm.target.Target({"kind": "c"})
    try:
        with c_target:
            finalize = []
            for item in cpu_generic.finalize_passes(c_target):
                finalize.append(item)
                if item.info.name == "StaticPlanBlockMemory":
                    break
            passes = (cpu_generic.library_dispatch_passes(c_target) + cpu_generic.legalize_passes(c_target)
                      + cpu_generic.dataflow_lower_passes(c_target) + finalize)
            mod = tvm.transform.Sequential(passes)(mod)
        mod = relax.transform.AttachGlobalSymbol()(mod)  # kernels are exported under their own names
    except Exception as exc:
        raise CompileError(f"TVM failed to compile for {target.name}: {first_line(exc)}") from exc
    return Prepared(mod, inputs, names, weights, integer)


def lower_fabs_to_libm(call):
    """``tirx.fabs`` as libm's fabsf/fabs: TVM's C code generator has no rule of its own for it,
    and ONNX Cast from float to an integer type checks isfinite, which TVM writes with fabs."""
    from tvm import tirx

    dtype = str(call.ty.dtype)
    return tirx.call_pure_extern(dtype, "fabsf" if dtype == "float32" else "fabs", call.args[0])


@cache
def register_c_intrinsics() -> None:
    import tvm

    tvm.tirx.op.register_intrin_lowering("tirx.fabs", target="c", f=lower_fabs_to_libm, level=99)


def kernels_of(mod):
    """The TIR kernels of a prepared module, as a module of their own."""
    import tvm
    from tvm import tirx

    return tvm.IRModule({gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)})


def llvm_kernels(model, target: TargetSpec) -> bytes:
    """The model's kernels through TVM's LLVM back end for the core instead of its C code
    generator, as an ELF object: what benchmarks/mcu_footprint.py compares the C path with."""
    import tvm

    llvm = tvm.target.Target({"kind": "llvm", "mtriple": target.triple,
                              "mcpu": target.name, "mfloat-abi": "hard"})
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        library = tvm.tirx.build(kernels_of(prepare(model, target).mod), target=llvm)
    with tempfile.TemporaryDirectory(prefix="edgec-llvm-") as workdir:
        library.write_to_file(str(Path(workdir, "kernels.o")))
        return Path(workdir, "kernels.o").read_bytes()


def lower_mcu(model, target: TargetSpec, name: str):
    """Lower ``model`` into the C project and firmware of ``target``; a :class:`~.lowering.Lowered`."""
    import tvm

    from .lowering import Lowered, first_line
    from .tvm_arena import account_tvm_memory, kernel_workspace_bytes

    for tool in ("make", TOOLCHAIN):
        if shutil.which(tool) is None:
            raise CompileError(f"target {target.name} builds its firmware with {tool}, which is not installed; "
                               f"install it with: apt-get install {TOOLCHAIN_PACKAGES if tool == TOOLCHAIN else tool}")
    symbol = c_identifier(name)
    target_manifest = {**target.manifest(), "board": BOARDS[target.name].machine, "model_symbol": symbol}
    prepared = prepare(model, target)
    if prepared.integer.lowered or prepared.integer.kept_float:
        target_manifest["integer_kernels"] = prepared.integer.to_dict()
    main = prepared.mod["main"]
    report, offsets = account_tvm_memory(main)  # not analysed: nothing to plan, or call_plan says why
    plan = call_plan(main, len(prepared.inputs), offsets, report.arena_bytes if report.analysed else 0,
                     f"target {target.name} needs every tensor in one static arena: {report.why_not}")
    kernels = kernels_of(prepared.mod)
    register_c_intrinsics()
    workspace = max((kernel_workspace_bytes(f.script()) for f in kernels.functions.values()), default=0)
    try:
        with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
            source = tvm.tirx.build(kernels, target=tvm.target.Target({"kind": "c"})).inspect_source()
    except Exception as exc:
        raise CompileError(f"TVM failed to compile for {target.name}: {first_line(exc)}") from exc

    files = project_files(symbol, target, plan, source, prepared.weights, prepared.inputs, workspace)
    elf, sizes = build_firmware(files, target)
    runtime_memory = {**report.to_dict(), "runs_in_arena": True, "workspace_bytes": workspace}
    target_manifest["mcu_memory"] = {**sizes, "arena_bytes": plan.arena_bytes, "workspace_bytes": workspace,
                                     "scratch_bytes": sum(plan.scratch), "stack_bytes": STACK_BYTES}
    members = {PROJECT: tar_project(files), FIRMWARE: elf}
    return Lowered(b"", list(zip(prepared.names, prepared.weights)), target_manifest, tvm.__version__, runtime_memory,
                   members=members)


def call_plan(func, num_inputs: int, offsets: dict, arena_bytes: int, unplanned: str) -> Plan:
    """Walk ``main`` (after StaticPlanBlockMemory) into kernel calls on placed tensors; a tensor
    without an arena offset is refused with ``unplanned``."""
    from tvm import relax
    from tvm.ir.expr import Constant

    placed: dict = {}
    for i, param in enumerate(func.params):
        kind, index = ("input", i) if i < num_inputs else ("weight", i - num_inputs)
        placed[param] = Tensor(kind, index, shape_of(param.ty), str(param.ty.dtype))
    consts: list[np.ndarray] = []
    scratch: list[int] = []
    calls = []
    tuples: dict = {}  # var -> the tensors of a tuple it names

    def tensor_of(expr) -> Tensor:
        if isinstance(expr, Constant):
            consts.append(expr.value.numpy())
            array = consts[-1]
            return Tensor("const", len(consts) - 1, tuple(array.shape), str(array.dtype))
        if expr in placed:
            return placed[expr]
        raise CompileError(f"the call sequence reads {expr}, which no earlier step placed")

    skip = {"relax.memory.alloc_storage", "relax.memory.kill_storage", "relax.memory.kill_tensor",
            "relax.null_value"}
    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            op = getattr(getattr(value, "op", None), "name", "")
            if op in skip:
                continue
            if op == "relax.call_packed" or (isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc)):
                continue  # vm.builtin.check_tensor_info / match_shape: static shapes are checked at compile time
            if op == "relax.memory.alloc_tensor":
                if var not in offsets:
                    raise CompileError(unplanned)
                placed[var] = Tensor("arena", offsets[var], shape_of(var.ty), str(var.ty.dtype))
            elif op == "relax.builtin.alloc_tensor":
                size = int(np.prod(shape_of(var.ty))) * np.dtype(str(var.ty.dtype)).itemsize
                scratch.append(size)
                placed[var] = Tensor("scratch", len(scratch) - 1, shape_of(var.ty), str(var.ty.dtype))
            elif op == "relax.reshape":
                source = tensor_of(value.args[0])
                placed[var] = Tensor(source.kind, source.index, shape_of(var.ty), source.dtype)
            elif isinstance(value, relax.Var) and value in tuples:
                tuples[var] = tuples[value]
            elif isinstance(value, relax.Var):
                placed[var] = tensor_of(value)
            elif isinstance(value, relax.Tuple):
                tuples[var] = [tensor_of(field) for field in value.fields]
            elif isinstance(value, relax.TupleGetItem):
                placed[var] = tuples[value.tuple_value][value.index]
            elif isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
                calls.append((value.op.name_hint, [tensor_of(arg) for arg in value.args]))
            else:
                raise CompileError(f"the Cortex-M call sequence cannot run {op or type(value).__name__} "
                                   f"(binding {var.name})")
    result = func.body.body
    if isinstance(result, relax.Tuple):
        outputs = [tensor_of(field) for field in result.fields]
    else:
        outputs = tuples[result] if result in tuples else [tensor_of(result)]
    return Plan(calls, outputs, arena_bytes, consts, scratch)


def shape_of(struct_info) -> tuple[int, ...]:
    dims = []
    for dim in struct_info.shape.values:
        if not hasattr(dim, "value"):
            raise CompileError(f"the Cortex-M targets need static shapes, got dimension {dim}")
        dims.append(int(dim.value))
    return tuple(dims)


# --- the C project ---------------------------------------------------------------------------

DL_CODES = {"i": 0, "u": 1, "f": 2, "b": 1}  # DLDataTypeCode: kDLInt, kDLUInt, kDLFloat (bool is uint1 in DLPack)

C_TYPES = {"float32": "float", "int8": "int8_t", "uint8": "uint8_t", "int32": "int32_t", "int64": "int64_t",
           "bool": "bool", "int16": "int16_t", "float64": "double"}


def dl_dtype(dtype: str) -> str:
    kind = np.dtype(dtype)
    bits = 1 if kind.kind == "b" else kind.itemsize * 8
    return f"{{{DL_CODES[kind.kind]}, {bits}, 1}}"


def c_bytes(data: bytes) -> str:
    lines = []
    for start in range(0, len(data), 24):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[start:start + 24]) + ",")
    return "\n".join(lines) or "  0"


TVM_ABI_H = """\
/* tvm_abi.h: the layout TVM's C code generator calls kernels with (TVM FFI's packed
 * call: an array of TVMFFIAny holding DLTensor pointers), with nothing of TVM's runtime.
 * Written by edgec; the layout follows tvm/ffi/c_api.h (Apache-2.0). */
#ifndef EDGEC_TVM_ABI_H_
#define EDGEC_TVM_ABI_H_
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dlpack/dlpack.h"

#define TVM_DLL
#define kTVMFFIDLTensorPtr 7
/* TVM's C code generator spells a float32 infinity "inff" (isfinite checks compare with it). */
#define inff INFINITY

typedef struct {
  int32_t type_index;
  uint32_t zero_padding;
  union {
    int64_t v_int64;
    double v_float64;
    void* v_ptr;
  };
} TVMFFIAny;

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
/* One core: a parallel loop runs as one task. */
int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task);
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv);

/* A kernel's scratch larger than TVM puts on the stack: from edgec's static workspace. */
void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint);
int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr);
#endif
"""

STARTUP_C = """\
/* startup.c: reset handler and vector table for the emulated board (written by edgec). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern uint32_t __stack_top, __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern int main(void);
extern void initialise_monitor_handles(void);

void Reset_Handler(void) {
  *(volatile uint32_t*)0xE000ED88 |= 0xFu << 20; /* CPACR: the FPU (CP10, CP11) on */
  __asm volatile("dsb\\n isb");
  memcpy(&__data_start, &__data_load, (size_t)((char*)&__data_end - (char*)&__data_start));
  memset(&__bss_start, 0, (size_t)((char*)&__bss_end - (char*)&__bss_start));
  initialise_monitor_handles(); /* newlib's semihosting: stdio and files on the host */
  exit(main());
}

static void Fault_Handler(void) {
  exit(99);
}

void _init(void) {}
void _fini(void) {}

__attribute__((section(".vectors"), used)) const void* const edgec_vectors[16] = {
    &__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
};
"""


def linker_script(board: Board) -> str:
    vectors = "  VECTORS (rx) : ORIGIN = 0x00000000, LENGTH = 1K\n" if board.vectors_apart else ""
    placed = ".vectors : { KEEP(*(.vectors)) } > VECTORS\n  " if board.vectors_apart else ""
    first = "" if board.vectors_apart else "KEEP(*(.vectors)) "
    return f"""\
/* link.ld: {board.machine}'s memory (written by edgec). Weights are const: they stay in flash. */
MEMORY {{
{vectors}  FLASH (rx) : ORIGIN = 0x{board.flash_origin:08x}, LENGTH = {board.flash_bytes}
  RAM (rwx) : ORIGIN = 0x{board.ram_origin:08x}, LENGTH = {board.ram_bytes}
}}
ENTRY(Reset_Handler)
SECTIONS {{
  {placed}.text : {{ {first}*(.text*) *(.rodata*) . = ALIGN(64); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  __data_load = LOADADDR(.data);
  .data : {{ __data_start = .; *(.data*) . = ALIGN(8); __data_end = .; }} > RAM AT > FLASH
  .bss (NOLOAD) : {{ __bss_start = .; *(.bss*) *(COMMON) . = ALIGN(8); __bss_end = .; }} > RAM
  end = .; _end = .;
  /* The stack at the top of RAM: the link fails if the arena and the rest reach into it. */
  .stack (ORIGIN(RAM) + LENGTH(RAM) - {STACK_BYTES}) (NOLOAD) : {{ . += {STACK_BYTES}; }} > RAM
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}}
"""


def makefile(symbol: str, board: Board) -> str:
    return f"""\
# Builds lib{symbol}.a (the model: link it into your firmware) and firmware.elf (the model
# plus a semihosting harness for qemu-system-arm -M {board.machine}; 'make run' runs it). Written by edgec.
# Another toolchain: make CC=... AR=... CPU_FLAGS=...
CC = arm-none-eabi-gcc
AR = arm-none-eabi-ar
CPU_FLAGS ?= {' '.join(board.cflags)}
CFLAGS ?= -O2 -ffunction-sections -fdata-sections -fno-strict-aliasing -Wall -Wno-unused-variable \\
          -Wno-unused-but-set-variable -Wno-unused-function
MODEL_OBJS = model.o kernels.o weights.o
all: lib{symbol}.a firmware.elf
%.o: %.c
\t$(CC) $(CPU_FLAGS) $(CFLAGS) -Iinclude -c $< -o $@
lib{symbol}.a: $(MODEL_OBJS)
\t$(AR) rcs $@ $^
firmware.elf: harness.o startup.o lib{symbol}.a link.ld
\t$(CC) $(CPU_FLAGS) --specs=rdimon.specs -nostartfiles -Wl,--gc-sections -T link.ld harness.o startup.o \\
\t    lib{symbol}.a -lm -o $@
# One inference on the emulated board: reads in<i>.bin, writes out<i>.bin (raw, C order) here.
run: firmware.elf
\tqemu-system-arm -M {board.machine} -nographic -monitor none -serial none \\
\t    -semihosting-config enable=on,target=native -kernel firmware.elf
clean:
\trm -f *.o *.a firmware.elf
.PHONY: all clean run
"""


def project_files(symbol: str, target: TargetSpec, plan: Plan, kernels: str, weights: list[np.ndarray],
                  inputs: list[tuple[str, tuple, str]], workspace: int) -> dict[str, bytes]:
    """The C project: sources, headers, linker script and Makefile, by relative path."""
    import tvm_ffi

    board = BOARDS[target.name]
    dlpack = Path(tvm_ffi.__file__).parent / "include" / "dlpack" / "dlpack.h"
    kernels = re.sub(r'#include "tvm/[^"]+"\n', "", kernels)
    kernels = kernels.replace("#include <math.h>", '#include <math.h>\n#include "tvm_abi.h"', 1)
    outputs = plan.outputs
    files = {
        "include/dlpack/dlpack.h": dlpack.read_bytes(),
        "include/tvm_abi.h": TVM_ABI_H.encode(),
        f"include/{symbol}.h": model_header(symbol, inputs, outputs).encode(),
        "kernels.c": kernels.encode(),
        "weights.c": weights_source(symbol, weights, plan.consts).encode(),
        "model.c": model_source(symbol, plan, inputs, workspace).encode(),
        "harness.c": harness_source(symbol, inputs, outputs).encode(),
        "startup.c": STARTUP_C.encode(),
        "link.ld": linker_script(board).encode(),
        "Makefile": makefile(symbol, board).encode(),
    }
    return files


def nbytes(shape, dtype: str) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def model_header(symbol: str, inputs, outputs: list[Tensor]) -> str:
    params = [f"const {C_TYPES[d]}* {c_identifier(n)}" for n, _, d in inputs]
    params += [f"{C_TYPES[t.dtype]}* output{i}" for i, t in enumerate(outputs)]
    sizes = [f"#define {symbol.upper()}_INPUT{i}_BYTES {nbytes(s, d)} /* {n}: {d} {list(s)} */"
             for i, (n, s, d) in enumerate(inputs)]
    sizes += [f"#define {symbol.upper()}_OUTPUT{i}_BYTES {nbytes(t.shape, t.dtype)} /* {t.dtype} {list(t.shape)} */"
              for i, t in enumerate(outputs)]
    return f"""\
/* {symbol}.h: the model's API (written by edgec). No malloc, no RTOS, no TVM runtime. */
#ifndef {symbol.upper()}_H_
#define {symbol.upper()}_H_
#include <stdbool.h>
#include <stdint.h>
{chr(10).join(sizes)}
#define {symbol.upper()}_NUM_INPUTS {len(inputs)}
#define {symbol.upper()}_NUM_OUTPUTS {len(outputs)}
/* Once, before the first run (and to recover after a failed one): resets the kernel scratch. Returns 0. */
int {symbol}_init(void);
/* One inference: C order, the sizes above. 0 on success, else the number of the kernel call that failed. */
int {symbol}_run({', '.join(params)});
#endif
"""


def weights_source(symbol: str, weights: list[np.ndarray], consts: list[np.ndarray]) -> str:
    parts = [f"/* weights.c: the model's weights and constants, const so they stay in flash (written by edgec). */",
             "#include <stdint.h>"]
    for prefix, arrays in (("weight", weights), ("const", consts)):
        for i, array in enumerate(arrays):
            data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            parts.append(f"/* {array.dtype} {list(array.shape)} */\n"
                         f"const uint8_t {symbol}_{prefix}{i}[{max(len(data), 1)}] __attribute__((aligned(64))) = {{\n"
                         f"{c_bytes(data)}\n}};")
    return "\n".join(parts) + "\n"


def model_source(symbol: str, plan: Plan, inputs, workspace: int) -> str:
    """The ahead-of-time call sequence over static tensors."""
    tensors: dict[tuple, int] = {}
    declarations, setup = [], []

    def data_of(t: Tensor) -> str:
        return {"arena": f"edgec_arena + {t.index}", "weight": f"(void*){symbol}_weight{t.index}",
                "const": f"(void*){symbol}_const{t.index}", "scratch": f"edgec_scratch{t.index}",
                "input": "NULL"}[t.kind]

    def tensor_id(t: Tensor) -> int:
        key = (t.kind, t.index, t.shape, t.dtype)
        if key not in tensors:
            n = tensors[key] = len(tensors)
            dims = ", ".join(map(str, t.shape)) or "1"
            declarations.append(f"static int64_t edgec_shape{n}[] = {{{dims}}};\n"
                                f"static DLTensor edgec_t{n} = {{{data_of(t)}, {{kDLCPU, 0}}, {len(t.shape)}, "
                                f"{dl_dtype(t.dtype)}, edgec_shape{n}, NULL, 0}};")
            if t.kind == "input":
                setup.append(f"  edgec_t{n}.data = (void*){c_identifier(inputs[t.index][0])};")
        return tensors[key]

    calls = []
    for k, (kernel, args) in enumerate(plan.calls):
        ids = [tensor_id(a) for a in args]
        declarations.append(f"static TVMFFIAny edgec_args{k}[] = {{"
                            + ", ".join(f"{{kTVMFFIDLTensorPtr, 0, {{.v_ptr = &edgec_t{i}}}}}" for i in ids) + "};")
        calls.append(f"  if (__tvm_ffi_{kernel}(NULL, edgec_args{k}, {len(ids)}, &result) != 0) return {k + 1};")
    copies = []
    for i, t in enumerate(plan.outputs):
        n = tensor_id(t)
        size = nbytes(t.shape, t.dtype)
        if t.kind == "input":
            copies.append(f"  memcpy(output{i}, {c_identifier(inputs[t.index][0])}, {size});")
        else:
            copies.append(f"  memcpy(output{i}, edgec_t{n}.data, {size});")
    externs = sorted({f"int32_t __tvm_ffi_{kernel}(void* self, void* args, int32_t num_args, void* result);"
                      for kernel, _ in plan.calls})
    weight_externs = sorted({f"extern const uint8_t {symbol}_{t.kind}{t.index}[];"
                             for _, args in plan.calls for t in args if t.kind in ("weight", "const")}
                            | {f"extern const uint8_t {symbol}_{t.kind}{t.index}[];"
                               for t in plan.outputs if t.kind in ("weight", "const")})
    scratch = [f"static uint8_t edgec_scratch{i}[{size}] __attribute__((aligned(64)));"
               for i, size in enumerate(plan.scratch)]
    params = [f"const {C_TYPES[d]}* {c_identifier(n)}" for n, _, d in inputs]
    params += [f"{C_TYPES[t.dtype]}* output{i}" for i, t in enumerate(plan.outputs)]
    return f"""\
/* model.c: the ahead-of-time call sequence (written by edgec): every tensor a static DLTensor
 * in one arena at edgec's planned offsets, {len(plan.calls)} kernel calls in order. */
#include <string.h>
#include "tvm_abi.h"
#include "{symbol}.h"

{chr(10).join(externs)}
{chr(10).join(weight_externs)}

static uint8_t edgec_arena[{max(plan.arena_bytes, 1)}] __attribute__((aligned(64)));
static uint8_t edgec_workspace[{max(workspace + 64, 64)}] __attribute__((aligned(64)));
static size_t edgec_workspace_top;
{chr(10).join(scratch)}

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {{
  size_t start = (edgec_workspace_top + 63) & ~(size_t)63;
  (void)device_type, (void)device_id, (void)dtype_code_hint, (void)dtype_bits_hint;
  if (start + nbytes > sizeof edgec_workspace) return NULL;
  edgec_workspace_top = start + nbytes;
  return edgec_workspace + start;
}}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {{
  (void)device_type, (void)device_id;
  edgec_workspace_top = (size_t)((uint8_t*)ptr - edgec_workspace); /* kernels free last-in, first-out */
  return 0;
}}

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {{
  TVMParallelGroupEnv env = {{NULL, 1}};
  (void)num_task;
  return flambda(0, &env, cdata);
}}

int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {{
  (void)task_id, (void)penv;
  return 0;
}}

{chr(10).join(declarations)}

int {symbol}_init(void) {{
  edgec_workspace_top = 0;
  return 0;
}}

int {symbol}_run({', '.join(params)}) {{
  TVMFFIAny result;
{chr(10).join(setup)}
{chr(10).join(calls)}
{chr(10).join(copies)}
  return 0;
}}
"""


def harness_source(symbol: str, inputs, outputs: list[Tensor]) -> str:
    """main() for the emulator: in<i>.bin -> run -> out<i>.bin, through semihosting."""
    buffers, reads, writes = [], [], []
    for i, (_, shape, dtype) in enumerate(inputs):
        size = nbytes(shape, dtype)
        buffers.append(f"static {C_TYPES[dtype]} input{i}[{max(size // np.dtype(dtype).itemsize, 1)}] "
                       "__attribute__((aligned(64)));")
        reads.append(f'  if (transfer("in{i}.bin", "rb", input{i}, {size})) return 2;')
    for i, t in enumerate(outputs):
        size = nbytes(t.shape, t.dtype)
        buffers.append(f"static {C_TYPES[t.dtype]} output{i}[{max(size // np.dtype(t.dtype).itemsize, 1)}] "
                       "__attribute__((aligned(64)));")
        writes.append(f'  if (transfer("out{i}.bin", "wb", output{i}, {size})) return 4;')
    arguments = ", ".join([f"input{i}" for i in range(len(inputs))] + [f"output{i}" for i in range(len(outputs))])
    return f"""\
/* harness.c: runs the model once under qemu-system-arm (written by edgec): reads in<i>.bin,
 * writes out<i>.bin in the host's working directory through semihosting. */
#include <stdio.h>
#include "{symbol}.h"

{chr(10).join(buffers)}

static int transfer(const char* name, const char* mode, void* data, size_t size) {{
  FILE* file = fopen(name, mode);
  if (!file) {{
    printf("edgec-harness: cannot open %s\\n", name);
    return 1;
  }}
  size_t done = mode[0] == 'r' ? fread(data, 1, size, file) : fwrite(data, 1, size, file);
  fclose(file);
  if (done != size) printf("edgec-harness: %s: %u of %u bytes\\n", name, (unsigned)done, (unsigned)size);
  return done != size;
}}

int main(void) {{
{chr(10).join(reads)}
  if ({symbol}_init() != 0) return 3;
  int status = {symbol}_run({arguments});
  if (status != 0) {{
    printf("edgec-harness: kernel call %d failed\\n", status);
    return 5;
  }}
{chr(10).join(writes)}
  printf("edgec-harness: ok\\n");
  return 0;
}}
"""


def tar_project(files: dict[str, bytes]) -> bytes:
    """The project as one reproducible tar (sorted, mtime 0, no owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(f"project/{name}")
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def build_firmware(files: dict[str, bytes], target: TargetSpec) -> tuple[bytes, dict]:
    """``make`` the project with arm-none-eabi-gcc; the ELF and the model's flash and RAM."""
    with tempfile.TemporaryDirectory(prefix="edgec-mcu-") as workdir:
        for name, data in files.items():
            path = Path(workdir, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        done = subprocess.run(["make", "-s", "-C", workdir, "-j2"], capture_output=True, text=True)
        if done.returncode != 0:
            said = (done.stderr + done.stdout).splitlines()
            overflow = [line.split("ld: ")[-1] for line in said if "overflowed by" in line]
            if overflow:
                board = BOARDS[target.name]
                raise CompileError(f"the model does not fit {board.machine}'s memory (flash {board.flash_bytes >> 20} MiB, "
                                   f"RAM {board.ram_bytes >> 20} MiB): {overflow[0]}")
            errors = [line for line in said if "error" in line.lower() and not line.startswith(("collect2", "make"))]
            raise CompileError(f"building the {target.name} firmware failed: {(errors or ['(no message)'])[0]}")
        model = {}
        for obj in ("model.o", "kernels.o", "weights.o"):
            for section, size in elf_sections(Path(workdir, obj).read_bytes()).items():
                kind = section_kind(section)
                if kind:
                    model[kind] = model.get(kind, 0) + size
        elf = Path(workdir, FIRMWARE).read_bytes()
    firmware = {}
    for section, size in elf_sections(elf).items():
        kind = section_kind(section)
        if kind:
            firmware[kind] = firmware.get(kind, 0) + size
    return elf, {"model_sections": model, "firmware_sections": firmware}


def section_kind(name: str) -> str | None:
    """text (code), rodata (constants: weights), data (initialized RAM, copied from flash), bss (zeroed RAM)."""
    for kind in ("text", "rodata", "data", "bss"):
        if name == f".{kind}" or name.startswith(f".{kind}."):
            return kind
    if name.startswith(".ARM.exidx"):
        return "rodata"
    return None


def elf_sections(data: bytes) -> dict[str, int]:
    """Allocated sections of a 32-bit little-endian ELF (object or executable): name -> size."""
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise CompileError("not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections = {}
    for name, kind, flags, _, _, size, *_ in headers:
        if flags & 0x2 and size:  # SHF_ALLOC
            label = data[names_at + name:data.index(b"\0", names_at + name)].decode()
            sections[label] = sections.get(label, 0) + size
    return sections
