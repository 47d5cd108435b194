"""Small text transformers as users export them, for tests/test_transformers.py.

BERT-, DistilBERT- and GPT-2-style models come from ``transformers`` configs with tiny
hidden sizes and seeded random weights (never downloaded), plus a plain 2-layer torch
encoder behind an embedding Gather. Each is exported by torch's dynamo exporter (opset
18, needs onnxscript) or its TorchScript one (``dynamo=False``, opset 17), with a
symbolic batch and sequence length, as users export them: ``dynamic_axes`` names them
``batch`` and ``seq``; the dynamo exporter, given ``Dim.DYNAMIC``, names its own (``s41``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SEQ = 8
VOCAB = 64
EXPORTERS = {"dynamo": 18, "torchscript": 17}
"""Exporter -> the opset it is asked for."""


def hidden_states(model, extra_name: str | None = None):
    """The model called with named tensors only, returning the last hidden state: what an
    exporter sees of a pipeline's encoder (positional arguments reach ``use_cache`` and such).
    ``extra_name``: a third input, token_type_ids or position_ids."""
    from torch import nn

    class LastHiddenState(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, extra_ids=None):
            extra = {} if extra_ids is None else {extra_name: extra_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    return LastHiddenState()


def bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)
    return hidden_states(BertModel(config), "token_type_ids"), ("input_ids", "attention_mask", "token_type_ids")


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    return hidden_states(DistilBertModel(config)), ("input_ids", "attention_mask")


def gpt2():
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, use_cache=False)
    return hidden_states(GPT2Model(config), "position_ids"), ("input_ids", "attention_mask", "position_ids")


def encoder():
    """Embedding Gather, learned positions, a 2-layer post-norm encoder with GELU, a mask."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, 32)
            self.positions = nn.Embedding(32, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True)
            self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            hidden = self.tokens(input_ids) + self.positions(positions)
            return self.layers(hidden, src_key_padding_mask=attention_mask == 0)

    return Encoder(), ("input_ids", "attention_mask")


MODELS = {"bert": bert, "distilbert": distilbert, "gpt2": gpt2, "encoder": encoder}


def example_inputs(names, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids, a mask with the last two positions padded, segment ids, position ids; int64 as exported."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, VOCAB, (batch, SEQ)).astype(np.int64)}
    mask = np.ones((batch, SEQ), np.int64)
    mask[:, -2:] = 0
    feeds["attention_mask"] = mask
    feeds["token_type_ids"] = (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int64).repeat(batch, 0)
    feeds["position_ids"] = np.arange(SEQ, dtype=np.int64)[None, :].repeat(batch, 0)
    return {name: feeds[name] for name in names}


def export(name: str, exporter: str, path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Build model ``name`` with seeded weights and export it; returns the file and example inputs."""
    import onnx
    import torch

    torch.manual_seed(0)
    model, names = MODELS[name]()
    model.eval()
    feeds = example_inputs(names)
    # torch.export specializes a size-1 dim, so the example batch is 2.
    args = tuple(torch.from_numpy(example_inputs(names, batch=2, seed=1)[n]) for n in names)
    opset = EXPORTERS[exporter]
    # Not under no_grad: that sends torch's encoder layer down a fused fast path no exporter knows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch, seq = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
            torch.onnx.export(model, args, str(path), input_names=list(names), opset_version=opset, dynamo=True,
                              dynamic_shapes=tuple({0: batch, 1: seq} for _ in names), external_data=False)
        else:
            torch.onnx.export(model, args, str(path), input_names=list(names), opset_version=opset, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    proto = onnx.load(path)
    if proto.ir_version > 13:  # onnxruntime 1.31 refuses newer
        proto.ir_version = 13
        onnx.save(proto, path)
    return path, feeds
