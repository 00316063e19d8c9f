"""Imagination against reality: the imagined environment as LOOP runs it, against LIBERO.

One run, one machine, one resolution (the world model's):

- LIBERO: frames/s of a control step plus an agent-view render, in one process and in two
  (``bench_libero``); the reference is the better of the two.
- Imagination: ``loop.collect_rollouts`` itself (the code LOOP's updates run), B rollouts from
  one start state for ``steps`` imagined steps, for each B in ``batch_sizes``: every step a
  world-model frame, the reflector's score of that frame, and every ``chunk_size`` steps the
  policy's chunk (its cost amortised over the chunk's steps). Timed after one warm-up
  rollout; frames/s counts the frames the world model predicted. The per-frame breakdown
  (ms): world model (tensors + denoising), reflector (``ReflectorSession.score_batch``, and
  ``add_batch`` for the frames it only caches when ``reflector_every`` > 1),
  policy (the chunk's action distribution and its sampling), other (everything else:
  commanded states, action maps, memory bank, LOOP's bookkeeping). The reflector's threshold is
  set to 0.99 so that random models run the episodes to the step limit.
- The world model's arithmetic: FLOPs per predicted frame (``torch.utils.flop_counter`` on one
  B = 1 frame: condition tokens once, the U-Net once per denoising step), the achieved GFLOP/s
  (FLOPs of the frames predicted / world-model seconds) and, as references, the GFLOP/s of a
  bf16 and of an fp32 square matmul measured in the same run.

Models: the defaults LOOP runs on a CPU (random weights: the cost does not depend on them),
i.e. the cpu profile's policy (``pipeline.CPU_POLICY``), ``ReflectorConfig()`` and the pipeline's
world model (``WorldModelConfig.latent_cpu()`` with ``AutoencoderConfig()``, or ``WorldModelConfig()``
with ``latent_world_model`` false), or saved models given by path. The last line of the report is
``imagination: <ratio>x LIBERO (<imagined> vs <libero> frames/s, B=<b>, <res>px, <dtype>)``
for the fastest B.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

__all__ = ["bench_imagination", "format_report", "matmul_gflops", "world_model_flops"]

INSTRUCTION = "pick up the alphabet soup and place it in the basket"


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5, device="cpu") -> float:
    """GFLOP/s of an n x n @ n x n matmul in ``dtype`` (median of ``repeats`` after a warm-up)."""
    g = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def world_model_flops(model, sampler_steps: int, device="cpu") -> dict:
    """FLOPs of one B = 1 prediction as a rollout makes it: {"frame": total, "step": one U-Net
    call}. A latent model's rollout passes its cached latents and decoded image, so a frame costs
    one decoder call and no encoder call."""
    from torch.utils.flop_counter import FlopCounterMode

    from world_env_training.models.world_model import make_scheduler, predict_next_frames
    from world_env_training.models.world_model.processor_world_model import DECODED, GEOMETRY_CHANNELS, LATENTS

    res, k = model.config.resolution, model.config.memory_frames
    batch = model.processor(history=np.zeros((1, k, res, res, 3), np.uint8),
                            action_map=np.zeros((1, res, res, 3), np.uint8),
                            state=np.zeros((1, 7), np.float32), commanded=np.zeros((1, 7), np.float32),
                            geometry=np.zeros((1, GEOMETRY_CHANNELS, res, res), np.float32), device=device)
    if model.autoencoder is not None:
        ae = model.autoencoder.config
        batch[LATENTS] = torch.zeros(1, k, ae.latent_channels, ae.latent_size, ae.latent_size, device=device)
        batch[DECODED] = torch.zeros(1, 3, res, res, device=device)
    sampler = make_scheduler(model.config, "ddim")
    counts = {}
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            predict_next_frames(model, batch, sampler, steps)
        counts[steps] = counter.get_total_flops()
    step = counts[2] - counts[1]
    return {"frame": counts[1] + (sampler_steps - 1) * step, "step": step}


class _Timed:
    """``target`` with the calls of ``methods`` timed into ``seconds[key]`` (the rest passes through)."""

    def __init__(self, target, seconds: dict, key: str, methods: dict, device):
        self._target, self._seconds, self._key, self._methods, self._device = target, seconds, key, methods, device

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if name not in self._methods:
            return value
        wrap = self._methods[name]

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = value(*args, **kwargs)
            _sync(self._device)
            self._seconds[self._key] += time.perf_counter() - t0
            return wrap(out) if wrap else out

        return timed


def _policy_autocast(policy, precision: str):
    """``policy.predict_action_chunk`` under autocast, its outputs in fp32 (sampling and
    log-likelihoods stay fp32)."""
    from world_env_training.models.precision import autocast

    def predict_action_chunk(*args, **kwargs):
        with autocast(policy.device, precision):
            mu, log_scale = policy.predict_action_chunk(*args, **kwargs)
        return mu.float(), log_scale.float()

    return predict_action_chunk


def measure_imagination(policy, reflector, world_model, batch_sizes=(8, 16, 32, 64), steps: int = 16,
                        sampler_steps: int = 0, precision: str = "fp32", policy_precision: str = "fp32",
                        channels_last: bool = False, reflector_every: int = 1, device="cpu", seed: int = 0) -> dict:
    """Frames/s and per-frame ms of ``loop.collect_rollouts`` at each B (module docstring)."""
    from world_env_common.camera import CameraModel, look_at
    from world_env_training.bench.physics import HOME
    from world_env_training.rl.imagined_env import ImaginedEnv
    from world_env_training.rl.loop import StartState, collect_rollouts
    from world_env_common.robot import PandaModel

    res = world_model.config.resolution
    camera = CameraModel.from_fovy(45.0, res, res, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))
    rng = np.random.default_rng(seed)
    robot = PandaModel()
    joints = HOME  # world models with an arm action map or arm physics need the joints
    start = StartState(frame=rng.integers(0, 256, (res, res, 3), dtype=np.uint8),
                       state=robot.state_from_joints(joints, [0.04, -0.04]).astype(np.float32),
                       instruction=INSTRUCTION, camera=camera.to_dict(), key="bench", joints=joints)
    reflector.set_precision(precision)
    envs = []

    def make_env(camera_dict):
        env = ImaginedEnv(world_model, robot, CameraModel.from_dict(camera_dict), device,
                          sampler_steps=sampler_steps or None, seed=seed, precision=precision,
                          channels_last=channels_last)
        envs.append(env)
        return env

    generator = torch.Generator().manual_seed(seed)
    chunk = policy.config.chunk_size

    def run(b: int, n: int) -> dict:
        seconds = {"policy": 0.0, "reflector": 0.0}
        base = policy if policy_precision == "fp32" else _Policy(policy, _policy_autocast(policy, policy_precision))
        timed_policy = _Timed(base, seconds, "policy", {name: None for name in _POLICY_CALLS}, device)
        timed_reflector = _Timed(reflector, seconds, "reflector", {
            "session": lambda s: _Timed(s, seconds, "reflector", {"score_batch": None, "add_batch": None}, device)},
            device)
        envs.clear()
        t0 = time.perf_counter()
        collect_rollouts(timed_policy, timed_reflector, make_env, [start], b, n, generator, score_every=reflector_every)
        total = time.perf_counter() - t0
        frames = sum(e.frames for e in envs)
        wm = sum(e.seconds["world_model"] for e in envs)
        conditions = sum(e.seconds["conditions"] for e in envs)
        ms = lambda s: 1000.0 * s / max(frames, 1)  # noqa: E731
        return {"frames": frames, "seconds": total, "frames_per_s": frames / total,
                "world_model_seconds": wm,
                "ms_per_frame": {"world_model": ms(wm), "reflector": ms(seconds["reflector"]),
                                 "policy": ms(seconds["policy"]),
                                 "other": ms(total - wm - seconds["reflector"] - seconds["policy"]),
                                 "total": ms(total)},
                "conditions_ms_per_frame": ms(conditions)}

    run(min(batch_sizes), chunk)  # warm-up: lazy initialisation, allocator
    return {b: run(b, steps) for b in batch_sizes}


#: What LOOP's chunk sampler (``vla.ChunkSampler``) calls on the policy.
_POLICY_CALLS = ("predict_action_chunk", "processor", "action_distribution", "sample", "log_prob")


class _Policy:
    """The policy with its ``predict_action_chunk`` replaced (e.g. by an autocast one)."""

    def __init__(self, policy, predict_action_chunk):
        self._policy, self.predict_action_chunk = policy, predict_action_chunk

    def __getattr__(self, name):
        return getattr(self._policy, name)


def _default_models(policy: str, reflector: str, world_model: str, device):
    from world_env_training.pipeline import CPU_POLICY
    from world_env_training.models.reflector import Reflector, ReflectorConfig
    from world_env_training.models.vla import VLAConfig, VLAPolicy
    from world_env_training import configs
    from world_env_training.models.world_model import AutoencoderConfig, FrameAutoencoder, WorldModel, WorldModelConfig

    torch.manual_seed(0)
    p = VLAPolicy.from_pretrained(policy, device) if policy else VLAPolicy(VLAConfig(**CPU_POLICY)).to(device).eval()
    r = (Reflector.from_pretrained(reflector, device, threshold=0.99) if reflector
         else Reflector(ReflectorConfig(threshold=0.99)).to(device).eval())
    if world_model:
        w = WorldModel.from_pretrained(world_model, device)
    elif configs.PipelineConfig().latent_world_model:  # the pipeline's default: latent
        w = WorldModel(WorldModelConfig.latent_cpu(),
                       autoencoder=FrameAutoencoder(AutoencoderConfig())).to(device).eval()
    else:
        w = WorldModel(WorldModelConfig()).to(device).eval()
    return p, r, w


def bench_imagination(policy: str = "", reflector: str = "", world_model: str = "", batch_sizes=(8, 16, 32, 64),
                      steps: int = 16, sampler_steps: int = 0, precision: str = "fp32", policy_precision: str = "fp32",
                      channels_last: bool = False, reflector_every: int = 1, libero: bool = True,
                      libero_steps: int = 30, matmul_size: int = 2048, seed: int = 0, device: str = "cpu") -> dict:
    """Measure (module docstring); returns a dict of figures. steps 0: one policy chunk."""
    p, r, w = _default_models(policy, reflector, world_model, device)
    sampler_steps = sampler_steps or w.config.sampler_steps
    steps = steps or p.config.chunk_size
    flops = world_model_flops(w, sampler_steps, device)
    imagined = measure_imagination(p, r, w, batch_sizes, steps, sampler_steps, precision, policy_precision,
                                   channels_last, reflector_every, device, seed)
    peaks = {"bf16": matmul_gflops(torch.bfloat16, matmul_size, device=device),
             "fp32": matmul_gflops(torch.float32, matmul_size, device=device)}
    for fig in imagined.values():
        fig["world_model_gflops"] = flops["frame"] * fig["frames"] / fig["world_model_seconds"] / 1e9
    result = {"resolution": w.config.resolution, "sampler_steps": sampler_steps, "precision": precision,
              "policy_precision": policy_precision, "channels_last": channels_last, "steps": steps,
              "reflector_every": reflector_every,
              "chunk_size": p.config.chunk_size, "world_model_gflop_per_frame": flops["frame"] / 1e9,
              "world_model_gflop_per_step": flops["step"] / 1e9, "matmul_gflops": peaks,
              "matmul_size": matmul_size, "imagined": imagined, "device": str(device),
              "models": {"policy": policy or "cpu profile (random)", "reflector": reflector or "default (random)",
                         "world_model": world_model or "default (random)"},
              "torch_threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
              "load_1min": os.getloadavg()[0]}
    best_b = max(imagined, key=lambda b: imagined[b]["frames_per_s"])
    result["best_batch"] = best_b
    if libero:
        from world_env_training.bench.libero import bench_libero

        lib = bench_libero(resolution=w.config.resolution, steps=libero_steps, seed=seed)
        result["libero"] = lib
        result["libero_best"] = max(lib["frames_per_s_1proc"], lib["frames_per_s_2proc"])
        result["ratio"] = imagined[best_b]["frames_per_s"] / result["libero_best"]
    return result


def format_report(r: dict) -> str:
    res = r["resolution"]
    lines = [f"imagination as LOOP runs it: {res}x{res}, {r['sampler_steps']} DDIM steps, world model and reflector "
             f"{r['precision']}{' channels_last' if r['channels_last'] else ''}, policy {r['policy_precision']}, "
             f"reflector judging every {r['reflector_every']} frame(s) and chunk ends, "
             f"{r['steps']} steps per rollout, chunk {r['chunk_size']} ({r['device']}, {r['torch_threads']} threads, "
             f"{r['cpus']} cpus, load {r['load_1min']:.1f})",
             f"  world model: {r['world_model_gflop_per_frame']:.1f} GFLOP per frame "
             f"({r['world_model_gflop_per_step']:.2f} per denoising step); matmul {r['matmul_size']}^3: "
             f"bf16 {r['matmul_gflops']['bf16']:.0f} GFLOP/s, fp32 {r['matmul_gflops']['fp32']:.0f} GFLOP/s"]
    lib = r.get("libero")
    if lib:
        lines.append(f"  LIBERO step + render: {lib['frames_per_s_1proc']:.1f} frames/s (1 process), "
                     f"{lib['frames_per_s_2proc']:.1f} (2 processes)")
    lines.append("  B     frames/s   ms/frame: world model  reflector  policy  other   "
                 "WM GFLOP/s (of bf16 / fp32 peak)")
    for b, f in r["imagined"].items():
        ms = f["ms_per_frame"]
        gf = f["world_model_gflops"]
        lines.append(f"  {b:<4} {f['frames_per_s']:9.2f}   {ms['total']:8.1f}: {ms['world_model']:11.1f} "
                     f"{ms['reflector']:10.1f} {ms['policy']:7.1f} {ms['other']:6.1f}   {gf:7.1f} "
                     f"({gf / r['matmul_gflops']['bf16']:.1%} / {gf / r['matmul_gflops']['fp32']:.1%})")
    b = r["best_batch"]
    fps = r["imagined"][b]["frames_per_s"]
    if lib:
        lines.append(f"imagination: {r['ratio']:.3f}x LIBERO ({fps:.2f} vs {r['libero_best']:.2f} frames/s, B={b}, "
                     f"{res}px, {r['precision']})")
    else:
        lines.append(f"imagination: LIBERO not measured ({fps:.2f} frames/s, B={b}, {res}px, {r['precision']})")
    return "\n".join(lines)
