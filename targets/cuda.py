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
from .support import (ANY, FLOAT, NUMERIC, Predicate, attr_in, chain, conditions, default_domain, input_rank,
                      not_control_flow, not_denied, op_dtypes, ops, register_support, single_output, static_axes,
                      static_outputs, tensor_dtypes)

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


# -- what the GPU runs: the partitioner asks this through targets/support.py ----------------------

CUDA_OPS: dict[str, tuple[str, ...]] = {
    **ops("Conv ConvTranspose Gemm MatMul", FLOAT),
    **ops("AveragePool GlobalAveragePool GlobalMaxPool LpPool", FLOAT),
    **ops("MaxPool", FLOAT + ("int8",)),
    **ops("BatchNormalization InstanceNormalization LayerNormalization LRN", FLOAT),
    **ops("Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Gelu Erf", FLOAT),
    **ops("Exp Log Sqrt Reciprocal Pow Floor Ceil Round Softmax LogSoftmax Mean", FLOAT),
    **ops("Add Sub Mul Div Max Min Sum Abs Neg Clip", NUMERIC),
    **ops("Equal Less Greater LessOrEqual GreaterOrEqual And Or Not Xor", ("bool",)),
    **ops("ReduceMean ReduceL2", FLOAT),
    **ops("ReduceSum ReduceMax ReduceMin", NUMERIC),
    **ops("ArgMax ArgMin", ("int64",)),
    **ops("Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather Expand Tile Pad Identity "
          "Dropout DepthToSpace SpaceToDepth Cast Where", ANY),
    **ops("Resize", FLOAT),
    **ops("QuantizeLinear", ("int8",)),
    **ops("DequantizeLinear", FLOAT),
}
"""Ops TVM's CUDA path schedules (dlight's rules: matmul, GEMV, reductions, elementwise),
by the dtypes of their outputs. Drawn from TVM 0.27's ONNX frontend and the ops of the nine
zoo models. Checked by compiling one-op models for the ``cuda`` target (which needs no GPU):
the unary ops, pools, LRN, Softmax, ReduceMean, ArgMax and Resize compile. Nothing here has
run on a GPU yet (none was available), so an op is listed only when its Relax lowering is
plain TIR that dlight's fallback rule covers."""

CUDA_DENY: dict[str, str] = {
    **dict.fromkeys(("NonZero", "Unique", "Compress"), "its output size depends on the data"),
    "NonMaxSuppression": "TVM 0.27 fails to compile it for CUDA (a buffer used before its definition)",
    "TopK": "sorting compiles for CUDA in TVM 0.27 but has not been run on a GPU; kept on the host until it is",
    **dict.fromkeys(("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"), "random number generation has no TVM GPU kernel with ONNX's semantics"),
    **dict.fromkeys(("Shape", "Size"), "shape arithmetic belongs on the host, which sizes the kernels"),
}
"""Ops kept off the accelerator even when they are in no table's way. Conservative: no GPU
was available to run them, only the compiler (NonMaxSuppression fails there; TopK, NonZero
and Unique compile); an entry leaves when a GPU test shows the op compiles and matches."""

CUDA_CONDITIONS: dict[str, Predicate] = {
    **dict.fromkeys(("Conv", "ConvTranspose", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool"),
                    input_rank(3, 5)),
    "MaxPool": chain(input_rank(3, 5), single_output("an Indices output"), attr_in("storage_order", (0,), 0)),
    "BatchNormalization": chain(single_output("training outputs"), attr_in("training_mode", (0,), 0)),
    "Resize": attr_in("mode", ("nearest", "linear"), "nearest"),
    "Pad": attr_in("mode", ("constant", "reflect", "edge"), "constant"),
    **dict.fromkeys(("Squeeze", "Unsqueeze", "ReduceSum"), static_axes(1)),
    **dict.fromkeys(("ReduceMean", "ReduceL2", "ReduceMax", "ReduceMin"), static_axes(1)),
}
"""Attribute and shape conditions, beyond op and dtype. Relax has 1-D to 3-D convolutions
and pools. TVM 0.27's frontend rejects MaxPool's Indices output and Pad mode=wrap outright;
Resize mode=cubic compiles but, like everything here, has not run on a GPU, so it stays."""



@register_support("cuda")
def cuda_capability(target: TargetSpec) -> Predicate:
    return chain(
        default_domain,
        not_control_flow,
        static_outputs,
        not_denied(CUDA_DENY),
        op_dtypes(CUDA_OPS, "cuda"),
        tensor_dtypes(target.dtypes, f"target {target.name}"),
        conditions(CUDA_CONDITIONS),
    )
