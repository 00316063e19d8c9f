"""The VLA policy: OpenVLA-OFT's recipe on small backbones, with a Laplace scale head.

Sequence fed to the LLM, per sample (``forward`` and ``action_distribution`` share it)::

    [ vision tokens (grid^2) | proprio token | prompt text tokens | action queries (chunk_size) ]

- vision tokens: the frozen encoder's feature map pooled to a grid, projected by an MLP into
  the LLM's embedding space, plus a learned position embedding per cell;
- proprio token: the standardised state through an MLP (OFT's proprio projector);
- text: the prompted instruction through the LLM's own (frozen) token embeddings;
- action queries: ``chunk_size`` learned embeddings, one per future step, placed last. With
  ``bidirectional_actions`` they attend to every real token including each other (OFT's
  parallel decoding; a custom 4-D mask); otherwise the causal mask applies to them too. One
  forward pass decodes the whole chunk either way. (OFT uses one query per step *and* action
  dimension, chunk_size x 7 tokens; one per step is 7x fewer tokens, which matters on CPU.)

Text lengths differ within a batch: the right-padded text sits in the middle of the sequence,
pad positions are masked out as keys, and position ids count real tokens only, so every
sample sees the same layout as it would alone and the queries are always the last tokens.

The queries' final hidden states go through a LayerNorm into two MLP heads: the mean ``mu``
(trained with L1, as OFT) and the Laplace log-scale ``beta`` (trained with the Laplace NLL
against the detached mean, on detached features: the scale head is a light head on top of the
policy, and its gradients, in SFT and in RL alike, reach only its own weights), softly bounded
to [log_scale_min, log_scale_max] by a sigmoid so its gradient never vanishes the way a hard
clamp's would. Both are in normalised action units inside the network;
``action_distribution`` returns them in LIBERO units (an affine map of a Laplace is a
Laplace), which is what RL samples from and scores.

Trained: LoRA adapters on the LLM, the projectors, the position embedding, the action queries
and the heads. Frozen: the base LLM weights (including token embeddings) and the whole vision
encoder. The encoder stays frozen, in eval mode (BatchNorm statistics fixed): with a handful of
demonstrations per task fine-tuning an ImageNet CNN overfits, a CNN offers no attention layers
for LoRA (OFT trains its ViT through LoRA), and skipping its backward pass saves CPU time; the
projector and learned position embeddings adapt its features instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from world_env_training.models.backbones import load_llm, load_vision_encoder
from world_env_training.checkpoints import atomic_dir, latest_checkpoint
from world_env_training.models.vla.configuration_vla import VLAConfig
from world_env_training.models.vla.processor_vla import (
    ACTION, ACTION_IS_PAD, OBS_IMAGE, OBS_STATE, TEXT_IDS, TEXT_MASK, VLAProcessor)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
_FROZEN_PREFIXES = ("vision_encoder.", "llm.")  # rebuilt from their sources, never saved
_LOG2 = math.log(2.0)
INITIAL_SCALE = 0.2  # Laplace scale the head starts at, normalised action units


# --- the Laplace law the policy samples from --------------------------------------------------
# Written out (rather than torch.distributions.Laplace) to take a torch.Generator for
# reproducible RL rollouts; the formulas are Laplace's, and tests compare against it.

def laplace_sample(mu: torch.Tensor, log_scale: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """a ~ Laplace(mu, exp(log_scale)) elementwise, by inverse CDF (reparameterised, like rsample)."""
    eps = torch.finfo(mu.dtype).eps
    u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) * (2 - eps) - (1 - eps)
    return mu - log_scale.exp() * u.sign() * torch.log1p(-u.abs())


def laplace_log_prob(actions: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(a) = sum over the last (action) dimension of -beta - |a - mu| / exp(beta) - log 2.

    Shapes (..., action_dim) -> (...): for a chunk (B, chunk, 7) that is one log-probability per
    executed step (B, chunk); sum over the last axis for the whole chunk's. Differentiable in
    ``mu`` and ``log_scale``. Score the action actually sampled, before any clipping.
    """
    return (-log_scale - (actions - mu).abs() * torch.exp(-log_scale) - _LOG2).sum(-1)


def laplace_entropy(log_scale: torch.Tensor) -> torch.Tensor:
    """Entropy log(2 e b) summed over the last (action) dimension: (..., action_dim) -> (...)."""
    return (log_scale + 1.0 + _LOG2).sum(-1)


class MLP(nn.Sequential):
    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class ActionHead(nn.Module):
    """Query hidden states (B, chunk, D) -> (mu, log_scale), each (B, chunk, action_dim),
    in normalised action units. Gradients of log_scale stop at the scale head's own MLP."""

    def __init__(self, dim: int, hidden: int, action_dim: int, log_scale_min: float, log_scale_max: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mean = MLP(dim, hidden, action_dim)
        self.log_scale = MLP(dim, hidden, action_dim)
        self.log_scale_min, self.log_scale_max = log_scale_min, log_scale_max
        # Start near b = INITIAL_SCALE, the size of an untrained mean's errors, so the first
        # NLL gradients are moderate instead of dominating the loss.
        fraction = (math.log(INITIAL_SCALE) - log_scale_min) / (log_scale_max - log_scale_min)
        fraction = min(max(fraction, 0.05), 0.95)
        with torch.no_grad():
            self.log_scale[-1].bias.fill_(math.log(fraction / (1 - fraction)))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(hidden)
        span = self.log_scale_max - self.log_scale_min
        # The scale head reads detached features: its loss trains only its own weights. Letting
        # the NLL into the shared trunk stalls the mean (measured: a batch the mean alone fits
        # to L1 0.08 in 120 steps stays at 0.30 with the NLL flowing back).
        return self.mean(h), self.log_scale_min + span * torch.sigmoid(self.log_scale(h.detach()))


class VLAPolicy(nn.Module):
    """Vision-language-action policy predicting a Laplace distribution over an action chunk.

    Build with ``VLAPolicy(config, stats)`` (fresh LoRA and heads) or
    ``VLAPolicy.from_pretrained(folder)``. ``processor`` converts raw observations.

    Batched API:
        forward(batch) -> {"loss", "l1", "nll", "scale"}: training losses on a processed batch.
        action_distribution(batch) -> (mu, log_scale) in LIBERO units, differentiable (RL).
        predict_action_chunk(images, states, instructions) -> (mu, log_scale), no gradient.
        sample / log_prob / entropy: the Laplace law over those outputs (static).
    """

    sample = staticmethod(laplace_sample)
    log_prob = staticmethod(laplace_log_prob)
    entropy = staticmethod(laplace_entropy)

    def __init__(self, config: VLAConfig, stats: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.config = config
        self.vision_encoder = load_vision_encoder(config.vision_encoder, config.vision_grid, config.backbone_seed)
        self.llm, tokenizer = load_llm(config.llm, config.llm_layers, config.backbone_seed)
        self.processor = VLAProcessor(config, tokenizer, self.vision_encoder.image_mean,
                                      self.vision_encoder.image_std, stats)
        width = self.llm.config.hidden_size
        hidden = config.head_hidden_dim or width
        # New embeddings start at the size of the LLM's own token embeddings.
        token_std = float(self.llm.get_input_embeddings().weight.detach().std())
        self.vision_projector = MLP(self.vision_encoder.out_dim, hidden, width)
        self.vision_pos_embed = nn.Parameter(torch.randn(config.num_vision_tokens, width) * token_std)
        self.proprio_projector = MLP(config.proprio_dim, hidden, width)
        self.action_queries = nn.Parameter(torch.randn(config.chunk_size, width) * token_std)
        self.action_head = ActionHead(width, hidden, config.action_dim, config.log_scale_min, config.log_scale_max)
        self.vision_encoder.requires_grad_(False)
        self.llm.requires_grad_(False)
        self.wrap_with_peft()

    def wrap_with_peft(self) -> None:
        """Put LoRA adapters on the LLM (the only place peft is configured); base weights stay frozen."""
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, bias="none")
        self.llm = get_peft_model(self.llm, lora)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_encoder.eval()  # frozen: BatchNorm keeps its ImageNet statistics
        return self

    @property
    def device(self) -> torch.device:
        return self.action_queries.device

    # --- network ------------------------------------------------------------------------------

    def _sequence(self, batch: dict[str, torch.Tensor]):
        """Embeddings (B, L, D), additive 4-D attention mask and position ids of the layout above."""
        cfg = self.config
        with torch.no_grad():
            vision = self.vision_encoder(batch[OBS_IMAGE])
        vision = self.vision_projector(vision) + self.vision_pos_embed
        proprio = self.proprio_projector(batch[OBS_STATE]).unsqueeze(1)
        text = self.llm.get_input_embeddings()(batch[TEXT_IDS])
        b = text.shape[0]
        queries = self.action_queries.unsqueeze(0).expand(b, -1, -1)
        embeds = torch.cat([vision, proprio, text, queries], dim=1)

        ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=embeds.device)  # noqa: E731
        valid = torch.cat([ones(vision.shape[1] + 1), batch[TEXT_MASK], ones(cfg.chunk_size)], dim=1)
        length = embeds.shape[1]
        idx = torch.arange(length, device=embeds.device)
        allowed = idx[None, :] <= idx[:, None]  # causal
        if cfg.bidirectional_actions:
            allowed = allowed | (idx[:, None] >= length - cfg.chunk_size)
        allowed = (allowed[None] & valid[:, None, :]) | torch.eye(length, dtype=torch.bool, device=embeds.device)
        mask = torch.zeros(b, 1, length, length, dtype=embeds.dtype, device=embeds.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(embeds.dtype).min)
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        return embeds, mask, positions

    def _normalized_distribution(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, mask, positions = self._sequence(batch)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        return self.action_head(out.last_hidden_state[:, -self.config.chunk_size:])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training losses on a processed batch (``processor(..., actions=, action_is_pad=)``).

        l1: mean |a - mu| over the non-padded entries (normalised units); trains the mean.
        nll: mean Laplace negative log-likelihood per action entry with mu detached (and the
            scale head's input detached, see ActionHead): the scale head learns the size of the
            mean's errors and nothing else. Letting it into mu would reweight the mean's loss by
            1/b, so that already-precise dimensions dominate.
        loss: l1 + nll_weight * nll. scale: mean predicted b (normalised units), a diagnostic.
        """
        mu, log_scale = self._normalized_distribution(batch)
        target = batch[ACTION]
        valid = (~batch[ACTION_IS_PAD]).unsqueeze(-1).expand_as(target).to(mu.dtype)
        count = valid.sum().clamp_min(1.0)
        l1 = ((target - mu).abs() * valid).sum() / count
        nll_terms = log_scale + _LOG2 + (target - mu.detach()).abs() * torch.exp(-log_scale)
        nll = (nll_terms * valid).sum() / count
        scale = (log_scale.detach().exp() * valid).sum() / count
        return {"loss": l1 + self.config.nll_weight * nll, "l1": l1, "nll": nll, "scale": scale}

    def action_distribution(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_scale), each (B, chunk_size, action_dim), in LIBERO action units, with gradients."""
        return self.processor.unnormalize_distribution(*self._normalized_distribution(batch))

    @torch.no_grad()
    def predict_action_chunk(self, images, states, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw observations -> (mu, log_scale), each (B, chunk_size, action_dim), LIBERO units.

        images: (B, H, W, 3) uint8 upright RGB; states: (B, proprio_dim); instructions: B strings.
        mu is not clipped: LIBERO's [-1, 1] limit is applied to the action that is executed.
        """
        batch = self.processor(images, states, instructions, device=self.device)
        return self.action_distribution(batch)

    # --- parameters -------------------------------------------------------------------------

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.llm.named_parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """Projectors, position embedding, action queries and heads: everything trained but LoRA."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(_FROZEN_PREFIXES)]

    def parameter_counts(self) -> dict[str, int]:
        params = dict(self.named_parameters())
        total = sum(p.numel() for p in params.values())
        lora = sum(p.numel() for p in self.lora_parameters())
        heads = sum(p.numel() for p in self.head_parameters())
        return {"total": total, "trainable": lora + heads, "lora": lora, "heads": heads,
                "vision_encoder": sum(p.numel() for p in self.vision_encoder.parameters())}

    # --- files ----------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the model folder atomically (see ``write_files`` for its contents)."""
        with atomic_dir(save_directory) as tmp:
            self.write_files(tmp)

    def write_files(self, folder: str | Path) -> None:
        """Write into an existing folder: ``config.json``; ``model.safetensors`` (every trained
        weight except LoRA); ``adapter/`` (peft's own adapter save); ``processor.safetensors``.
        Base weights are not written: ``from_pretrained`` rebuilds them from their source.
        Used directly inside ``atomic_dir`` to add files (optimizer state) to one checkpoint."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / CONFIG_FILE).write_text(self.config.to_json())
        trained = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                   if not k.startswith(_FROZEN_PREFIXES)}
        save_file(trained, str(folder / WEIGHTS_FILE))
        self.llm.save_pretrained(str(folder / ADAPTER_DIR), save_embedding_layers=False)
        self.processor.save(folder)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "VLAPolicy":
        """Load a model folder, or a training run folder (its newest complete checkpoint)."""
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights
        from safetensors.torch import load_file

        folder = resolve_model_folder(path)
        config = VLAConfig.from_json((folder / CONFIG_FILE).read_text())
        model = cls(config, VLAProcessor.load_stats(folder))
        trained = load_file(str(folder / WEIGHTS_FILE))
        missing, unexpected = model.load_state_dict(trained, strict=False)
        missing = [k for k in missing if not k.startswith(_FROZEN_PREFIXES)]
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_FILE}: missing {missing}, unexpected {unexpected}")
        result = set_peft_model_state_dict(model.llm, load_peft_weights(str(folder / ADAPTER_DIR), device="cpu"))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{folder / ADAPTER_DIR}: unexpected adapter weights {result.unexpected_keys[:5]}")
        return model.to(device).eval()


def resolve_model_folder(path: str | Path) -> Path:
    """``path`` itself if it holds a model, else the newest checkpoint of the run in ``path``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    newest = latest_checkpoint(path)
    if newest is not None:
        return newest
    raise FileNotFoundError(f"{path}: neither a VLA model folder ({CONFIG_FILE}) nor a training run with checkpoints")
