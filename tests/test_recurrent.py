"""RNN, GRU and LSTM against onnxruntime at odd sizes, one attribute set per case: directions,
initial states, sequence lengths, peepholes, both layouts, the activations ONNX allows with
their alphas and betas, clip and input_forget; and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.conformance.backend import EdgecBackend
from edgec.errors import CompileError
from tests.models import make_model, ort_run

SEQ, BATCH, INPUT, HIDDEN = 3, 2, 5, 3
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def recurrent_model(op: str, direction: str = "forward", layout: int = 0, initial: bool = False,
                    lens: bool = False, peepholes: bool = False, seed: int = 0, **attrs):
    """One ``op`` node with random weights; X (and the initial states) are graph inputs."""
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.6).astype(np.float32), name)

    x_shape = [BATCH, SEQ, INPUT] if layout else [SEQ, BATCH, INPUT]
    state_shape = [BATCH, d, HIDDEN] if layout else [d, BATCH, HIDDEN]
    inits = [weight("W", d, g * HIDDEN, INPUT), weight("R", d, g * HIDDEN, HIDDEN), weight("B", d, 2 * g * HIDDEN)]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "B", "", "", "", ""]
    if lens:
        inits.append(numpy_helper.from_array(np.array([SEQ, SEQ - 1][:BATCH], np.int32), "lens"))
        names[4] = "lens"
    if initial:
        names[5] = "h0"
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape))
        if op == "LSTM":
            names[6] = "c0"
            inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape))
    if peepholes:
        inits.append(weight("P", d, 3 * HIDDEN))
        names[7] = "P"
    names = names[:8 if op == "LSTM" else 6]
    while names[-1] == "":
        names.pop()
    outputs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, names, outputs, name="cell", hidden_size=HIDDEN, direction=direction, layout=layout,
                            **attrs)
    return make_model([node], inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                      inits, opset=14)


def feeds_for(model, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
            for v in model.graph.input}


def reference(op: str, attrs: dict, feeds: dict) -> dict[str, np.ndarray]:
    """onnxruntime's outputs; for ``layout=1`` (onnxruntime refuses it) those of the layout-0
    twin, transposed: X and the states swap their first two axes, Y goes [T, D, B, H] -> [B, T, D, H]."""
    if not attrs.get("layout"):
        return ort_run(recurrent_model(op, **attrs), feeds)
    twin = recurrent_model(op, **{**attrs, "layout": 0})
    outputs = ort_run(twin, {k: v.transpose(1, 0, 2) for k, v in feeds.items()})
    return {k: v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2) for k, v in outputs.items()}


CASES = {
    "lstm-forward": ("LSTM", {}),
    "lstm-reverse-initial-peepholes": ("LSTM", {"direction": "reverse", "initial": True, "peepholes": True}),
    "lstm-bidirectional-lens-layout1": ("LSTM", {"direction": "bidirectional", "lens": True, "layout": 1,
                                                 "initial": True}),
    "lstm-activations": ("LSTM", {"direction": "bidirectional", "activations": [
        "HardSigmoid", "LeakyRelu", "Softsign", "Affine", "ScaledTanh", "Elu"],
        "activation_alpha": [0.3, 0.05, 0.7, 1.2, 0.9], "activation_beta": [0.4, 0.1, 0.8]}),
    "lstm-clip-input-forget": ("LSTM", {"clip": 0.6, "input_forget": 1, "peepholes": True, "initial": True}),
    "gru-forward": ("GRU", {}),
    "gru-linear-before-reset-bidirectional-lens": ("GRU", {"direction": "bidirectional", "linear_before_reset": 1,
                                                           "lens": True, "initial": True}),
    "gru-activations-clip-layout1": ("GRU", {"direction": "reverse", "layout": 1, "clip": 0.5,
                                             "activations": ["Sigmoid", "Softplus"]}),
    "gru-default-alphas": ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"]}),
    "rnn-forward-initial": ("RNN", {"initial": True}),
    "rnn-bidirectional-activations-lens": ("RNN", {"direction": "bidirectional", "lens": True,
                                                   "activations": ["Relu", "ThresholdedRelu"],
                                                   "activation_alpha": [0.2]}),
    "rnn-clip-layout1": ("RNN", {"layout": 1, "clip": 0.4, "activations": ["Sigmoid"]}),
}


SLOW = {"lstm-forward", "lstm-reverse-initial-peepholes", "gru-forward", "gru-default-alphas", "rnn-forward-initial",
        "rnn-clip-layout1"}
"""Cases the default run leaves to ``-m slow`` (each compile takes seconds); the rest cover every attribute once."""


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in sorted(CASES)])
def test_recurrent_matches_onnxruntime(case):
    op, attrs = CASES[case]
    model = recurrent_model(op, **attrs)
    feeds = feeds_for(model)
    expected = reference(op, attrs, feeds)
    actual = EdgecBackend.prepare(model).run([feeds[v.name] for v in model.graph.input])
    assert len(actual) == len(expected)
    for name, value in zip(expected, actual):
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5, err_msg=f"{case}: {name}")


@pytest.mark.parametrize(("attrs", "message"), [
    ({"activations": ["Gelu"]}, "activation 'Gelu' is not one ONNX defines for RNN"),
    ({"activations": ["Tanh", "Tanh"]}, "2 activations given, RNN takes 1 per direction"),
])
def test_recurrent_refuses_in_one_line(attrs, message):
    with pytest.raises(CompileError) as refusal:
        EdgecBackend.prepare(recurrent_model("RNN", **attrs))
    assert message in str(refusal.value) and "'cell'" in str(refusal.value) and "\n" not in str(refusal.value)
