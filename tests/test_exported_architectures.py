"""More architectures users export (slow): ``transformers`` models built from tiny configs
(seeded random weights, never downloaded) and torchvision models with ``weights=None``,
exported by torch's TorchScript exporter (torchvision's with a symbolic batch, which the
compile binds to 1), compiled for this host and checked against onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from edgec import api
from edgec.runtime import load
from tests.models import ort_run

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def llama(t):
    return t.LlamaModel(t.LlamaConfig(vocab_size=64, max_position_embeddings=32, num_key_value_heads=2,
                                      use_cache=False, **TINY)), "text"


def t5_encoder(t):
    return t.T5EncoderModel(t.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)), "text"


def vit(t):
    return t.ViTModel(t.ViTConfig(image_size=32, patch_size=8, **TINY)), "image"


def swin(t):
    return t.SwinModel(t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                    window_size=4)), "image"


def whisper_encoder(t):
    config = t.WhisperConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                             max_source_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                             decoder_start_token_id=1)
    return t.WhisperModel(config).encoder, "mel"


def wav2vec2(t):
    return t.Wav2Vec2Model(t.Wav2Vec2Config(**TINY, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)), "audio"


TRANSFORMERS = {f.__name__: f for f in (llama, t5_encoder, vit, swin, whisper_encoder, wav2vec2)}
TORCHVISION = ("mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "lraspp_mobilenet_v3_large", "maxvit_t")
"""torchvision names: squeeze-and-excitation, SiLU, grouped convs, bilinear Resize of a segmenter, window attention."""


def example(kind: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "text": {"input_ids": rng.integers(0, 64, (1, 8)).astype(np.int64), "attention_mask": np.ones((1, 8), np.int64)},
        "image": {"pixel_values": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)},
        "mel": {"input_features": rng.standard_normal((1, 16, 32)).astype(np.float32)},
        "audio": {"input_values": rng.standard_normal((1, 800)).astype(np.float32)},
        "torchvision": {"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)},
    }[kind]


class MainOutput(torch.nn.Module):
    """The tensor users read: the last hidden state, a segmenter's ``out``, or the logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        result = self.model(*inputs)
        if hasattr(result, "last_hidden_state"):
            return result.last_hidden_state
        return result["out"] if isinstance(result, dict) else result


def export_compile_compare(model, kind: str, tmp_path) -> None:
    torch.manual_seed(0)
    feeds = example(kind)
    path = tmp_path / "model.onnx"
    dynamic = {name: {0: "batch"} for name in feeds} if kind == "torchvision" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MainOutput(model.eval()), tuple(torch.from_numpy(v) for v in feeds.values()), str(path),
                          input_names=list(feeds), output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes=dynamic)
    artifact = api.compile(path, "x86-64", output=tmp_path / "model.edgec").output
    actual, expected = load(artifact).run(feeds)["y"], ort_run(onnx.load(path), feeds)["y"]
    assert actual.shape == expected.shape and np.abs(expected).max() > 0
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformers_architecture_matches_onnxruntime(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model, kind = TRANSFORMERS[name](transformers)
    export_compile_compare(model, kind, tmp_path)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_architecture_matches_onnxruntime(name, tmp_path):
    from tests.torchvision_models import import_torchvision

    try:
        torchvision = import_torchvision()
    except ImportError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    models = torchvision.models.segmentation if name.startswith("lraspp") else torchvision.models
    extra = {"weights_backbone": None} if name.startswith("lraspp") else {}
    export_compile_compare(getattr(models, name)(weights=None, **extra), "torchvision", tmp_path)
