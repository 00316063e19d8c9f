"""The Instant Reflector: is the task achieved in the current frame, given the episode so far?

Sequence fed to the frozen LLM, per decision at frame o_t::

    [ prompt with the instruction | M frames x grid^2 tokens | question ]  -> h_t (last token)

- frames: o_t plus M-1 earlier frames evenly spaced from o_0 (``sample_frame_indices``), each
  through the frozen vision encoder, pooled to a grid, projected into the LLM's embedding
  space by an MLP, plus a learned embedding per grid cell and per frame slot;
- prompt and question: text through the LLM's own (frozen) token embeddings;
- h_t: the final hidden state of the question's last token (it attends to everything before);
- R = sigmoid(head(h_t)), head = LayerNorm + 2-layer MLP; done when R > threshold (eta).

Trained: the projector (MLP + cell and slot embeddings) and the reward head, nothing else.
The encoder and the LLM stay frozen and in eval mode. Freezing the LLM (no LoRA, unlike the
policy) keeps the reflector a fixed judge the policy is optimised against, and with a few
dozen episodes to learn from, the fewer free parameters the less it overfits.

Frame-feature cache. The frozen encoder's output for a frame never changes, so
``ReflectorSession`` encodes each new frame once and keeps its features: scoring o_t costs one
encoder pass plus one LLM pass over a fixed-length sequence, however long the episode is.
Training uses the same idea: every dataset frame is encoded once up front.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from world_env_training.models.backbones import load_llm, load_vision_encoder
from world_env_training.checkpoints import atomic_dir, latest_checkpoint
from world_env_training.models.reflector.configuration_reflector import ReflectorConfig
from world_env_training.models.reflector.processor_reflector import (
    FRAME_FEATURES, LABEL, TEXT_IDS, TEXT_MASK, ReflectorProcessor)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FROZEN_PREFIXES = ("vision_encoder.", "llm.")  # rebuilt from their sources, never saved


class FrameProjector(nn.Module):
    """Encoder features (B, M, P, C) -> LLM token embeddings (B, M * P, D): an MLP per token
    plus a learned embedding per grid cell (where in the image) and per frame slot (when)."""

    def __init__(self, dim_in: int, width: int, tokens_per_frame: int, num_frames: int, token_std: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim_in, width), nn.GELU(), nn.Linear(width, width))
        # New embeddings start at the size of the LLM's own token embeddings.
        self.cell_embed = nn.Parameter(torch.randn(tokens_per_frame, width) * token_std)
        self.slot_embed = nn.Parameter(torch.randn(num_frames, width) * token_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.mlp(features) + self.cell_embed + self.slot_embed[:, None, :]
        return x.flatten(1, 2)


class RewardHead(nn.Module):
    """h_t (B, D) -> logit (B,); R = sigmoid(logit)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(hidden)).squeeze(-1)


class Reflector(nn.Module):
    """Frozen vision encoder + frozen LLM + trained projector and reward head.

    Build with ``Reflector(config)`` or ``Reflector.from_pretrained(folder_or_run)``.

    API:
        encode_frames(images) -> (N, P, C): frozen features of uint8 frames (what is cached).
        forward(batch) -> {"loss", "logits", "reward"}: BCE on a processed batch with labels.
        logits(batch) -> (B,) with gradients to the projector and head.
        score_episode(frames, instruction) -> (T+1,) R for every frame of a recorded episode.
        score_uncached(frames, instruction) -> R of the last frame, re-encoding what it reads.
        session(batch_size) -> ReflectorSession: online scoring with the frame-feature cache.
    """

    def __init__(self, config: ReflectorConfig):
        super().__init__()
        self.config = config
        self.vision_encoder = load_vision_encoder(config.vision_encoder, config.vision_grid, config.backbone_seed)
        self.llm, tokenizer = load_llm(config.llm, config.llm_layers, config.backbone_seed)
        self.vision_encoder.requires_grad_(False)
        self.llm.requires_grad_(False)
        self.processor = ReflectorProcessor(config, tokenizer, self.vision_encoder.image_mean,
                                            self.vision_encoder.image_std)
        width = self.llm.config.hidden_size
        token_std = float(self.llm.get_input_embeddings().weight.detach().std())
        self.projector = FrameProjector(self.vision_encoder.out_dim, width, config.tokens_per_frame,
                                        config.num_frames, token_std)
        self.head = RewardHead(width, config.head_hidden_dim)
        self.precision = "fp32"
        self.eval()

    def set_precision(self, precision: str) -> "Reflector":
        """fp32, or bf16 autocast of the frozen encoder and LLM when scoring (``encode_frames``,
        ``reward_from_features``; ``world_env_training.models.precision``), or auto (bf16 where
        the device computes it natively). Training's ``logits`` calls with gradients are not
        affected; features and rewards are returned in fp32."""
        from world_env_training.models.precision import resolve_precision

        self.precision = resolve_precision(precision, self.device)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.vision_encoder.eval()  # frozen: BatchNorm keeps its ImageNet statistics
        self.llm.eval()  # frozen: no dropout, the judge is deterministic
        return self

    @property
    def device(self) -> torch.device:
        return self.head.norm.weight.device

    @property
    def threshold(self) -> float:
        return self.config.threshold

    # --- network ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_frames(self, images, batch_size: int = 64) -> torch.Tensor:
        """(N, H, W, 3) uint8 upright RGB -> (N, tokens_per_frame, C) float32 frozen features."""
        from world_env_training.models.precision import autocast

        images = np.asarray(images) if not torch.is_tensor(images) else images
        out = []
        for start in range(0, len(images), batch_size):
            x = self.processor.images(images[start:start + batch_size]).to(self.device)
            with autocast(self.device, self.precision):
                out.append(self.vision_encoder(x).float())
        if not out:
            raise ValueError("encode_frames: no images")
        return torch.cat(out)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reward logits (B,) of a processed batch (see ``ReflectorProcessor.__call__``)."""
        frames = self.projector(batch[FRAME_FEATURES])
        embed = self.llm.get_input_embeddings()
        text = embed(batch[TEXT_IDS])
        b = text.shape[0]
        question = embed(self.processor.question_ids.to(self.device)).unsqueeze(0).expand(b, -1, -1)
        embeds = torch.cat([text, frames, question], dim=1)

        length = embeds.shape[1]
        valid = torch.cat([batch[TEXT_MASK], torch.ones(b, length - text.shape[1], dtype=torch.bool,
                                                        device=embeds.device)], dim=1)
        idx = torch.arange(length, device=embeds.device)
        allowed = (idx[None, :] <= idx[:, None])[None] & valid[:, None, :]
        # A pad row that may attend to nothing would give NaNs; letting it see itself is harmless
        # since no real token attends to it.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=embeds.device)
        mask = torch.zeros(b, 1, length, length, dtype=embeds.dtype, device=embeds.device)
        mask.masked_fill_(~allowed[:, None], torch.finfo(embeds.dtype).min)
        positions = (valid.long().cumsum(1) - 1).clamp_min(0)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        return self.head(out.last_hidden_state[:, -1])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """BCE between R and the per-frame success label (``batch[LABEL]``), mean over the batch."""
        logits = self.logits(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch[LABEL])
        return {"loss": loss, "logits": logits, "reward": torch.sigmoid(logits.detach())}

    @torch.no_grad()
    def reward_from_features(self, features: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """R (B,) for already chosen and encoded frames (B, M, P, C)."""
        from world_env_training.models.precision import autocast

        batch = self.processor(features, instructions, device=self.device)
        with autocast(self.device, self.precision):
            logits = self.logits(batch)
        return torch.sigmoid(logits.float())

    @torch.no_grad()
    def score_uncached(self, frames, instruction: str) -> float:
        """R of the last of ``frames`` (o_0..o_t, (t+1, H, W, 3) uint8), encoding the M frames
        it reads from pixels: the reference the cached session must reproduce."""
        picks = self.processor.frame_indices(len(frames) - 1)
        features = self.encode_frames(np.asarray(frames)[picks])
        return float(self.reward_from_features(features[None], [instruction])[0])

    @torch.no_grad()
    def score_episode(self, frames, instruction: str, batch_size: int = 32,
                      features: torch.Tensor | None = None) -> np.ndarray:
        """R at every frame o_0..o_T of a recorded episode ((T+1, H, W, 3) uint8), each judged
        from o_0..o_t only, as an online session would. Each frame is encoded once; pass
        ``features`` (``encode_frames(frames)``) to skip even that."""
        if features is None:
            features = self.encode_frames(frames)
        rewards = []
        for start in range(0, len(features), batch_size):
            ts = range(start, min(start + batch_size, len(features)))
            picks = torch.tensor([self.processor.frame_indices(t) for t in ts], device=features.device)
            rewards.append(self.reward_from_features(features[picks], [instruction] * len(ts)))
        return torch.cat(rewards).float().cpu().numpy()

    def session(self, batch_size: int = 1) -> "ReflectorSession":
        return ReflectorSession(self, batch_size)

    # --- parameters -------------------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        return {"total": count(self), "trainable": sum(p.numel() for p in self.trainable_parameters()),
                "projector": count(self.projector), "head": count(self.head),
                "vision_encoder": count(self.vision_encoder), "llm": count(self.llm)}

    # --- files ----------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the model folder atomically: ``config.json`` and ``model.safetensors``."""
        with atomic_dir(save_directory) as tmp:
            self.write_files(tmp)

    def write_files(self, folder: str | Path) -> None:
        """Write into an existing folder (used inside ``atomic_dir`` to add optimizer state to a
        checkpoint). Base weights are not written: ``from_pretrained`` rebuilds them."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / CONFIG_FILE).write_text(self.config.to_json())
        trained = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                   if not k.startswith(_FROZEN_PREFIXES)}
        save_file(trained, str(folder / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        threshold: float | None = None) -> "Reflector":
        """Load a model folder, or a training run folder (its newest complete checkpoint).
        ``threshold`` overrides the saved eta."""
        from safetensors.torch import load_file

        folder = resolve_model_folder(path)
        config = ReflectorConfig.from_json((folder / CONFIG_FILE).read_text())
        if threshold is not None:
            config = ReflectorConfig.from_dict({**config.to_dict(), "threshold": threshold})
        model = cls(config)
        missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=False)
        missing = [k for k in missing if not k.startswith(_FROZEN_PREFIXES)]
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_FILE}: missing {missing}, unexpected {unexpected}")
        return model.to(device).eval()


def resolve_model_folder(path: str | Path) -> Path:
    """``path`` itself if it holds a model, else the newest checkpoint of the run in ``path``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    newest = latest_checkpoint(path)
    if newest is not None:
        return newest
    raise FileNotFoundError(f"{path}: neither a reflector model folder ({CONFIG_FILE}) "
                            "nor a training run with checkpoints")


class ReflectorSession:
    """Online scoring of B growing episodes with a frame-feature cache.

    ``reset(instructions)`` starts B episodes; each ``score_batch(frames)`` appends one new frame
    per episode (o_0 first) and judges every episode's newest frame from its history.
    ``score(frame)`` is the B = 1 form. Frames are encoded when a judgement first reads them and
    their features cached (tokens_per_frame x C floats, 20 KB for the MobileNetV2 default),
    because the evenly spaced frames read later can be any earlier one.

    ``add_batch(frames)`` appends frames without judging them (judging only at chunk ends): they
    are kept as pixels and encoded only if a later judgement reads them, so a judgement every k
    frames encodes at most M frames instead of k. Those pixels stay in memory for the episode.

    Episodes advance independently: ``score_batch(frames, episodes=[0, 3])`` steps only those
    two (e.g. the ones not yet done in an RL rollout); frames is then (2, H, W, 3).
    """

    def __init__(self, model: Reflector, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        self.model, self.batch_size = model, batch_size
        self.instructions: list[str] = []
        # Per episode, every frame appended is in exactly one of these, by its index.
        self.features: list[dict[int, torch.Tensor]] = []  # encoded frames
        self.pixels: list[dict[int, np.ndarray]] = []       # frames not yet encoded

    def reset(self, instructions: str | list[str]) -> None:
        instructions = [instructions] if isinstance(instructions, str) else list(instructions)
        if len(instructions) != self.batch_size:
            raise ValueError(f"reset: {len(instructions)} instructions for a session of {self.batch_size} episodes")
        self.instructions = instructions
        self.features = [{} for _ in instructions]
        self.pixels = [{} for _ in instructions]

    def t(self, episode: int = 0) -> int:
        """Index of the newest frame of ``episode`` (-1 before its first frame)."""
        return len(self.features[episode]) + len(self.pixels[episode]) - 1

    def add_batch(self, frames, episodes: list[int] | None = None) -> list[int]:
        """Append one frame per episode ((b, H, W, 3) uint8) without judging it: later judgements
        read it among the earlier frames (encoded then, if they do). Returns the episodes."""
        if not self.instructions:
            raise RuntimeError("add_batch or score_batch before reset(instructions)")
        episodes = list(range(self.batch_size)) if episodes is None else list(episodes)
        if len(frames) != len(episodes):
            raise ValueError(f"score_batch: {len(frames)} frames for {len(episodes)} episodes")
        for row, episode in enumerate(episodes):
            self.pixels[episode][self.t(episode) + 1] = np.asarray(frames[row])
        return episodes

    @torch.no_grad()
    def score_batch(self, frames, episodes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Append one frame per episode ((b, H, W, 3) uint8) and score it: (R (b,), done (b,))."""
        episodes = self.add_batch(frames, episodes)
        picks = {e: self.model.processor.frame_indices(self.t(e)) for e in episodes}
        missing = sorted({(e, i) for e in episodes for i in picks[e] if i not in self.features[e]})
        if missing:
            encoded = self.model.encode_frames(np.stack([self.pixels[e][i] for e, i in missing]))
            for (e, i), feature in zip(missing, encoded):
                self.features[e][i] = feature
                del self.pixels[e][i]
        picked = torch.stack([torch.stack([self.features[e][i] for i in picks[e]]) for e in episodes])
        rewards = self.model.reward_from_features(picked, [self.instructions[e] for e in episodes])
        rewards = rewards.float().cpu().numpy()
        return rewards, rewards > self.model.threshold

    def score(self, frame) -> tuple[float, bool]:
        """B = 1: append ``frame`` ((H, W, 3) uint8) and return (R, done)."""
        rewards, done = self.score_batch(np.asarray(frame)[None])
        return float(rewards[0]), bool(done[0])
