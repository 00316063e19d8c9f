"""How far LOOP moved the policy: mean actions against the Laplace scale, on the same observations.

Evaluation runs the policy's mean actions; LOOP's rollouts draw from Laplace(mu, b). A PPO step
raises or lowers the likelihood of sampled chunks, which it can do by moving mu or by changing
b. Only the first changes what evaluation runs. For each checkpoint this script scores the
observations of --rollouts (the SFT policy's own LIBERO rollouts, as collected by
results/ppo_step_size/probe.py) under SFT and under the checkpoint and prints, per action
dimension and over all, the mean |mu_ckpt - mu_sft| in units of SFT's b, and the mean change
of log b. With --increments, it also prints how consistent the movement is: the cosine between
successive moves (checkpoint i-1 -> i against i -> i+1, mean actions in units of SFT's b, over
every observation and entry). A policy pushed the same way by every update gives cosines near
1; one moved by noise, a random walk, near 0.

    python results/policy_movement/probe.py --checkpoints runs/starts/loop_libero_24/checkpoints/step_0000024 ...
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from world_env_training.models.vla import VLAPolicy

ROOT = Path(__file__).resolve().parents[2]
SFT = ROOT / "pretrained/embedded_default/sft"
DIMS = ["x", "y", "z", "rx", "ry", "rz", "grip"]


def distribution(path: str, d) -> tuple[np.ndarray, np.ndarray]:
    """(mu, log b) of the policy at ``path`` on every observation of ``d``, LIBERO units."""
    policy = VLAPolicy.from_pretrained(path, device=torch.device("cpu")).eval()
    instructions = list(d["instructions"])
    mus, logs = [], []
    with torch.no_grad():
        for part in np.array_split(np.arange(len(d["states"])), 8):
            mu, log_scale = policy.predict_action_chunk(d["images"][part], d["states"][part],
                                                        [instructions[i] for i in part])
            mus.append(mu.numpy())
            logs.append(log_scale.numpy())
    return np.concatenate(mus), np.concatenate(logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="runs/ppo_probe/rollouts.npz")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="policy folders to compare with SFT")
    parser.add_argument("--increments", action="store_true",
                        help="also the cosine between successive moves (SFT -> first checkpoint -> next ...)")
    args = parser.parse_args()
    d = np.load(args.rollouts)
    torch.manual_seed(0)
    mu0, log0 = distribution(str(SFT), d)
    b0 = np.exp(log0)
    print(f"{len(mu0)} observations x {mu0.shape[1]} steps; SFT's mean b per dimension (LIBERO units): "
          + ", ".join(f"{n} {v:.4f}" for n, v in zip(DIMS, b0.mean(axis=(0, 1)))))
    columns = ["checkpoint", *(f"dmu/b {n}" for n in DIMS), "dmu/b all", "share > 1 b", "d log b",
               "KL(SFT, ckpt) per chunk"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    means = [mu0]
    for path in args.checkpoints:
        mu, log = distribution(path, d)
        means.append(mu)
        moved = np.abs(mu - mu0) / b0
        b = np.exp(log)
        # KL(Laplace(mu0, b0) || Laplace(mu, b)), closed form, summed over the chunk's entries.
        delta = np.abs(mu0 - mu)
        kl = (np.log(b / b0) + (b0 * np.exp(-delta / b0) + delta) / b - 1).sum(axis=(1, 2))
        name = str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else path
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in moved.mean(axis=(0, 1)))
              + f" | {moved.mean():.3f} | {(moved > 1).mean():.3f} | {(log - log0).mean():+.3f} | {kl.mean():.2f} |",
              flush=True)
    if args.increments:
        moves = [((b - a) / b0).reshape(-1) for a, b in zip(means, means[1:])]
        names = ["SFT", *(Path(p).name for p in args.checkpoints)]
        print("\n| move | then | cosine | size of each move (RMS dmu/b) |\n|---|---|---|---|")
        for i in range(len(moves) - 1):
            u, v = moves[i], moves[i + 1]
            cosine = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
            print(f"| {names[i]} -> {names[i + 1]} | {names[i + 1]} -> {names[i + 2]} | {cosine:+.3f} | "
                  f"{np.sqrt((u ** 2).mean()):.3f}, {np.sqrt((v ** 2).mean()):.3f} |")


if __name__ == "__main__":
    main()
