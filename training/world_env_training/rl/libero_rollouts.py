"""LIBERO as LOOP's environment: the control arm (the RIPT-VLA setting).

``post-train --env libero`` runs the same ``collect_rollouts`` and PPO update as imagination,
with ``LiberoRolloutEnv`` in the world model's place. It separates LOOP's ability to learn from
imagination's fidelity: if LOOP raises success here and not in imagination, the world model or
the reflector is what fails.

``LiberoRolloutEnv`` keeps ``capacity`` LIBERO simulators in worker processes for the whole run
(building one takes seconds). ``reset_to(starts)`` puts row b's simulator in the LIBERO init
state that start state b's episode began from (rebuilding a slot that holds another task), so
o_0 is the real first frame. ``step(chunks)`` runs each live row's chunk inside its worker and
returns per step the task's success flag; frames are rendered only where something reads them:
the last executed step of every chunk (the policy's next input) and, when a reflector judges
the frames, every step.
"""

from __future__ import annotations

import numpy as np

#: Resident memory of one LIBERO simulator at 64 px in a worker (measured: a worker holding 16
#: held 11.8 GB when the out-of-memory killer stopped it).
SIMULATOR_BYTES = int(0.74 * 2 ** 30)


def available_memory() -> int | None:
    """Bytes the kernel says it can give without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_shortfall(simulators: int, available: int | None = None) -> str | None:
    """A warning if ``simulators`` LIBERO simulators would need more memory than ``available``
    (bytes; default: MemAvailable now), else None. Estimated, from ``SIMULATOR_BYTES``."""
    available = available_memory() if available is None else available
    need = simulators * SIMULATOR_BYTES
    if available is None or need <= available:
        return None
    return (f"{simulators} LIBERO simulators (batch_size x rollouts_per_state) need about {need / 2 ** 30:.1f} GB, "
            f"and {available / 2 ** 30:.1f} GB is available: the kernel may kill a worker mid-run. Lower "
            f"batch_size or rollouts_per_state")


class LiberoRolloutEnv:
    """Up to ``capacity`` LIBERO episodes in lockstep, driven like ``ImaginedEnv``.

    Args:
        capacity: the most episodes one ``reset_to`` may start (S states x N rollouts).
        resolution: agent-view size in pixels (the policy's frames).
        workers: simulator processes.
        render_every_step: render a frame per executed step ("images" in ``step``'s result),
            for a reflector that scores every frame; otherwise only each chunk's last one.
        stop_on_success: a row stops executing its chunk at the step that achieves the task
            (ground-truth termination, the control arm's default).
        seed: LIBERO's seed before every reset.
    """

    #: ``collect_rollouts`` starts these episodes from the start states' LIBERO init states.
    from_init_states = True

    def __init__(self, capacity: int, resolution: int, workers: int = 2, render_every_step: bool = False,
                 stop_on_success: bool = True, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: expected a positive number of episodes")
        self.capacity, self.resolution, self.workers, self.seed = (int(capacity), int(resolution), int(workers),
                                                                   int(seed))
        self.render = "all" if render_every_step else "last"
        self.stop_on_success = bool(stop_on_success)
        self._vec = None
        self.rows: np.ndarray = np.zeros(0, int)  # simulator slot of each live row
        self.instructions: list[str] = []

    def _spec(self, start) -> dict:
        return {"suite": start.suite, "task_id": int(start.task_id), "resolution": self.resolution,
                "wrist": False, "depth": False, "seed": self.seed}

    def reset_to(self, starts) -> dict:
        """Start one episode per ``StartState`` (its suite, task and init state); returns
        {"image" (B, H, W, 3), "state" (B, 7), "instruction" [B]}."""
        from world_env_libero.vec_env import VecLiberoEnv

        if not 0 < len(starts) <= self.capacity:
            raise ValueError(f"{len(starts)} episodes for a LIBERO pool of {self.capacity}")
        missing = [s.key for s in starts if not s.suite or s.init_state_id < 0]
        if missing:
            raise ValueError(f"start states without a LIBERO init state (suite, task, init_state_id): {missing[:3]}")
        specs = [self._spec(s) for s in starts]
        specs += [specs[-1]] * (self.capacity - len(specs))  # idle slots keep (or take) a valid task
        if self._vec is None:
            self._vec = VecLiberoEnv(specs, num_workers=self.workers)
        ids = [s.init_state_id for s in starts] + [starts[-1].init_state_id] * (self.capacity - len(starts))
        observations = self._vec.start(specs, ids)[:len(starts)]
        self.rows = np.arange(len(starts))
        self.instructions = [s.instruction for s in starts]
        return {"image": np.stack([o["image"] for o in observations]),
                "state": np.stack([o["state"] for o in observations]).astype(np.float32),
                "instruction": list(self.instructions)}

    def keep(self, rows) -> None:
        """Continue only the given rows (indices into the current batch), in that order."""
        rows = np.asarray(rows, dtype=int)
        self.rows = self.rows[rows]
        self.instructions = [self.instructions[i] for i in rows]

    def step(self, actions) -> dict:
        """Run a (B, k, 7) chunk per live row. Returns {"image" (B, H, W, 3) after the last
        executed step, "state" (B, 7), "instruction", "success" (B, k) bool (a row that stopped
        early repeats its last flag), "steps" (B,) executed}, plus "images" (B, k, H, W, 3) when
        rendering every step (a stopped row repeats its last frame)."""
        actions = np.asarray(actions, dtype=np.float64)
        if len(actions) != len(self.rows):
            raise ValueError(f"{len(actions)} chunks for {len(self.rows)} live episodes")
        k = actions.shape[1]
        results = self._vec.step_chunk(actions, self.rows, render=self.render, stop_on_success=self.stop_on_success)
        success = np.array([r["success"] + [r["success"][-1]] * (k - r["steps"]) for r in results], bool)
        obs = {"image": np.stack([r["images"][-1] for r in results]),
               "state": np.stack([r["state"] for r in results]).astype(np.float32),
               "instruction": list(self.instructions), "success": success,
               "steps": np.array([r["steps"] for r in results])}
        if self.render == "all":
            obs["images"] = np.stack([np.stack(r["images"] + [r["images"][-1]] * (k - r["steps"])) for r in results])
        return obs

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None

    def __enter__(self) -> "LiberoRolloutEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
