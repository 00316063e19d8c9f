"""Speed of the VLA policy on this machine (``world_env_training.models.vla``).

Figures, all on random 64x64 frames (LIBERO's CPU resolution) and a LIBERO-length instruction:

- build_s: building the model from its sources (the first build in a process also converts
  SmolLM2's GGUF weights, about 10 s; later builds copy the cached weights);
- parameter counts: total, trainable (LoRA + projectors + heads), of which LoRA;
- inference: ``predict_action_chunk`` latency at batch 1, i.e. per re-plan of one chunk
  (median over ``repeats`` after one warm-up), and the resulting per-step cost;
- SFT step: forward, backward and an AdamW step at ``batch_size`` (median).
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

__all__ = ["bench_policy", "format_report"]

INSTRUCTION = "pick up the alphabet soup and place it in the basket"


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, lazy inits
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_policy(config=None, batch_size: int = 8, repeats: int = 5, resolution: int = 64,
                 seed: int = 0, device: str = "cpu") -> dict:
    """Measure the policy built from ``config`` (default: ``VLAConfig()``); returns a dict of figures."""
    from world_env_training.models.vla import VLAConfig, VLAPolicy

    config = config or VLAConfig()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    model = VLAPolicy(config).to(device)
    build_s = time.perf_counter() - t0
    counts = model.parameter_counts()

    image = rng.integers(0, 256, (1, resolution, resolution, 3), dtype=np.uint8)
    state = rng.normal(size=(1, config.proprio_dim)).astype(np.float32)
    model.eval()
    infer_s = _median_time(lambda: model.predict_action_chunk(image, state, [INSTRUCTION]), repeats)

    model.train()
    images = rng.integers(0, 256, (batch_size, resolution, resolution, 3), dtype=np.uint8)
    states = rng.normal(size=(batch_size, config.proprio_dim)).astype(np.float32)
    actions = rng.uniform(-1, 1, (batch_size, config.chunk_size, config.action_dim)).astype(np.float32)
    batch = model.processor(images, states, [INSTRUCTION] * batch_size, actions=actions, device=device)
    optimizer = torch.optim.AdamW(model.lora_parameters() + model.head_parameters(), lr=1e-5)

    def step():
        loss = model(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = _median_time(step, repeats)
    tokens = config.num_vision_tokens + 1 + int(batch["instruction.attention_mask"][0].sum()) + config.chunk_size
    return {
        "vision_encoder": config.vision_encoder, "llm": config.llm, "llm_layers": config.llm_layers,
        "image_size": config.image_size, "chunk_size": config.chunk_size, "lora_rank": config.lora_rank,
        "sequence_tokens": tokens, "build_s": build_s, "params": counts,
        "inference_chunk_ms": 1000 * infer_s, "inference_step_ms": 1000 * infer_s / config.chunk_size,
        "sft_batch_size": batch_size, "sft_step_s": step_s,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "cpus": len(os.sched_getaffinity(0)), "load_1min": os.getloadavg()[0],
    }


def format_report(d: dict) -> str:
    """Human-readable summary of ``bench_policy``'s dict."""
    p = d["params"]
    layers = d["llm_layers"] or "all"
    return "\n".join([
        f"VLA policy ({d['vision_encoder']} + {d['llm']} [{layers} layers], LoRA r={d['lora_rank']}, "
        f"{d['image_size']}px, chunk {d['chunk_size']}, {d['sequence_tokens']} tokens; {d['device']}, "
        f"{d['torch_threads']} threads, {d['cpus']} cores, load {d['load_1min']:.1f})",
        f"  parameters:  {p['total'] / 1e6:.1f} M total, {p['trainable'] / 1e6:.2f} M trainable "
        f"({p['lora'] / 1e6:.2f} M LoRA, {p['heads'] / 1e6:.2f} M projectors/heads)",
        f"  build:       {d['build_s']:.1f} s",
        f"  inference:   {d['inference_chunk_ms']:.0f} ms per chunk at batch 1 "
        f"({d['inference_step_ms']:.0f} ms per executed step)",
        f"  SFT step:    {d['sft_step_s']:.2f} s at batch {d['sft_batch_size']} (forward, backward, AdamW)",
    ])


def main() -> None:
    import argparse

    from world_env_training.models.vla import VLAConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm_layers", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=VLAConfig.image_size)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = VLAConfig(llm_layers=args.llm_layers, image_size=args.image_size)
    print(format_report(bench_policy(config, args.batch_size, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
