"""Several ``LiberoEnv`` run in worker processes, stepped in lock-step.

MuJoCo physics runs on one core per process, so a batch of envs needs several processes to
use several cores. Rendering on the CPU (EGL with Mesa's llvmpipe) is already multi-threaded
within one process (LP_NUM_THREADS, default: all cores), so where rendering dominates the gain
is smaller than the number of workers (on 2 cores about none at 128x128; see
``world_env_training.bench.libero``). Environment i lives in worker
``i % num_workers``; each worker steps its envs in turn. Workers are started with 'spawn':
a fresh interpreter holds no copy of the parent's GL contexts, threads or ROS state (fork
would), at the price of importing LIBERO once per worker (a few seconds, done in parallel).

Any failure (a worker's exception, or a worker that died) closes the whole vector env and is
raised in the parent as ``LiberoWorkerError`` naming the worker, the env index and its spec,
with the worker's traceback text: after it the envs' states are unknown.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from typing import Sequence

import numpy as np

from .env import validate_action

__all__ = ["LiberoWorkerError", "VecLiberoEnv"]


class LiberoWorkerError(RuntimeError):
    """An environment in a worker process failed (message: spec and worker traceback)."""


def _death(exitcode: int | None, envs: int) -> str:
    """Why a worker that held ``envs`` environments is gone, as far as its exit code tells."""
    text = f"worker exited with code {exitcode}"
    if exitcode == -signal.SIGKILL:
        # The kernel's OOM killer sends SIGKILL; measured here: 16 envs of libero_object at 64 px
        # took 11.8 GB in one worker.
        text += (f" (SIGKILL, most often the kernel's out-of-memory killer: the worker held {envs} environments, "
                 "each a MuJoCo scene with its renderer; run fewer at once)")
    return text


def _run_chunk(env, actions: np.ndarray, render: str, stop_on_success: bool) -> dict:
    """Execute the (k, 7) ``actions`` in order; render every step's frame (``render="all"``) or
    only the last executed step's (``"last"``); with ``stop_on_success`` stop after the step
    that achieves the task. Returns {"steps", "success" (per step), "images", "state"}."""
    images, successes, obs = [], [], None
    for i, action in enumerate(actions):
        last = i == len(actions) - 1
        obs, success = env.step(action, render=False)
        successes.append(success)
        done = last or (stop_on_success and success)
        if render == "all" or done:
            images.append(env.render())
        if done:
            break
    return {"steps": len(successes), "success": successes, "images": images, "state": obs["state"]}


def _worker(conn, specs: dict[int, dict]) -> None:
    """Serve commands for the envs ``specs`` (global index -> LiberoEnv kwargs) until 'close'.

    Replies ("ok", {index: result}) or ("error", index or None, traceback text).
    """
    envs, current = {}, None
    try:
        from .env import LiberoEnv

        for current, spec in specs.items():
            envs[current] = LiberoEnv(**spec)
        conn.send(("ok", None))
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            out = {}
            for current, arg in args.items():
                if cmd == "reset":
                    out[current] = envs[current].reset(*arg)
                elif cmd == "start":
                    spec, init_state_id, settle_steps = arg
                    if envs[current].spec != spec:  # another task: rebuild this slot's simulator
                        envs[current].close()
                        envs[current] = LiberoEnv(**spec)
                    out[current] = envs[current].reset(init_state_id, settle_steps)
                elif cmd == "chunk":
                    out[current] = _run_chunk(envs[current], *arg)
                else:
                    out[current] = envs[current].step(arg)
            conn.send(("ok", out))
    except (KeyboardInterrupt, EOFError):
        pass  # parent gone or interrupted: just clean up
    except BaseException:
        try:
            conn.send(("error", current, traceback.format_exc()))
        except (OSError, EOFError):
            pass
    finally:
        for env in envs.values():
            try:
                env.close()
            except Exception:
                pass
        conn.close()


class VecLiberoEnv:
    """A batch of LIBERO environments in ``num_workers`` processes.

    Args:
        specs: one dict of ``LiberoEnv`` arguments per env (suite, task_id, resolution, wrist,
            depth, seed); the batch order everywhere is this order.
        num_workers: processes to use (at most one per env).
    """

    def __init__(self, specs: Sequence[dict], num_workers: int = 2):
        if not specs:
            raise ValueError("VecLiberoEnv needs at least one env spec")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.specs = [dict(s) for s in specs]
        self.num_envs = len(self.specs)
        n = min(num_workers, self.num_envs)
        self._owner = [i % n for i in range(self.num_envs)]
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        self._closed = False
        try:
            for w in range(n):
                parent, child = ctx.Pipe()
                mine = {i: self.specs[i] for i in range(self.num_envs) if self._owner[i] == w}
                proc = ctx.Process(target=_worker, args=(child, mine), name=f"libero-worker-{w}", daemon=True)
                proc.start()
                child.close()  # so the parent sees EOF if the worker dies
                self._conns.append(parent)
                self._procs.append(proc)
            self._gather()  # envs build in parallel; wait until all are up
        except BaseException:
            self.close()
            raise

    def reset(self, init_state_ids: Sequence[int], settle_steps: int = 10) -> list[dict]:
        """Reset env i to its task's init state ``init_state_ids[i]``; returns the B observations."""
        ids = [int(i) for i in init_state_ids]
        if len(ids) != self.num_envs:
            raise ValueError(f"need {self.num_envs} init state ids, got {len(ids)}")
        return self._run("reset", [(i, settle_steps) for i in ids])

    def step(self, actions) -> tuple[list[dict], np.ndarray]:
        """Apply actions (B, 7); returns (B observations, successes (B,) bool)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {actions.shape}")
        for i, a in enumerate(actions):
            try:
                validate_action(a)
            except ValueError as err:
                raise ValueError(f"env {i}: {err}") from None
        results = self._run("step", list(actions))
        return [r[0] for r in results], np.array([r[1] for r in results], dtype=bool)

    def start(self, specs: Sequence[dict], init_state_ids: Sequence[int], settle_steps: int = 10) -> list[dict]:
        """Reset env i to init state ``init_state_ids[i]`` of the task ``specs[i]`` names (a
        ``LiberoEnv`` spec); an env holding another task is rebuilt first (a few seconds)."""
        if len(specs) != self.num_envs or len(init_state_ids) != self.num_envs:
            raise ValueError(f"need {self.num_envs} specs and init state ids, "
                             f"got {len(specs)} and {len(init_state_ids)}")
        self.specs = [dict(s) for s in specs]
        return self._run("start", [(dict(s), int(i), settle_steps) for s, i in zip(specs, init_state_ids)])

    def step_chunk(self, actions, envs: Sequence[int], render: str = "last",
                   stop_on_success: bool = True) -> list[dict]:
        """Run an action chunk in each of the envs ``envs`` at once (one message per worker).

        actions: (len(envs), k, 7). render: "all" (a frame per step, e.g. for a reflector) or
        "last" (only the last executed step's frame: what a chunked policy reads next).
        stop_on_success: an env stops executing its chunk after the step that achieves the task.
        Returns per env {"steps": executed, "success": [bool per step], "images": [frames],
        "state": (7,) after the last executed step}.
        """
        if render not in ("all", "last"):
            raise ValueError(f"render must be 'all' or 'last', got {render!r}")
        actions = np.asarray(actions, dtype=np.float64)
        envs = [int(e) for e in envs]
        if actions.ndim != 3 or actions.shape[0] != len(envs) or actions.shape[2] != 7:
            raise ValueError(f"actions must have shape ({len(envs)}, k, 7), got {actions.shape}")
        for i, chunk in zip(envs, actions):
            for a in chunk:
                try:
                    validate_action(a)
                except ValueError as err:
                    raise ValueError(f"env {i}: {err}") from None
        return self._run("chunk", {e: (chunk, render, stop_on_success) for e, chunk in zip(envs, actions)})

    # ------------------------------------------------------------------ plumbing
    def _run(self, cmd: str, args) -> list:
        """Send ``cmd`` with args (a list: one per env; a dict: only those envs) and gather."""
        if self._closed:
            raise RuntimeError("VecLiberoEnv is closed")
        by_env = dict(enumerate(args)) if isinstance(args, list) else dict(args)
        for w, conn in enumerate(self._conns):
            mine = {i: a for i, a in by_env.items() if self._owner[i] == w}
            try:
                conn.send((cmd, mine))
            except (OSError, EOFError):
                pass  # a dead worker is reported by _gather
        out = {}
        for part in self._gather():
            out.update(part)
        return [out[i] for i in by_env]

    def _gather(self) -> list:
        """One reply from every worker; on any failure close everything and raise."""
        replies, error = [], None
        for w, conn in enumerate(self._conns):
            try:
                status, *payload = conn.recv()
            except (OSError, EOFError):
                self._procs[w].join(timeout=5)
                status, payload = "died", [None, _death(self._procs[w].exitcode, self._owner.count(w))]
            if status == "ok":
                replies.append(payload[0])
            elif error is None:
                error = (w, *payload)
        if error is not None:
            self.close()
            w, index, text = error
            if index is None:
                owned = [i for i in range(self.num_envs) if self._owner[i] == w]
                if len(owned) > 1 and all(self.specs[i] == self.specs[owned[0]] for i in owned):
                    where = f"envs {', '.join(map(str, owned))}, each {self.specs[owned[0]]}"
                else:
                    where = "; ".join(f"env {i} {self.specs[i]}" for i in owned)
            else:
                where = f"env {index} {self.specs[index]}"
            raise LiberoWorkerError(f"LIBERO worker {w} failed ({where}):\n{text}")
        return replies

    def close(self) -> None:
        """Stop all workers (idempotent); a worker that does not exit is terminated."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (OSError, EOFError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> "VecLiberoEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_procs", None) is not None and not getattr(self, "_closed", True):
            self.close()
