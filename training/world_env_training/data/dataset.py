"""Episode datasets: demonstrations, exploration rollouts, policy rollouts and recorded robot runs.

A dataset is a folder::

    manifest.json                  # dataset metadata + one entry per episode (sha256, labels, ...)
    episodes/episode_000000.npz    # one np.savez_compressed file per episode

The format is specified in DATASET.md next to this file. Writes are crash-safe (every file is
replaced atomically, the manifest last), reads are checked (sha256, shapes, labels) and every
problem raises :class:`DatasetError` naming the file. Pure numpy; no pickle anywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

FORMAT = "world-env-episodes"
VERSION = 1
MANIFEST = "manifest.json"
EPISODES_DIR = "episodes"
_TMP_MARK = ".tmp-"  # temp files are "<dir>/.<name>.tmp-<pid>"; readers never look at them
_FILE_RE = re.compile(r"episodes/episode_(\d{6,})\.npz")
_EXTRA_PREFIX = "extras."
_META_KEY = "meta"

# Array fields: name -> (dtype, trailing shape, leading dimension "T" or "T+1", required)
_ARRAYS = {
    "frames": (np.uint8, None, "T+1", True),
    "wrist_frames": (np.uint8, None, "T+1", False),
    "depth": (np.float32, None, "T+1", False),
    "actions": (np.float32, (7,), "T", True),
    "states": (np.float32, (7,), "T+1", True),
    "joint_positions": (np.float32, (7,), "T+1", True),
    "success": (np.uint8, (), "T+1", True),
}
_META_FIELDS = ("instruction", "suite", "task_id", "init_state_id", "camera", "source", "seed")


class DatasetError(RuntimeError):
    """A dataset on disk is missing, corrupt or inconsistent; the message names the file."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _shape_error(name: str, got, expected: str) -> ValueError:
    return ValueError(f"{name}: shape {tuple(got)}, expected {expected}")


@dataclass(eq=False)
class Episode:
    """One episode of T steps: T+1 observations o_0..o_T and the T actions between them.

    Arrays (t indexes observations; action t is taken in o_t and leads to o_{t+1}):
        frames: (T+1, H, W, 3) uint8, upright RGB agent view (row 0 = top).
        actions: (T, 7) float32, LIBERO delta end-effector command
            [dx, dy, dz, drx, dry, drz, gripper] (normalised units as the controller takes
            them; gripper -1 open, +1 close).
        states: (T+1, 7) float32 proprio [x, y, z, rx, ry, rz, gripper width] (m, axis-angle
            rad, m) of the end effector at each frame.
        joint_positions: (T+1, 7) float32 arm joint angles (rad).
        success: (T+1,) uint8 per-frame label: 1 iff the task is achieved in o_t; monotone
            (0...0 1...1). bool or integer input is accepted and stored as uint8.
        wrist_frames: optional (T+1, Hw, Ww, 3) uint8 upright RGB wrist view (own size).
        depth: optional (T+1, H, W) float32 planar depth of the agent view in metres (0 = no
            reading).
        extras: name -> real-valued array with first dimension T or T+1 (e.g. ``log_probs``
            (T,)); names are identifiers.
    Metadata: instruction (language goal), suite, task_id, init_state_id (-1: none, e.g. a
    recorded run), camera (``CameraModel.to_dict()`` of the agent view, {} if unknown),
    source ("expert", "exploration", "policy", "recorded", ...), seed.

    Arrays are validated and cast (floating -> float32) on construction; a bad field raises
    ValueError naming the field, the shape or value got and what was expected.
    """

    frames: np.ndarray
    actions: np.ndarray
    states: np.ndarray
    joint_positions: np.ndarray
    success: np.ndarray
    instruction: str
    suite: str
    task_id: int
    init_state_id: int
    camera: dict
    source: str
    seed: int
    wrist_frames: np.ndarray | None = None
    depth: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check (and normalise dtypes of) every field; ValueError names the first bad one."""
        for name, (dtype, _, _, required) in _ARRAYS.items():
            value = getattr(self, name)
            if value is None:
                if required:
                    raise ValueError(f"{name}: missing (required)")
                continue
            setattr(self, name, _as_dtype(name, value, dtype))
        frames = self.frames
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise _shape_error("frames", frames.shape, "(T+1, H, W, 3)")
        n, h, w = frames.shape[:3]
        T = n - 1
        expected = {"T": T, "T+1": n}
        for name, (_, tail, lead, _) in _ARRAYS.items():
            value = getattr(self, name)
            if value is None or name == "frames":
                continue
            if name == "wrist_frames":
                ok, want = value.ndim == 4 and value.shape[0] == n and value.shape[-1] == 3, f"({n}, Hw, Ww, 3)"
            elif name == "depth":
                ok, want = value.shape == (n, h, w), f"({n}, {h}, {w})"
            else:
                ok, want = value.shape == (expected[lead], *tail), str((expected[lead], *tail))
            if not ok:
                raise _shape_error(name, value.shape, want)
        for name in ("actions", "states", "joint_positions", "depth"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                bad = np.argwhere(~np.isfinite(value))[0].tolist()
                raise ValueError(f"{name}: non-finite value at index {bad}")
        if self.depth is not None and (self.depth < 0).any():
            raise ValueError("depth: negative value (metres, 0 = no reading)")
        s = self.success
        if not np.isin(s, (0, 1)).all():
            raise ValueError(f"success: values {sorted(set(np.unique(s).tolist()))}, expected only 0 and 1")
        if (np.diff(s.astype(np.int8)) < 0).any():
            drop = int(np.argmax(np.diff(s.astype(np.int8)) < 0)) + 1
            raise ValueError(f"success: not monotone (1 -> 0 at frame {drop}); labels must be 0...0 1...1")
        for name in ("instruction", "suite", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}: {getattr(self, name)!r}, expected a non-empty string")
        for name, low in (("task_id", 0), ("init_state_id", -1), ("seed", None)):
            value = getattr(self, name)
            is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            if not is_int or (low is not None and value < low):
                raise ValueError(f"{name}: {value!r}, expected an integer" + (f" >= {low}" if low is not None else ""))
            setattr(self, name, int(value))
        if not isinstance(self.camera, dict):
            raise ValueError(f"camera: {type(self.camera).__name__}, expected a dict (CameraModel.to_dict())")
        try:
            json.dumps(self.camera)
        except (TypeError, ValueError) as e:
            raise ValueError(f"camera: not JSON-serialisable ({e})") from None
        if "width" in self.camera and (self.camera.get("height"), self.camera.get("width")) != (h, w):
            raise ValueError(f"camera: {self.camera.get('height')}x{self.camera.get('width')} (HxW), "
                             f"expected the frames' {h}x{w}")
        if not isinstance(self.extras, dict):
            raise ValueError(f"extras: {type(self.extras).__name__}, expected a dict of arrays")
        for key, value in list(self.extras.items()):
            name = f"extras[{key!r}]"
            if not isinstance(key, str) or not key.isidentifier():
                raise ValueError(f"{name}: name must be an identifier")
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                raise ValueError(f"{name}: dtype {value.dtype}, expected a real numeric dtype")
            if value.ndim < 1 or value.shape[0] not in (T, n):
                raise _shape_error(name, value.shape, f"({T}, ...) or ({n}, ...)")
            self.extras[key] = value

    @property
    def length(self) -> int:
        """Number of actions T."""
        return len(self.actions)

    @property
    def succeeded(self) -> bool:
        return bool(self.success[-1] == 1)

    @property
    def success_step(self) -> int | None:
        """Index of the first frame labelled 1, or None if the task is never achieved."""
        return int(np.argmax(self.success)) if self.succeeded else None

    def default_key(self) -> str:
        """Key identifying the episode for resumable collection: source/suite/task/init/seed."""
        return f"{self.source}/{self.suite}/{self.task_id}/{self.init_state_id}/{self.seed}"

    # --- (de)serialisation -------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: getattr(self, k) for k in _ARRAYS if getattr(self, k) is not None}
        arrays.update({_EXTRA_PREFIX + k: v for k, v in self.extras.items()})
        meta = {k: getattr(self, k) for k in _META_FIELDS}
        # A 0-d unicode array loads without pickle, unlike an object array.
        arrays[_META_KEY] = np.array(json.dumps({"format": FORMAT, "version": VERSION, **meta}))
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Episode":
        meta = json.loads(str(arrays[_META_KEY]))
        if meta.get("version") != VERSION:
            raise ValueError(f"meta: format version {meta.get('version')!r}, expected {VERSION}")
        return cls(**{k: arrays.get(k) for k in _ARRAYS}, **{k: meta[k] for k in _META_FIELDS},
                   extras={k[len(_EXTRA_PREFIX):]: v for k, v in arrays.items() if k.startswith(_EXTRA_PREFIX)})


def _as_dtype(name: str, value, dtype) -> np.ndarray:
    value = np.asarray(value)
    if dtype is np.float32:
        if value.dtype.kind != "f":
            raise ValueError(f"{name}: dtype {value.dtype}, expected floating (stored as float32)")
    elif name == "success":
        if value.dtype.kind not in "biu":
            raise ValueError(f"success: dtype {value.dtype}, expected bool or integer 0/1")
    elif value.dtype != np.uint8:  # images: a silent cast of floats in [0, 1] would ruin them
        raise ValueError(f"{name}: dtype {value.dtype}, expected uint8")
    return np.ascontiguousarray(value, dtype=dtype)


# --- files ------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # makes the rename itself durable


def _episode_file(index: int) -> str:
    return f"{EPISODES_DIR}/episode_{index:06d}.npz"


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path}: missing (not a dataset folder, or nothing was ever written)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DatasetError(f"{path}: format {got!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{path}: unknown format version {manifest.get('version')!r} (this reader: {VERSION})")
    entries = manifest.get("episodes")
    if not isinstance(entries, list) or not isinstance(manifest.get("info"), dict):
        raise DatasetError(f"{path}: 'episodes' must be a list and 'info' a dict")
    for i, e in enumerate(entries):
        # The file name is checked against the index so a manifest can't point outside the folder.
        if not isinstance(e, dict) or e.get("index") != i or e.get("file") != _episode_file(i):
            raise DatasetError(f"{path}: episode entry {i} malformed (index/file must be {i}/{_episode_file(i)})")
        missing = [k for k in _ENTRY_KEYS if k not in e]
        if missing:
            raise DatasetError(f"{path}: episode entry {i} lacks {missing}")
    return manifest


_ENTRY_KEYS = ("index", "file", "version", "key", "sha256", "bytes", "length", "suite", "task_id",
               "init_state_id", "instruction", "source", "seed", "succeeded", "success_step",
               "frame_shape", "arrays")


class Dataset:
    """Read-only view of a dataset folder (a snapshot of its manifest at open time).

    Every episode read is checked: size and sha256 against the manifest, then the arrays'
    dtypes/shapes/labels (Episode.validate). Any failure raises DatasetError naming the file.
    """

    def __init__(self, path: str | os.PathLike, check_sha256: bool = True):
        self.path = Path(path)
        self.check_sha256 = check_sha256
        self.manifest = _read_manifest(self.path)
        self._entries = self.manifest["episodes"]

    @property
    def info(self) -> dict:
        return self.manifest["info"]

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> Episode:
        entry = self.entry(i)
        arrays = self._load(entry, None)
        try:
            return Episode._from_arrays(arrays)
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{self.path / entry['file']}: invalid episode ({e})") from None

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))

    def entry(self, i: int) -> dict:
        """Manifest entry of episode ``i`` (negative indices count from the end)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range: dataset has {len(self)}")
        return self._entries[i]

    def keys(self) -> list[str]:
        return [e["key"] for e in self._entries]

    def select(self, suite: str | None = None, task_id: int | None = None, source: str | None = None,
               succeeded: bool | None = None, init_state_id: int | None = None) -> list[int]:
        """Indices of the episodes matching every given criterion (from the manifest only)."""
        want = {"suite": suite, "task_id": task_id, "source": source, "succeeded": succeeded,
                "init_state_id": init_state_id}
        want = {k: v for k, v in want.items() if v is not None}
        return [e["index"] for e in self._entries if all(e[k] == v for k, v in want.items())]

    def load_arrays(self, i: int, keys=("frames", "actions")) -> dict[str, np.ndarray]:
        """Just the named arrays of episode ``i`` (extras as ``extras.NAME``), decompressing only
        those; the sha256 check still covers the whole file. No label/shape validation."""
        return self._load(self.entry(i), tuple(keys))

    def _load(self, entry: dict, keys: tuple[str, ...] | None) -> dict[str, np.ndarray]:
        path = self.path / entry["file"]
        data = self._read_checked(entry, self.check_sha256)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                names = npz.files if keys is None else keys
                absent = [k for k in names if k not in npz.files]
                if absent:
                    raise DatasetError(f"{path}: no array(s) {absent}; has {sorted(npz.files)}")
                return {k: npz[k] for k in names}
        except DatasetError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DatasetError(f"{path}: cannot be loaded ({type(e).__name__}: {e})") from None

    def verify(self, load: bool = False, raise_on_error: bool = True) -> dict:
        """Check every episode file (size + sha256; with ``load`` also decode and validate).

        Returns ``{"episodes": n, "bad": {file: reason}, "unreferenced": [files]}``;
        unreferenced files (an episode written by a writer killed before its manifest update,
        or stray temp files) are reported but not errors. With ``raise_on_error`` a non-empty
        ``bad`` raises one DatasetError listing every bad file.
        """
        bad = {}
        for i, entry in enumerate(self._entries):
            try:
                if load:
                    self[i]
                else:
                    self._read_checked(entry)
            except DatasetError as e:
                bad[entry["file"]] = str(e)
        listed = {e["file"] for e in self._entries}
        folder = self.path / EPISODES_DIR
        present = sorted(f"{EPISODES_DIR}/{p.name}" for p in folder.iterdir()) if folder.is_dir() else []
        report = {"episodes": len(self), "bad": bad, "unreferenced": [f for f in present if f not in listed]}
        if bad and raise_on_error:
            raise DatasetError(f"{self.path}: {len(bad)} of {len(self)} episode files bad:\n"
                               + "\n".join(f"  {reason}" for reason in bad.values()))
        return report

    def _read_checked(self, entry: dict, check_sha256: bool = True) -> bytes:
        """The episode file's bytes, after checking its size and sha256 against the manifest."""
        path = self.path / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"{path}: missing (listed in {MANIFEST})") from None
        except OSError as e:
            raise DatasetError(f"{path}: unreadable ({e})") from None
        if len(data) != entry["bytes"]:
            raise DatasetError(f"{path}: {len(data)} bytes, {MANIFEST} says {entry['bytes']} (truncated or replaced)")
        if check_sha256 and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DatasetError(f"{path}: sha256 mismatch (corrupt)")
        return data


class DatasetWriter:
    """Appends episodes to a dataset folder, crash-safely and resumably.

    Each ``append`` writes the episode file atomically (temp file + fsync + rename), then
    rewrites the manifest the same way; an episode is part of the dataset once the manifest
    lists it, i.e. once ``append`` returns. A writer killed at any point leaves a readable
    dataset with every episode whose ``append`` returned. Opening an existing dataset
    (``resume=True``) continues its numbering and removes stray temp files; ``resume=False``
    refuses a folder that already holds a dataset. One writer per folder (an flock guards it).

    Args:
        path: Dataset folder (created if needed).
        info: Free-form JSON-able metadata (command, config) stored at creation; on resume it
            must equal the stored info or be None, so one dataset is not fed by two configs.
        resume: Continue an existing dataset instead of refusing it.
        compress: np.savez_compressed (default) or np.savez; readers handle both.
    """

    def __init__(self, path: str | os.PathLike, info: dict | None = None, resume: bool = True,
                 compress: bool = True):
        self.path = Path(path)
        self.compress = compress
        (self.path / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DatasetError(f"{self.path}: another DatasetWriter has it open") from None
        try:
            self._open(info, resume)
        except BaseException:
            self.close()
            raise

    def _open(self, info: dict | None, resume: bool) -> None:
        if info is not None:
            json.dumps(info)  # fail now, not at the first append
        if (self.path / MANIFEST).exists():
            if not resume:
                raise FileExistsError(f"{self.path}: already holds a dataset (resume=False)")
            self.manifest = _read_manifest(self.path)
            if info is not None and json.loads(json.dumps(info)) != self.manifest["info"]:
                raise ValueError(f"info: differs from the info stored in {self.path / MANIFEST}; "
                                 "pass info=None to resume, or write a new dataset")
            for folder in (self.path, self.path / EPISODES_DIR):
                for tmp in folder.glob(f".*{_TMP_MARK}*"):
                    tmp.unlink()
        elif any((self.path / EPISODES_DIR).glob("episode_*.npz")):
            # Creating a manifest here would silently orphan (then overwrite) those episodes.
            raise DatasetError(f"{self.path / MANIFEST}: missing, but {EPISODES_DIR}/ holds episode files")
        else:
            self.manifest = {"format": FORMAT, "version": VERSION, "created": _now(), "updated": _now(),
                             "info": info or {}, "episodes": []}
            _atomic_write(self.path / MANIFEST, self._manifest_bytes())
        self._keys = {e["key"] for e in self.manifest["episodes"]}

    def __len__(self) -> int:
        return len(self.manifest["episodes"])

    def has(self, key: str) -> bool:
        return key in self._keys

    def keys(self) -> list[str]:
        return [e["key"] for e in self.manifest["episodes"]]

    def append(self, episode: Episode, key: str | None = None) -> int:
        """Write ``episode`` and return its index. ``key`` (default ``episode.default_key()``)
        must be new to the dataset: collectors check ``has(key)`` to skip finished work."""
        if self._lock.closed:
            raise DatasetError(f"{self.path}: writer is closed")
        episode.validate()  # arrays may have been modified since construction
        key = episode.default_key() if key is None else key
        if key in self._keys:
            raise ValueError(f"key: {key!r} is already in {self.path} (check has(key) first)")
        index = len(self)
        arrays = episode._arrays()
        buf = io.BytesIO()
        (np.savez_compressed if self.compress else np.savez)(buf, **arrays)
        data = buf.getvalue()
        # An unlisted file at this index (a writer killed before its manifest update) is replaced.
        _atomic_write(self.path / _episode_file(index), data)
        entry = {"index": index, "file": _episode_file(index), "version": VERSION, "key": key,
                 "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "length": episode.length,
                 "suite": episode.suite, "task_id": episode.task_id, "init_state_id": episode.init_state_id,
                 "instruction": episode.instruction, "source": episode.source, "seed": episode.seed,
                 "succeeded": episode.succeeded, "success_step": episode.success_step,
                 "frame_shape": list(episode.frames.shape[1:]),
                 "arrays": sorted(k for k in arrays if k != _META_KEY)}
        self.manifest["episodes"].append(entry)
        self.manifest["updated"] = _now()
        try:
            _atomic_write(self.path / MANIFEST, self._manifest_bytes())
        except BaseException:
            self.manifest["episodes"].pop()  # keep memory in step with the disk
            raise
        self._keys.add(key)
        return index

    def _manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest, indent=1) + "\n").encode()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def init_states_used(folders) -> dict[tuple[str, int], list[int]]:
    """LIBERO init states the episodes of the dataset ``folders`` start from (manifests only):
    {(suite, task_id): sorted init_state_ids}. Episodes without one (-1: recorded runs) are left
    out. Evaluation excludes these so that it scores a policy on states no training stage saw."""
    used: dict[tuple[str, int], set[int]] = {}
    for folder in folders:
        dataset = Dataset(folder)
        for i in range(len(dataset)):
            entry = dataset.entry(i)
            if entry["init_state_id"] >= 0:
                used.setdefault((entry["suite"], int(entry["task_id"])), set()).add(int(entry["init_state_id"]))
    return {key: sorted(ids) for key, ids in sorted(used.items())}
