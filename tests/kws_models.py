"""Keyword-spotting models exported by torch (TorchScript exporter, random weights): MFCC-like
[1, 49, 10] frames -> LSTM or GRU -> dense, and their streaming twins, which take one frame and
the recurrent state and return the logits and the next state, so the caller keeps the state."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

FRAMES, FEATURES, HIDDEN, CLASSES = 49, 10, 23, 12
OPSET = 17


def build(cell: str, streaming: bool, seed: int = 0):
    """The torch module; the same seed gives the whole-sequence and streaming twins the same weights."""
    import torch
    from torch import nn

    class Kws(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(FEATURES, HIDDEN, batch_first=True)
            self.fc = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x, *state):
            if not streaming:
                return self.fc(self.rnn(x)[0])  # logits after every frame: [1, 49, 12]
            y, new_state = self.rnn(x, state if cell == "lstm" else state[0])
            new_state = new_state if cell == "lstm" else (new_state,)
            return (self.fc(y[:, 0]), *new_state)

    torch.manual_seed(seed)
    return Kws().eval()


def state_names(cell: str) -> list[str]:
    return ["h", "c"] if cell == "lstm" else ["h"]


def export(cell: str, streaming: bool, path: Path) -> Path:
    """``path`` holding the model; inputs ``x`` (and the states), outputs ``logits`` (and the new states)."""
    import onnx
    import torch

    net = build(cell, streaming)
    states = state_names(cell)
    if streaming:
        args = (torch.zeros(1, 1, FEATURES), *(torch.zeros(1, 1, HIDDEN) for _ in states))
        inputs, outputs = ["x", *states], ["logits", *(f"{s}_out" for s in states)]
    else:
        args, inputs, outputs = (torch.zeros(1, FRAMES, FEATURES),), ["x"], ["logits"]
    with warnings.catch_warnings():  # torch deprecates this exporter in favour of the onnxscript-based one
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
                          dynamo=False)
    model = onnx.load(path)
    model.ir_version = min(model.ir_version, 13)
    onnx.save(model, path)
    return path


def mfcc_like(seed: int) -> np.ndarray:
    """[1, 49, 10] frames of MFCC-like magnitudes: a decaying spectrum with noise."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, FRAMES, FEATURES)) * np.linspace(3, 0.3, FEATURES)).astype(np.float32)
