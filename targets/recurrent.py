"""The activations and cell clip of ONNX's RNN, GRU and LSTM, as ONNX nodes for the unrolled steps.

``targets/onnx_rewrites.py`` unrolls the recurrent ops; this module builds each gate's
activation from the node's ``activations``, ``activation_alpha``, ``activation_beta`` and
``clip`` attributes. Rules, as onnxruntime reads them:

- every activation ONNX lists (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu,
  ScaledTanh, HardSigmoid, Elu, Softsign, Softplus), by name, case-insensitively;
- the alphas and betas are taken in order by the activations that have one, the op's own
  default where the list has run out;
- ``clip`` bounds each gate activation's input to [-clip, clip] (not LSTM's h(C), of the cell);
- one set of activations per direction (the reverse one second when bidirectional), the
  defaults where ``activations`` is absent; another name or count is refused.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgec.errors import CompileError

DEFAULTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
ALPHA = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0, "hardsigmoid": 0.2, "elu": 1.0}
"""Activations that take an alpha, with the default when ``activation_alpha`` runs out."""
BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}
"""Activations that take a beta, with the default."""
NAMES = {"relu", "tanh", "sigmoid", "softsign", "softplus", *ALPHA}

Activation = Callable[[str], str]


def activations(steps, node_label: str, op: str, attrs: dict, directions: int, dtype) -> list[list[Activation]]:
    """Per direction, the gate activations (f, g, h as the op has them), each clipped if asked."""
    names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    names = names or DEFAULTS[op] * directions
    per_direction = len(DEFAULTS[op])
    if len(names) != per_direction * directions:
        raise CompileError(f"{node_label}: {len(names)} activations given, {op} takes {per_direction} per direction "
                           f"({per_direction * directions} here)")
    unknown = [n for n in names if n.lower() not in NAMES]
    if unknown:
        raise CompileError(f"{node_label}: activation {unknown[0]!r} is not one ONNX defines for {op}")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    clip = attrs.get("clip")
    built = []
    for position, name in enumerate(names):
        kind = name.lower()
        alpha = (alphas.pop(0) if alphas else ALPHA[kind]) if kind in ALPHA else None
        beta = (betas.pop(0) if betas else BETA[kind]) if kind in BETA else None
        on_cell = op == "LSTM" and position % per_direction == 2  # h(C): onnxruntime does not clip the cell
        built.append(_activation(steps, kind, alpha, beta, None if on_cell else clip, dtype))
    return [built[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


def _activation(s, kind: str, alpha: float | None, beta: float | None, clip: float | None, dtype) -> Activation:
    def scalar(value: float) -> str:
        return s.const(np.array(value, dtype=dtype))

    def apply(x: str) -> str:
        if clip is not None:
            x = s("Clip", [x, scalar(-clip), scalar(clip)])
        if kind == "affine":
            return s("Add", [s("Mul", [x, scalar(alpha)]), scalar(beta)])
        if kind == "scaledtanh":
            return s("Mul", [s("Tanh", [s("Mul", [x, scalar(beta)])]), scalar(alpha)])
        if kind == "hardsigmoid":
            return s("HardSigmoid", [x], alpha=alpha, beta=beta)
        if kind in ("leakyrelu", "thresholdedrelu", "elu"):
            op = {"leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "elu": "Elu"}[kind]
            return s(op, [x], alpha=alpha)
        return s({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign",
                  "softplus": "Softplus"}[kind], [x])

    return apply
