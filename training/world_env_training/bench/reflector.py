"""Speed of the Instant Reflector as an episode grows (``world_env_training.models.reflector``).

Scoring the newest frame o_t of one episode (batch 1), median over ``repeats`` after a warm-up,
at each episode length t in ``lengths``:

- cached: ``ReflectorSession.score``: encode the new frame once, gather the M frames it reads
  from the feature cache, one LLM pass over a fixed-length sequence. Flat in t by design.
- uncached: ``Reflector.score_uncached``: the same decision with every frame it reads
  re-encoded from pixels (M encoder passes instead of one). Also flat in t, since the
  reflector reads M frames whatever t is; the cache saves M - 1 encoder passes per decision.

Figures are on random 64x64 frames (LIBERO's CPU resolution) with a LIBERO-length instruction.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

__all__ = ["measure_latency", "bench_reflector", "format_report"]

INSTRUCTION = "pick up the alphabet soup and place it in the basket"
LENGTHS = (1, 10, 50, 100, 200)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, lazy inits
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure_latency(model, lengths=LENGTHS, repeats: int = 5, resolution: int = 64, seed: int = 0) -> dict:
    """Per-frame scoring latency (ms) of ``model`` at each episode length t (frames o_1..o_t)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (max(lengths), resolution, resolution, 3), dtype=np.uint8)
    history = model.encode_frames(frames)
    cached, uncached = {}, {}
    session = model.session(1)
    for t in lengths:
        session.reset(INSTRUCTION)
        # The t - 1 earlier frames' features, as the session would have cached them.
        session.features[0] = dict(enumerate(history[:t - 1]))

        def score_newest():
            session.score(frames[t - 1])
            session.features[0].pop(t - 1)  # back to t - 1 frames, so every repeat scores o_t

        cached[t] = _median_ms(score_newest, repeats)
        uncached[t] = _median_ms(lambda: model.score_uncached(frames[:t], INSTRUCTION), repeats)
    encoder_ms = _median_ms(lambda: model.encode_frames(frames[:1]), repeats)
    return {"cached_ms": cached, "uncached_ms": uncached, "encoder_ms": encoder_ms,
            "num_frames": model.config.num_frames,
            "cache_kb_per_frame": history[0].numel() * history.element_size() / 1024}


def bench_reflector(config=None, lengths=LENGTHS, repeats: int = 5, seed: int = 0, device: str = "cpu") -> dict:
    """Build the reflector from ``config`` (default ``ReflectorConfig()``) and measure it."""
    from world_env_training.models.reflector import Reflector, ReflectorConfig

    config = config or ReflectorConfig()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = Reflector(config).to(device).eval()
    build_s = time.perf_counter() - t0
    result = measure_latency(model, lengths, repeats, seed=seed)
    prompt = len(model.processor.tokenize([INSTRUCTION])[0][0]) + len(model.processor.question_ids)
    result.update(vision_encoder=config.vision_encoder, llm=config.llm, llm_layers=config.llm_layers,
                  image_size=config.image_size, sequence_tokens=prompt + config.num_frames * config.tokens_per_frame,
                  build_s=build_s, params=model.parameter_counts(), device=str(device),
                  torch_threads=torch.get_num_threads(), cpus=len(os.sched_getaffinity(0)),
                  load_1min=os.getloadavg()[0])
    return result


def format_report(d: dict) -> str:
    """Markdown table of ``measure_latency`` (or ``bench_reflector``) figures."""
    lines = []
    if "params" in d:
        p, layers = d["params"], d["llm_layers"] or "all"
        lines += [f"Instant Reflector ({d['vision_encoder']} + {d['llm']} [{layers} layers], {d['image_size']} px, "
                  f"M={d['num_frames']} frames, {d['sequence_tokens']} tokens; {d['device']}, {d['torch_threads']} "
                  f"threads, {d['cpus']} cores, load {d['load_1min']:.1f})",
                  f"parameters: {p['total'] / 1e6:.1f} M total, {p['trainable'] / 1e6:.2f} M trained "
                  f"(projector {p['projector'] / 1e6:.2f} M, head {p['head'] / 1e6:.2f} M); build {d['build_s']:.1f} s",
                  ""]
    lines += [f"encoder {d['encoder_ms']:.1f} ms per frame; cache {d['cache_kb_per_frame']:.1f} KB per frame", "",
              "| t | cached ms/frame | uncached ms/frame |", "|---|---|---|"]
    lines += [f"| {t} | {d['cached_ms'][t]:.1f} | {d['uncached_ms'][t]:.1f} |" for t in d["cached_ms"]]
    return "\n".join(lines)


def main() -> None:
    import argparse

    from world_env_training.models.reflector import ReflectorConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm_layers", type=int, default=ReflectorConfig.llm_layers)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="", help="a trained reflector folder or run (default: fresh default config)")
    args = parser.parse_args()
    if args.model:
        from world_env_training.models.reflector import Reflector

        result = measure_latency(Reflector.from_pretrained(args.model), repeats=args.repeats)
    else:
        result = bench_reflector(ReflectorConfig(llm_layers=args.llm_layers), repeats=args.repeats)
    print(format_report(result), flush=True)


if __name__ == "__main__":
    main()
