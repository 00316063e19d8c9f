"""LOOP: leave-one-out PPO (RLOO advantages + PPO's clipped objective) on imagined rollouts.

This module holds the algorithm, free of files and processes; ``post_train.py`` runs it.

One update, for S initial states and N rollouts each:

1. Rollouts (``collect_rollouts``): the S*N episodes start from the real first frame, state and
   instruction of their initial state and advance together in the ``ImaginedEnv``. Every
   ``chunk_size`` steps the policy gives, per live episode, a Laplace law over the next chunk;
   a chunk is *sampled* from it (the exploration the scale head controls), its log-likelihood
   under the sampling policy is kept (summed over steps and action dimensions, the chunk's
   joint log-probability), and the chunk runs clipped to LIBERO's [-1, 1]. The reflector scores
   every new frame; an episode ends when it fires (R > eta) or at ``max_steps``.
2. Return R_n of episode n: the reflector's reward at the frame where the episode ended (its
   continuous reward; with ``binary_reward``, 1 if the reflector fired and 0 if not, the paper's
   ablation).
3. Advantages (``rloo_advantages``): A_n = R_n - mean of the other N-1 returns of the same
   initial state. Every chunk of episode n gets A_n.
4. PPO (``ppo_loss``): ``ppo_epochs`` passes over the chunks in minibatches; ratio
   r = exp(log pi_new(a) - log pi_old(a)) of the chunk's likelihood, loss
   -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)). Logged: clip fraction (share of chunks whose
   ratio left the clip range) and approximate KL, mean((r - 1) - log r) (Schulman's k3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from world_env_training.models.vla.sampling import ChunkSampler, chunk_log_prob, tempered


def rloo_advantages(returns: torch.Tensor) -> torch.Tensor:
    """(S, N) returns -> (S, N) advantages R_n - mean_{m != n} R_m (N >= 2)."""
    if returns.ndim != 2 or returns.shape[1] < 2:
        raise ValueError(f"returns: shape {tuple(returns.shape)}, expected (S, N) with N >= 2")
    n = returns.shape[1]
    others = (returns.sum(dim=1, keepdim=True) - returns) / (n - 1)
    return returns - others


def ppo_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             clip_eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate over (M,) chunk log-likelihoods; returns (loss, diagnostics)."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {"clip_fraction": ((ratio - 1.0).abs() > clip_eps).float().mean(),
                 "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
                 "ratio_max": ratio.max()}
    return loss, stats


@dataclass
class StartState:
    """A real initial observation an imagined episode starts from."""

    frame: np.ndarray      # (H, W, 3) uint8
    state: np.ndarray      # (7,)
    instruction: str
    camera: dict           # CameraModel.to_dict() of the frame
    key: str               # the dataset episode it comes from
    suite: str = ""        # LIBERO suite, task and init state the episode began from ("" / -1: none)
    task_id: int = -1
    init_state_id: int = -1
    joints: np.ndarray | None = None  # (7,) arm joint angles (an arm action map needs them)


@dataclass
class Rollouts:
    """What one update's S*N episodes produced; episode e = s * N + n.

    Chunk samples (M of them, the rows PPO trains on): ``images`` (M, H, W, 3), ``states``
    (M, 7), ``instructions`` (M), ``actions`` (M, K, 7) as sampled (unclipped), ``log_probs``
    (M,) under the sampling policy, ``episode`` (M,) the episode each came from.
    Per episode: ``returns`` (S, N), ``lengths`` (S, N) steps taken, ``fired`` (S, N) whether
    the reflector ended it, ``rewards`` list of per-frame reward arrays (o_0 first).
    ``frames`` keeps the first episode's frames (T+1, H, W, 3) for the report's strips.
    """

    images: np.ndarray
    states: np.ndarray
    instructions: list[str]
    actions: np.ndarray
    log_probs: np.ndarray
    episode: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    fired: np.ndarray
    rewards: list[np.ndarray] = field(default_factory=list)
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frames: np.ndarray | None = None
    episode_frames: list[np.ndarray] | None = None   # per episode (T+1, H, W, 3), with keep_episodes
    episode_actions: list[np.ndarray] | None = None  # per episode (T, 7) as executed (clipped)

    def __len__(self) -> int:
        return len(self.log_probs)


@torch.no_grad()
def collect_rollouts(policy, reflector, make_env, starts: list[StartState], rollouts_per_state: int,
                     max_steps: int, generator: torch.Generator, binary_reward: bool = False,
                     progress=None, keep_episodes: bool = False, score_every: int = 1,
                     temperature: float = 1.0, correlation: float = 0.0) -> Rollouts:
    """Roll the policy out N times from each start state in imagination (module docstring, 1-2).

    policy: ``VLAPolicy``; reflector: ``Reflector``, or None when the environment itself judges
    (it then reports per-step ``success``: reward 1 and the episode's end at the step that
    achieves the task, as ``LiberoRolloutEnv`` does). make_env(camera_dict) -> the environment
    for frames of that camera: a fresh ``ImaginedEnv`` (episodes start from the start states'
    real frames and states), or an env with ``from_init_states`` (``LiberoRolloutEnv``: they
    start from the start states' LIBERO init states). Start states of different cameras are
    rolled out in separate groups. progress: optional callable(frames) for progress bars.
    keep_episodes: also keep every episode's frames and executed actions (``episode_frames``,
    ``episode_actions``), e.g. to replay them in the real simulator.
    score_every: the reflector judges every score_every-th step and every chunk's last step
    (1: every frame); the frames between are only encoded into its cache (no LLM pass), so an
    episode ends at the first judged frame where it fires and ``rewards`` hold judged frames.
    temperature, correlation: chunks are drawn from Laplace(mu, temperature * b) with noise
    correlated by ``correlation`` along each chunk, and scored under that law (``ChunkSampler``);
    PPO must score them under the same one.
    """
    if score_every < 1:
        raise ValueError(f"score_every={score_every}: expected a positive integer")
    sampler = ChunkSampler(policy, sample=True, generator=generator, temperature=temperature,
                           correlation=correlation)
    n = rollouts_per_state
    s_count = len(starts)
    chunk = policy.config.chunk_size
    rows = {k: [] for k in ("images", "states", "instructions", "actions", "log_probs", "episode", "scales")}
    returns = np.zeros((s_count, n), np.float32)
    lengths = np.zeros((s_count, n), np.int64)
    fired = np.zeros((s_count, n), bool)
    rewards: list[np.ndarray | None] = [None] * (s_count * n)
    first_frames = None
    kept_frames = [[] for _ in range(s_count * n)] if keep_episodes else None
    kept_actions = [[] for _ in range(s_count * n)] if keep_episodes else None

    groups: dict[str, list[int]] = {}
    for i, start in enumerate(starts):
        groups.setdefault(repr(sorted(start.camera.items())), []).append(i)
    for members in groups.values():
        env = make_env(starts[members[0]].camera)
        ids = np.array([s * n + k for s in members for k in range(n)])  # global episode ids
        instructions = [starts[s].instruction for s in members for _ in range(n)]
        if getattr(env, "from_init_states", False):
            obs = env.reset_to([starts[s] for s in members for _ in range(n)])
            frames0 = obs["image"]
        else:
            frames0 = np.stack([starts[s].frame for s in members for _ in range(n)])
            states0 = np.stack([starts[s].state for s in members for _ in range(n)])
            joints0 = None
            if all(starts[s].joints is not None for s in members):
                joints0 = np.stack([starts[s].joints for s in members for _ in range(n)])
            obs = env.reset(frames0, states0, instructions, joints0=joints0,
                            init_state_ids=[starts[s].init_state_id for s in members for _ in range(n)])
        session = reflector.session(len(ids)) if reflector is not None else None
        if session is not None:
            session.reset(instructions)
            r0, done0 = session.score_batch(frames0)
        else:  # the environment judges: nothing is achieved before the first action
            r0, done0 = np.zeros(len(ids), np.float32), np.zeros(len(ids), bool)
        history = {int(e): [float(r)] for e, r in zip(ids, r0)}
        if keep_episodes:
            for row, e in enumerate(ids):
                kept_frames[e].append(frames0[row])
        live = ~np.asarray(done0, bool)
        fired.flat[ids[~live]] = True  # judged done on the initial frame: no action taken
        trace = [frames0[0]] if ids[0] == 0 else None
        alive_rows = np.flatnonzero(live)  # rows of the env batch, in env order
        env.keep(alive_rows)
        alive_ids = ids[alive_rows]
        steps_taken = 0
        while len(alive_ids) and steps_taken < max_steps:
            k = min(chunk, max_steps - steps_taken)
            drawn = sampler(obs["image"], obs["state"], obs["instruction"])
            rows["images"].append(obs["image"])
            rows["states"].append(obs["state"])
            rows["instructions"] += obs["instruction"]
            rows["actions"].append(drawn.actions.cpu().numpy())
            rows["log_probs"].append(drawn.log_prob.cpu().numpy())
            rows["episode"].append(alive_ids.copy())
            rows["scales"].append(drawn.scale.cpu().numpy())
            executed = drawn.executed(k)
            obs = env.step(executed)
            if progress is not None:
                progress(len(alive_ids) * k)
            ended = np.zeros(len(alive_ids), bool)
            every_frame = "images" in obs  # an env that renders only chunk ends gives "image"
            if keep_episodes and not every_frame:
                raise ValueError("keep_episodes needs an environment that returns every step's frame")
            if trace is not None and alive_ids[0] == 0 and not every_frame:
                trace.append(obs["image"][0])
            for i in range(k):
                open_rows = np.flatnonzero(~ended)
                if not len(open_rows):
                    break
                if trace is not None and alive_ids[0] == 0 and not ended[0] and every_frame:
                    trace.append(obs["images"][0, i])
                judged = score_every == 1 or i == k - 1 or (steps_taken + i + 1) % score_every == 0
                if session is not None and not judged:
                    session.add_batch(obs["images"][open_rows, i], episodes=list(alive_ids[open_rows]))
                    r, d = None, np.zeros(len(open_rows), bool)
                elif session is not None:
                    r, d = session.score_batch(obs["images"][open_rows, i], episodes=list(alive_ids[open_rows]))
                else:
                    d = obs["success"][open_rows, i]
                    r = d.astype(np.float32)
                for j, row in enumerate(open_rows):
                    e = int(alive_ids[row])
                    if r is not None:
                        history[e].append(float(r[j]))
                    if keep_episodes:
                        kept_frames[e].append(obs["images"][row, i])
                        kept_actions[e].append(executed[row, i])
                    lengths.flat[e] = steps_taken + i + 1
                    if d[j]:
                        ended[row] = True
                        fired.flat[e] = True
            steps_taken += k
            still = np.flatnonzero(~ended)
            env.keep(still)
            alive_ids = alive_ids[still]
            obs = {"image": obs["image"][still], "state": obs["state"][still],
                   "instruction": [obs["instruction"][i] for i in still]}
        for e in ids:
            rewards[e] = np.array(history[int(e)], np.float32)
            if binary_reward:
                returns.flat[e] = 1.0 if fired.flat[e] else 0.0
            else:
                returns.flat[e] = history[int(e)][-1]
        if trace is not None:
            first_frames = np.stack(trace)

    cat = lambda key, dtype: (np.concatenate(rows[key]).astype(dtype) if rows[key]  # noqa: E731
                              else np.zeros((0,), dtype))
    return Rollouts(images=cat("images", np.uint8), states=cat("states", np.float32),
                    instructions=rows["instructions"], actions=cat("actions", np.float32),
                    log_probs=cat("log_probs", np.float32), episode=cat("episode", np.int64),
                    returns=returns, lengths=lengths, fired=fired, rewards=rewards,
                    scales=cat("scales", np.float32), frames=first_frames,
                    episode_frames=[np.stack(f) for f in kept_frames] if keep_episodes else None,
                    episode_actions=[np.array(a, np.float32).reshape(-1, 7) for a in kept_actions]
                    if keep_episodes else None)


def chunk_log_probs(distribution, policy, images, states, instructions, actions,
                    temperature: float = 1.0, correlation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(M,) log-likelihood of the (M, K, 7) chunks under the current policy (its law at
    ``temperature`` and ``correlation``, as ``ChunkSampler``), with gradients, and the (M,) mean scale.
    ``distribution(batch)`` is ``policy.action_distribution`` or its DDP wrapper. The whole
    sampled chunk is scored, also the steps a step limit left unexecuted, so that the ratio
    compares the same event the sampling log-probability measured."""
    batch = policy.processor(images, states, instructions, device=policy.device)
    mu, log_scale = distribution(batch)
    log_scale = tempered(log_scale, temperature)
    a = torch.as_tensor(actions, device=mu.device, dtype=mu.dtype)
    return chunk_log_prob(a, mu, log_scale, correlation), log_scale.detach().exp().mean(dim=(1, 2))


def ppo_update(model, distribution, optimizer, trainable, samples: dict, old_log_probs: torch.Tensor,
               advantages: torch.Tensor, clip_eps: float, epochs: int, minibatches: int, grad_clip: float,
               seed, target_kl: float = 0.0, agree=lambda value: value,
               temperature: float = 1.0, correlation: float = 0.0) -> dict[str, float]:
    """``epochs`` passes of PPO over M chunk samples in ``minibatches`` minibatches (module
    docstring, 4); returns sums of loss, clip fraction and approximate KL over the steps taken,
    the step count, whether the KL limit stopped it and the KL that did (``stop_kl``).

    samples: {"images" (M, H, W, 3), "states" (M, 7), "instructions" (M), "actions" (M, K, 7)};
    old_log_probs, advantages: (M,) on the model's device. ``seed``: a SeedSequence entropy
    (int or list) for the minibatch orders, so that a resumed run draws them again.
    target_kl > 0: stop the update once a minibatch's approximate KL from the rollout policy
    exceeds it (before that minibatch's step). Adam takes steps of about the learning rate
    whatever the advantages' size, so with near-constant returns the policy would otherwise
    drift by noise alone. ``agree(kl)``: the KL all processes decide on (their mean under DDP),
    so that they stop together. temperature, correlation: the law the chunks were sampled under.
    """
    sums = {"loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "minibatches": 0.0, "kl_stopped": 0.0,
            "stop_kl": 0.0}
    count = len(old_log_probs)
    model.train()
    for epoch in range(epochs):
        order = np.random.default_rng(np.random.SeedSequence([*np.atleast_1d(seed).tolist(), epoch])).permutation(count)
        if len(order) < minibatches:
            order = np.resize(order, minibatches)
        for part in np.array_split(order, minibatches):
            new, _ = chunk_log_probs(distribution, model, samples["images"][part], samples["states"][part],
                                     [samples["instructions"][i] for i in part], samples["actions"][part],
                                     temperature, correlation)
            loss, stats = ppo_loss(new, old_log_probs[part], advantages[part], clip_eps)
            kl = agree(float(stats["approx_kl"])) if target_kl > 0 else 0.0
            if kl > target_kl > 0:
                sums["kl_stopped"], sums["stop_kl"] = 1.0, kl
                return sums
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
            optimizer.step()
            sums["loss"] += float(loss.detach())
            sums["clip_fraction"] += float(stats["clip_fraction"])
            sums["approx_kl"] += float(stats["approx_kl"])
            sums["minibatches"] += 1
    return sums
