"""Crash-safe model folders and training checkpoints.

``atomic_dir(path)`` yields a temp folder next to ``path``; when the block ends without an
error its files are fsynced and it is renamed onto ``path`` in one step, so a reader sees either
no folder or a complete one. (Replacing an existing folder takes two renames, old aside then
new in, and a crash between them leaves the old one as ``.NAME.old-PID``.)

A training run keeps ``RUN/checkpoints/step_NNNNNNN/`` folders, each written with
``atomic_dir``, plus a ``latest`` symlink updated after each one. ``latest_checkpoint`` scans
for the highest complete step rather than trusting the symlink, so a run killed between
writing a checkpoint and moving the link still resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

CHECKPOINTS = "checkpoints"
OPTIMIZER_FILE = "optimizer.pt"
TRAIN_STATE_FILE = "train_state.json"  # {"step": N, "train_config": {...}}
LATEST = "latest"
_STEP_RE = re.compile(r"step_(\d+)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(Path(folder) / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


@contextmanager
def atomic_dir(path: str | Path):
    """Write a folder atomically: ``with atomic_dir(p) as tmp: (write files into tmp)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}"


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps of the complete checkpoints in ``run_dir``, ascending (temp folders start with '.')."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    steps = [int(m.group(1)) for p in folder.iterdir() if (m := _STEP_RE.fullmatch(p.name)) and p.is_dir()]
    return sorted(steps)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    steps = checkpoint_steps(run_dir)
    return step_dir(run_dir, steps[-1]) if steps else None


def mark_latest(run_dir: str | Path, step: int, keep: int = 0) -> None:
    """Point ``checkpoints/latest`` at ``step`` (atomic symlink swap) and delete all but the
    newest ``keep`` checkpoints (0: keep every one)."""
    folder = Path(run_dir) / CHECKPOINTS
    tmp = folder / f".{LATEST}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(step_dir(run_dir, step).name)
    os.replace(tmp, folder / LATEST)
    _fsync_dir(folder)
    if keep > 0:
        for old in checkpoint_steps(run_dir)[:-keep]:
            shutil.rmtree(step_dir(run_dir, old))


def remove_stale(run_dir: str | Path) -> None:
    """Clean ``checkpoints/`` after a killed writer: delete temp folders and links, and put back
    a folder moved aside by a replace that never completed."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if not p.name.startswith("."):
            continue
        if ".old-" in p.name:  # a replace cut between its two renames: the old folder is the copy
            original = folder / p.name[1:p.name.rindex(".old-")]
            if not original.exists():
                os.rename(p, original)
                continue
        if ".tmp-" in p.name or ".old-" in p.name:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def save_training_checkpoint(run_dir: str | Path, step: int, write_model, optimizer, train_config: dict,
                             keep: int = 0) -> Path:
    """Write ``RUN/checkpoints/step_N`` atomically, then move ``latest``.

    ``write_model(folder)`` writes the model's files; the optimizer state and the step with the
    run's config are added beside them so a resumed run continues exactly. Returns the folder.
    """
    import torch  # only the trainers pay for it

    folder = step_dir(run_dir, step)
    with atomic_dir(folder) as tmp:
        write_model(tmp)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        (tmp / TRAIN_STATE_FILE).write_text(json.dumps({"step": step, "train_config": train_config}, indent=1))
    mark_latest(run_dir, step, keep)
    return folder


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0.1 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))
