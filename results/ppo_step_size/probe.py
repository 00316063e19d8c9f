"""How far PPO steps of one LOOP update move the policy, per learning rate.

One update's rollouts (the shipped SFT policy in LIBERO from two of the demos' init states, 8
rollouts each, LIBERO's success as reward; the control arm's setting) are collected once and
kept in --rollouts. Then, for each learning rate, a fresh copy of the policy takes PPO steps on
them (quarter-batch minibatches, clip 0.1, gradient norm 1, as post-train does) with no KL stop,
and after every step the whole batch is scored again: the approximate KL from the rollout policy
(Schulman's k3 of the chunk likelihood ratio, the figure target_kl limits) and the mean change
of log-likelihood of the chunks with positive and with negative advantage.

    python results/ppo_step_size/probe.py --rollouts runs/ppo_probe/rollouts.npz --lrs 1e-5,2e-6 --steps 6
"""

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from world_env_training.models.vla import VLAPolicy
from world_env_training.rl.loop import chunk_log_probs, collect_rollouts, ppo_update, rloo_advantages
from world_env_training.rl.loop_runner import load_start_states, suite_step_limit

ROOT = Path(__file__).resolve().parents[2]
SFT = ROOT / "pretrained/embedded_default/sft"
DEMOS = ROOT / "pretrained/embedded_default/demos"


def collect(path: Path) -> None:
    from world_env_training.rl.libero_rollouts import LiberoRolloutEnv

    starts = load_start_states(str(DEMOS))
    policy = VLAPolicy.from_pretrained(str(SFT), device=torch.device("cpu"))
    env = LiberoRolloutEnv(16, starts[0].frame.shape[0], 2, seed=0)
    t0 = time.time()
    try:
        ro = collect_rollouts(policy.eval(), None, lambda camera: env, [starts[0], starts[3]], 8,
                              suite_step_limit(starts, str(DEMOS)), torch.Generator().manual_seed(1))
    finally:
        env.close()
    print(f"rollouts: {time.time() - t0:.0f} s, returns {ro.returns.tolist()}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=ro.images, states=ro.states, actions=ro.actions, log_probs=ro.log_probs,
             episode=ro.episode, returns=ro.returns, instructions=np.array(ro.instructions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="runs/ppo_probe/rollouts.npz", help="collected here if missing")
    parser.add_argument("--lrs", default="1e-5,2e-6", help="comma-separated learning rates (LoRA and heads)")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    path = Path(args.rollouts)
    if not path.is_file():
        collect(path)
    d = np.load(path)
    torch.manual_seed(0)
    base = VLAPolicy.from_pretrained(str(SFT), device=torch.device("cpu"))
    adv = rloo_advantages(torch.from_numpy(d["returns"])).reshape(-1)[torch.from_numpy(d["episode"])]
    old = torch.from_numpy(d["log_probs"])
    instructions = list(d["instructions"])
    count = len(old)
    print(f"{count} chunks, returns {d['returns'].tolist()}, {int((adv > 0).sum())} chunks with positive advantage")

    def score(model) -> dict:
        with torch.no_grad():
            lp = torch.cat([chunk_log_probs(model.action_distribution, model, d["images"][p], d["states"][p],
                                            [instructions[i] for i in p], d["actions"][p])[0]
                            for p in np.array_split(np.arange(count), 4)])
        log_ratio = lp - old
        return {"kl": float((log_ratio.exp() - 1 - log_ratio).mean()),
                "dlogp_pos": float(log_ratio[adv > 0].mean()), "dlogp_neg": float(log_ratio[adv < 0].mean())}

    print("| lr | step | KL (k3, whole batch) | mean d log p, A > 0 | mean d log p, A < 0 |")
    print("|---|---|---|---|---|")
    for lr in (float(x) for x in args.lrs.split(",")):
        model = copy.deepcopy(base)
        trainable = model.lora_parameters() + model.head_parameters()
        optimizer = torch.optim.AdamW([{"params": trainable, "lr": lr}], weight_decay=0.0)
        rng = np.random.default_rng(0)
        for step in range(1, args.steps + 1):
            part = rng.permutation(count)[: count // 4]
            minibatch = {"images": d["images"][part], "states": d["states"][part],
                         "instructions": [instructions[i] for i in part], "actions": d["actions"][part]}
            # one PPO step on the whole minibatch, without a KL stop
            ppo_update(model, model.action_distribution, optimizer, trainable, minibatch, old[part], adv[part],
                       clip_eps=0.1, epochs=1, minibatches=1, grad_clip=1.0, seed=step)
            s = score(model.eval())
            print(f"| {lr:g} | {step} | {s['kl']:.3f} | {s['dlogp_pos']:+.3f} | {s['dlogp_neg']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
