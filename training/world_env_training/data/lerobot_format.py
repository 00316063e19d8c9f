"""LeRobotDataset v3 import and export: ``world-env export-lerobot`` and ``world-env import-lerobot``.

The ``lerobot`` package cannot be installed beside our pins (0.5 and later need Python >= 3.12;
0.4.4, the last for Python 3.11, pins torch < 2.11, diffusers < 0.36, huggingface-hub < 0.36),
so this module writes and reads the documented v3.0 layout itself, with pyarrow (parquet),
PyAV (mp4) and pandas (the tasks table)::

    meta/info.json                                   codebase_version "v3.0", fps, features, paths
    meta/stats.json                                  mean/std/min/max/count per feature
    meta/tasks.parquet                               task text (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, where its
                                                     rows and video frames live
    data/chunk-000/file-000.parquet                  one row per frame, episodes one after another
    videos/<camera key>/chunk-000/file-000.mp4       one stream per camera, episodes one after another

Mapping (DATASET.md has our side): an episode of T steps becomes T+1 LeRobot frames. Frame t holds
``observation.images.agentview`` (o_t), ``observation.images.wrist`` and ``observation.depth``
where the episode has them, ``observation.state`` (our 7-D end-effector state),
``observation.joint_positions``, ``action`` (a_t; the last frame, which has no action of ours,
repeats the gripper command with zero motion) and ``success`` (the per-frame label). The
instruction is the episode's task. ``meta/info.json["world_env"]`` keeps the rig, and the
episodes table keeps each episode's key, suite, task id, init state, source, seed and camera
model, so an export imports back to the same dataset and an imported dataset draws action maps.
Importing drops the last frame's action whatever wrote the dataset (action t leads from o_t to
o_{t+1}, and nothing follows the last frame).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from world_env_training.configs import ExportLeRobotConfig, ImportLeRobotConfig

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"

IMAGE_KEY = "observation.images.agentview"
WRIST_KEY = "observation.images.wrist"
DEPTH_KEY = "observation.depth"
STATE_KEY = "observation.state"
JOINTS_KEY = "observation.joint_positions"
ACTION_KEY = "action"
SUCCESS_KEY = "success"
STATE_NAMES = ["x", "y", "z", "rx", "ry", "rz", "gripper_width"]
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]
JOINT_NAMES = [f"joint_{i}" for i in range(1, 8)]
_META = "world_env/"  # prefix of our per-episode columns in the episodes table


@dataclass(frozen=True)
class VideoCodec:
    encoder: str     # FFmpeg encoder
    pix_fmt: str
    options: dict    # encoder options
    name: str        # what info.json's video.codec says (the bitstream, as LeRobot records it)


# A keyframe every 2 frames, as LeRobot encodes: a random frame decodes from at most 2 frames.
VIDEO_CODECS = {
    "h264": VideoCodec("libx264", "yuv420p", {"crf": "18", "g": "2"}, "h264"),
    "av1": VideoCodec("libsvtav1", "yuv420p", {"crf": "30", "g": "2"}, "av1"),
    "lossless": VideoCodec("libx264rgb", "rgb24", {"qp": "0", "g": "2"}, "h264"),
}


class LeRobotFormatError(ValueError):
    """A LeRobot folder that is missing, not v3.0, or lacks what our format needs; the message
    names the file or feature."""


# --- writing ----------------------------------------------------------------------------------

class _Stats:
    """Running mean/std/min/max/count of one feature over frames (images: per channel, in [0, 1])."""

    def __init__(self):
        self.n, self.sum, self.sq, self.min, self.max = 0, 0.0, 0.0, None, None

    def add(self, values: np.ndarray, axes: tuple[int, ...]) -> None:
        v = values.astype(np.float64)
        self.n += v.shape[0]
        self.sum = self.sum + v.sum(axis=axes)
        self.sq = self.sq + (v * v).sum(axis=axes)
        lo, hi = v.min(axis=axes), v.max(axis=axes)
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)

    def to_dict(self, per_sample: int, shape: tuple[int, ...]) -> dict:
        count = self.n * per_sample
        mean = self.sum / count
        std = np.sqrt(np.maximum(self.sq / count - mean * mean, 0.0))
        return {"mean": mean.reshape(shape).tolist(), "std": std.reshape(shape).tolist(),
                "min": self.min.reshape(shape).tolist(), "max": self.max.reshape(shape).tolist(), "count": [self.n]}


class _VideoFile:
    """One camera's current mp4: episodes are appended as consecutive frames."""

    def __init__(self, path: Path, codec: VideoCodec, fps: int, height: int, width: int):
        import av

        # SVT-AV1 prints its whole configuration to stderr per file unless told to log errors only.
        os.environ.setdefault("SVT_LOG", "1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec.encoder, rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, codec.pix_fmt
        self.stream.options = dict(codec.options)

    def write(self, frames: np.ndarray) -> None:
        import av

        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class LeRobotWriter:
    """Writes episodes of ours into a new LeRobotDataset v3 folder.

    ``append(episode, key=None)`` encodes the episode's frames and buffers its rows; ``close()``
    (or leaving the ``with`` block) writes the remaining parquet files and the metadata,
    ``meta/info.json`` last: a folder without it is an unfinished write that readers refuse.
    Every episode must have the same features (frame size, wrist view, depth) as the first,
    since a LeRobot dataset declares one shape per feature.

    Args:
        path: Folder to create (an existing non-empty folder is refused).
        fps: Frame rate of the dataset and its video timestamps.
        video_codec: A key of ``VIDEO_CODECS``.
        rig: Rig (camera + robot base) of the recording, kept in ``info.json["world_env"]``.
        info: Free-form JSON-able provenance, kept beside the rig.
        robot_type: ``info.json``'s robot_type.
        data_file_mb / video_file_mb: Start a new parquet / mp4 file once the current one holds this much.
    """

    def __init__(self, path: str | os.PathLike, fps: int, video_codec: str = "h264", rig=None,
                 info: dict | None = None, robot_type: str = "panda", chunks_size: int = 1000,
                 data_file_mb: int = 100, video_file_mb: int = 200):
        if video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec: {video_codec!r}, expected one of {sorted(VIDEO_CODECS)}")
        if int(fps) != fps or fps <= 0:
            raise ValueError(f"fps: {fps!r}, expected a positive integer")
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f"{self.path}: exists and is not an empty folder; give a new output folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self.fps, self.codec, self.rig, self.robot_type = int(fps), VIDEO_CODECS[video_codec], rig, robot_type
        self.info = json.loads(json.dumps(info or {}))
        self.chunks_size, self.data_file_mb, self.video_file_mb = chunks_size, data_file_mb, video_file_mb
        self.features: dict | None = None
        self.episodes: list[dict] = []
        self.tasks: dict[str, int] = {}
        self.keys: set[str] = set()
        self.frames_total = 0
        self.stats: dict[str, _Stats] = {}
        self._data_file, self._rows, self._row_bytes = 0, [], 0
        self._videos: dict[str, _VideoFile] = {}
        self._video_files: dict[str, int] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self.episodes)

    def has(self, key: str) -> bool:
        return key in self.keys

    # features of an episode, as info.json declares them
    def _episode_features(self, episode) -> dict:
        h, w = episode.frames.shape[1:3]
        features = {IMAGE_KEY: self._video_feature(h, w)}
        if episode.wrist_frames is not None:
            features[WRIST_KEY] = self._video_feature(*episode.wrist_frames.shape[1:3])
        if episode.depth is not None:
            features[DEPTH_KEY] = {"dtype": "float32", "shape": [h, w], "names": ["height", "width"]}
        features.update({
            STATE_KEY: {"dtype": "float32", "shape": [7], "names": STATE_NAMES},
            JOINTS_KEY: {"dtype": "float32", "shape": [7], "names": JOINT_NAMES},
            ACTION_KEY: {"dtype": "float32", "shape": [7], "names": ACTION_NAMES},
            SUCCESS_KEY: {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        })
        return features

    def _video_feature(self, h: int, w: int) -> dict:
        return {"dtype": "video", "shape": [int(h), int(w), 3], "names": ["height", "width", "channels"],
                "info": {"video.height": int(h), "video.width": int(w), "video.codec": self.codec.name,
                         "video.pix_fmt": self.codec.pix_fmt, "video.is_depth_map": False,
                         "video.fps": self.fps, "video.channels": 3, "has_audio": False}}

    def _file_indices(self, counter: int) -> dict:
        return {"chunk_index": counter // self.chunks_size, "file_index": counter % self.chunks_size}

    def append(self, episode, key: str | None = None) -> int:
        """Add ``episode`` (a ``dataset.Episode``) and return its episode index."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        episode.validate()
        key = episode.default_key() if key is None else key
        if key in self.keys:
            raise ValueError(f"key: {key!r} is already in {self.path}")
        features = self._episode_features(episode)
        if self.codec.pix_fmt == "yuv420p":  # 4:2:0 halves the chroma planes: x264/SVT need even sizes
            odd = [k for k in (IMAGE_KEY, WRIST_KEY) if k in features and any(s % 2 for s in features[k]["shape"][:2])]
            if odd:
                raise ValueError(f"episode {key!r}: {odd} have an odd height or width, which yuv420p cannot "
                                 "encode; use video_codec lossless")
        if self.features is None:
            self.features = features
        elif features != self.features:
            want = {k: v["shape"] for k, v in self.features.items() if k in (IMAGE_KEY, WRIST_KEY, DEPTH_KEY)}
            got = {k: v["shape"] for k, v in features.items() if k in (IMAGE_KEY, WRIST_KEY, DEPTH_KEY)}
            raise ValueError(f"episode {key!r}: images {got}, the dataset's first episode has {want}; "
                             "a LeRobot dataset has one shape per feature")
        index, n = len(self.episodes), len(episode.frames)
        task_index = self.tasks.setdefault(episode.instruction, len(self.tasks))
        # The last frame has no action of ours: hold still and keep the gripper command.
        last = np.zeros((1, 7), np.float32)
        last[0, 6] = episode.actions[-1, 6] if episode.length else -1.0
        actions = np.concatenate([episode.actions, last])
        frame_index = np.arange(n)
        columns = {STATE_KEY: episode.states, JOINTS_KEY: episode.joint_positions, ACTION_KEY: actions,
                   SUCCESS_KEY: episode.success.astype(bool),
                   "timestamp": (frame_index / self.fps).astype(np.float32), "frame_index": frame_index,
                   "episode_index": np.full(n, index), "index": self.frames_total + frame_index,
                   "task_index": np.full(n, task_index)}
        if episode.depth is not None:
            columns[DEPTH_KEY] = episode.depth
        for name in (STATE_KEY, JOINTS_KEY, ACTION_KEY):
            self.stats.setdefault(name, _Stats()).add(columns[name], (0,))
        row = {"episode_index": index, "tasks": [episode.instruction], "length": n,
               "data/chunk_index": self._file_indices(self._data_file)["chunk_index"],
               "data/file_index": self._file_indices(self._data_file)["file_index"],
               "dataset_from_index": self.frames_total, "dataset_to_index": self.frames_total + n}
        for video_key, frames in ((IMAGE_KEY, episode.frames), (WRIST_KEY, episode.wrist_frames)):
            if frames is None:
                continue
            video = self._video(video_key, frames.shape[1], frames.shape[2])
            start = video.frames
            video.write(frames)
            counters = self._file_indices(self._video_files[video_key])
            row.update({f"videos/{video_key}/chunk_index": counters["chunk_index"],
                        f"videos/{video_key}/file_index": counters["file_index"],
                        f"videos/{video_key}/from_timestamp": start / self.fps,
                        f"videos/{video_key}/to_timestamp": (start + n) / self.fps})
            self.stats.setdefault(video_key, _Stats()).add(frames / 255.0, (0, 1, 2))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                    _META + "key": key, _META + "suite": episode.suite, _META + "task_id": episode.task_id,
                    _META + "init_state_id": episode.init_state_id, _META + "source": episode.source,
                    _META + "seed": episode.seed, _META + "camera": json.dumps(episode.camera)})
        self.episodes.append(row)
        self.keys.add(key)
        self._rows.append(columns)
        self._row_bytes += sum(np.asarray(v).nbytes for v in columns.values())
        self.frames_total += n
        if self._row_bytes >= self.data_file_mb * 2**20:
            self._flush_rows()
            self._data_file += 1
        return index

    def _video(self, key: str, h: int, w: int) -> _VideoFile:
        video = self._videos.get(key)
        # An encoder may buffer its first frames before anything reaches the file.
        if video is not None and video.path.exists() and video.path.stat().st_size >= self.video_file_mb * 2**20:
            video.close()
            self._video_files[key] += 1
            video = None
        if video is None:
            counter = self._video_files.setdefault(key, 0)
            path = self.path / VIDEO_PATH.format(video_key=key, **self._file_indices(counter))
            video = self._videos[key] = _VideoFile(path, self.codec, self.fps, h, w)
        return video

    def _flush_rows(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        arrays, names = [], []
        for name in self._rows[0]:
            values = np.concatenate([np.asarray(r[name]) for r in self._rows])
            arrays.append(_arrow_column(values))
            names.append(name)
        path = self.path / DATA_PATH.format(**self._file_indices(self._data_file))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
        self._rows, self._row_bytes = [], 0

    def close(self) -> None:
        """Finish the videos and parquet files, then write the metadata (info.json last)."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._closed:
            return
        self._closed = True
        for video in self._videos.values():
            video.close()
        if not self.episodes:
            return  # nothing appended: leave no info.json, so the folder does not pass for a dataset
        self._flush_rows()
        path = self.path / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), path)
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())}, index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.path / TASKS_PATH)
        stats = {}
        for name, s in self.stats.items():
            image = self.features[name]["dtype"] == "video"
            h, w = self.features[name]["shape"][:2] if image else (1, 1)
            stats[name] = s.to_dict(h * w, (3, 1, 1) if image else (-1,))
        (self.path / STATS_PATH).write_text(json.dumps(stats, indent=1))
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": len(self.episodes), "total_frames": self.frames_total,
                "total_tasks": len(self.tasks), "chunks_size": self.chunks_size,
                "data_files_size_in_mb": self.data_file_mb, "video_files_size_in_mb": self.video_file_mb,
                "fps": self.fps, "splits": {"train": f"0:{len(self.episodes)}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": self.features,
                "world_env": {"state": "eef", "last_action": "padding",
                              "rig": self.rig.to_dict() if self.rig is not None else None, "info": self.info}}
        tmp = self.path / (INFO_PATH + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(self.path / INFO_PATH)

    def __enter__(self) -> "LeRobotWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _arrow_column(values: np.ndarray):
    """A numpy column as arrow: scalars as they are, (N, d) as fixed-size lists, (N, H, W) as
    nested fixed-size lists (how HF datasets stores a feature of that shape)."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    column = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


# --- reading ----------------------------------------------------------------------------------

def _load_info(root: Path) -> dict:
    path = root / INFO_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (not a LeRobot dataset folder, or an unfinished write)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LeRobotFormatError(f"{path}: not valid JSON ({e})") from None
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise LeRobotFormatError(f"{path}: codebase_version {version!r}, expected {CODEBASE_VERSION!r} "
                                 "(convert older datasets with lerobot's v2.1 -> v3.0 converter first)")
    missing = [k for k in ("fps", "features", "data_path") if k not in info]
    if missing:
        raise LeRobotFormatError(f"{path}: lacks {missing}")
    return info


def _read_parquets(folder: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{folder}: no chunk-*/file-*.parquet files")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def _numpy(column, width: tuple[int, ...]) -> np.ndarray:
    """An arrow column of (nested) lists or scalars as an (N, *width) array."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    n = len(column)
    for _ in width:
        column = column.flatten()
    return np.asarray(column.to_numpy(zero_copy_only=False)).reshape(n, *width)


def _read_video(path: Path, start_s: float, n: int, fps: int) -> np.ndarray:
    """``n`` consecutive RGB frames of ``path`` from ``start_s`` (episodes share a file)."""
    import av

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (listed in meta/episodes)")
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if start_s > 0:
            container.seek(int(start_s / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is not None and float(frame.pts * stream.time_base) < start_s - 0.5 / fps:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    if len(frames) != n:
        raise LeRobotFormatError(f"{path}: {len(frames)} frames from {start_s:.3f} s on, the episode has {n}")
    return np.stack(frames)


def _decode_images(values: list) -> np.ndarray:
    """LeRobot ``image`` features: PNG/JPEG bytes in a {bytes, path} struct per row."""
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in values])


def _flat_names(names) -> list[str]:
    if isinstance(names, dict):
        return [str(n) for v in names.values() for n in (v if isinstance(v, list) else [v])]
    return [str(n) for n in names] if isinstance(names, list) else []


def _resize(images: np.ndarray, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    # Depth is resampled by nearest neighbour: averaging across an object edge invents depths.
    method = Image.BILINEAR if mode == "rgb" else Image.NEAREST
    out = [np.asarray(Image.fromarray(im).resize((size, size), method)) for im in images]
    return np.stack(out).astype(images.dtype)


class _States:
    """Our 7-D states and arm joints from a LeRobot state column (module docstring)."""

    def __init__(self, kind: str, dim: int, rig, feature: str, has_joints: bool, source: str):
        self.kind, self.robot = kind, None
        if kind == "eef" and not has_joints and rig is None:
            raise LeRobotFormatError(
                f"{source}: no {JOINTS_KEY} feature; our format needs arm joint angles: give rig_file so they "
                "are solved by inverse kinematics from the end-effector states")
        if kind == "eef" and dim != 7:
            raise LeRobotFormatError(f"{source}: {feature} has {dim} entries; our end-effector state has 7 "
                                     "[x, y, z, rx, ry, rz, gripper width] (state_kind joints for joint positions)")
        if kind == "joints":
            if dim not in (8, 9):
                raise LeRobotFormatError(
                    f"{source}: {feature} has {dim} joint entries; expected the 7 arm joints plus the gripper: "
                    "8 (+ opening width, m) or 9 (+ the two finger joints, m)"
                    + (" -- the gripper opening is missing" if dim == 7 else ""))
            if rig is None:
                raise LeRobotFormatError(
                    f"{source}: {feature} holds joint positions; recomputing end-effector states with our "
                    "robot model needs the robot base pose, and the dataset has no rig: give rig_file "
                    "(a rig YAML: camera model + robot_base)")
        if kind == "joints" or rig is not None:
            from world_env_common.robot import PandaModel

            self.robot = PandaModel(rig.base_position, rig.base_quat_wxyz)

    def convert(self, values: np.ndarray, joints: np.ndarray | None, source: str) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "joints":
            q = values[:, :7].astype(float)
            if values.shape[1] == 9:
                fingers = values[:, 7:9]
            else:
                fingers = np.stack([values[:, 7] / 2, -values[:, 7] / 2], axis=1)
            states = np.stack([self.robot.state_from_joints(qi, f) for qi, f in zip(q, fingers)])
            return states.astype(np.float32), q.astype(np.float32)
        if joints is not None:
            return values, joints
        solved, q = [], None
        for t, state in enumerate(values):
            result = self.robot.joints_from_state(state, q_init=q)
            if not result.success:
                raise LeRobotFormatError(f"{source}: frame {t}: no joint solution reaches its end-effector state "
                                         f"(error {result.pos_err_m * 1e3:.1f} mm, {result.rot_err_rad:.3f} rad)")
            q = result.q
            solved.append(q)
        return values, np.array(solved, np.float32)


def _pick_camera(features: dict, wanted: str, default: str, option: str, required: bool, source: str) -> str:
    cameras = sorted(k for k, f in features.items() if f.get("dtype") in ("video", "image"))
    if wanted:
        if wanted not in cameras:
            raise LeRobotFormatError(f"{source}: {option}={wanted!r} is not a camera feature; it has {cameras}")
        return wanted
    if default in cameras:
        return default
    if required:
        rest = [c for c in cameras if c != WRIST_KEY]
        if len(rest) == 1:
            return rest[0]
        raise LeRobotFormatError(f"{source}: no {default}; choose the agent view with {option} among {cameras}")
    return ""


def import_lerobot(cfg: ImportLeRobotConfig) -> dict:
    """Convert the LeRobotDataset v3 folder ``cfg.input_dir`` into our format at ``cfg.output_dir``."""
    import pandas as pd
    import pyarrow.parquet as pq

    from world_env_common.rig import Rig
    from world_env_training.data.dataset import DatasetWriter, Episode

    root = Path(cfg.input_dir)
    info = _load_info(root)
    source = str(root / INFO_PATH)
    features, fps = info["features"], int(info["fps"])
    ours = info.get("world_env") or {}
    rig = Rig.load(cfg.rig_file) if cfg.rig_file else (Rig.from_dict(ours["rig"], source) if ours.get("rig") else None)
    image_key = _pick_camera(features, cfg.image_key, IMAGE_KEY, "image_key", True, source)
    wrist_key = _pick_camera(features, cfg.wrist_key, WRIST_KEY, "wrist_key", False, source)
    depth_key = DEPTH_KEY if DEPTH_KEY in features else ""
    for name in (cfg.state_key, ACTION_KEY):
        if name not in features:
            raise LeRobotFormatError(f"{source}: no {name!r} feature; it has {sorted(features)}")
    if list(features[ACTION_KEY]["shape"]) != [7]:
        raise LeRobotFormatError(f"{source}: action shape {features[ACTION_KEY]['shape']}, expected [7] "
                                 "(LIBERO delta end-effector command)")
    kind = cfg.state_kind
    if kind == "auto":
        names = _flat_names(features[cfg.state_key].get("names"))
        if ours.get("state") == "eef":
            kind = "eef"
        elif any("joint" in n.lower() for n in names):
            kind = "joints"
        else:
            raise LeRobotFormatError(f"{source}: cannot tell whether {cfg.state_key} (names {names}) holds our "
                                     "end-effector state or joint positions; give state_kind eef or joints")
    state_dim = int(np.prod(features[cfg.state_key]["shape"]))
    states_of = _States(kind, state_dim, rig, cfg.state_key, JOINTS_KEY in features, source)

    episodes = _read_parquets(root / "meta" / "episodes").to_pylist()
    episodes.sort(key=lambda e: e["episode_index"])
    tasks_path = root / TASKS_PATH
    if not tasks_path.is_file():
        raise LeRobotFormatError(f"{tasks_path}: missing")
    tasks = pd.read_parquet(tasks_path)
    task_text = {int(i): str(t) for t, i in zip(tasks.index, tasks["task_index"])}
    video_path = info.get("video_path") or VIDEO_PATH
    columns = [cfg.state_key, ACTION_KEY, "episode_index", "frame_index", "task_index"]
    columns += [k for k in (JOINTS_KEY, SUCCESS_KEY, depth_key) if k and k in features]
    columns += [k for k in (image_key, wrist_key) if k and features[k]["dtype"] == "image"]

    written, skipped, relabelled = 0, 0, 0
    tables: dict[Path, tuple] = {}  # data file -> (table, episode_index, frame_index)
    run_info = {"command": "world-env import-lerobot", "lerobot": str(root.resolve()), "fps": fps,
                "state_kind": kind, "rig": rig.to_dict() if rig is not None else None,
                "lerobot_info": ours.get("info")}
    with DatasetWriter(cfg.output_dir, info=run_info) as writer:
        for ep in episodes:
            index = int(ep["episode_index"])
            key = ep.get(_META + "key") or f"lerobot/{index}"
            if writer.has(key):
                skipped += 1
                continue
            data_file = root / info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                        file_index=ep["data/file_index"])
            if data_file not in tables:
                if not data_file.is_file():
                    raise LeRobotFormatError(f"{data_file}: missing (listed in meta/episodes)")
                tables.clear()  # episodes come file by file: keep one table in memory
                table = pq.read_table(data_file, columns=columns)
                tables[data_file] = (table, _numpy(table["episode_index"], ()), _numpy(table["frame_index"], ()))
            table, episode_of_row, frame_of_row = tables[data_file]
            rows = np.flatnonzero(episode_of_row == index)
            rows = rows[np.argsort(frame_of_row[rows], kind="stable")]
            n = len(rows)
            where = f"{data_file} episode {index}"
            if n == 0 or n != int(ep["length"]):
                raise LeRobotFormatError(f"{where}: {n} rows, meta/episodes says length {ep['length']}")
            part = table.take(rows)
            raw_state = _numpy(part[cfg.state_key], (state_dim,)).astype(np.float32)
            joints = _numpy(part[JOINTS_KEY], (7,)).astype(np.float32) if JOINTS_KEY in part.column_names else None
            states, joints = states_of.convert(raw_state, joints if kind == "eef" else None, where)
            actions = _numpy(part[ACTION_KEY], (7,)).astype(np.float32)[:-1]
            if SUCCESS_KEY in part.column_names:
                labels = _numpy(part[SUCCESS_KEY], ()).astype(np.uint8).reshape(n)
                monotone = np.maximum.accumulate(labels)
                relabelled += int((monotone != labels).any())
                labels = monotone
            else:
                labels = np.zeros(n, np.uint8)

            def images(key: str) -> np.ndarray:
                if features[key]["dtype"] == "image":
                    return _decode_images(part[key].to_pylist())
                path = root / video_path.format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                                file_index=ep[f"videos/{key}/file_index"])
                return _read_video(path, float(ep[f"videos/{key}/from_timestamp"]), n, fps)

            frames = images(image_key)
            wrist = images(wrist_key) if wrist_key else None
            depth = None
            if depth_key:
                depth = _numpy(part[depth_key], tuple(features[depth_key]["shape"])).astype(np.float32)
            camera = json.loads(ep[_META + "camera"]) if ep.get(_META + "camera") else {}
            if not camera and rig is not None:
                camera = rig.camera.resized(*frames.shape[1:3]).to_dict()
            if cfg.resolution and frames.shape[1:3] != (cfg.resolution, cfg.resolution):
                frames = _resize(frames, cfg.resolution, "rgb")
                wrist = _resize(wrist, cfg.resolution, "rgb") if wrist is not None else None
                depth = _resize(depth, cfg.resolution, "depth") if depth is not None else None
                if camera:
                    from world_env_common.camera import CameraModel

                    camera = CameraModel.from_dict(camera).resized(cfg.resolution, cfg.resolution).to_dict()
            tasks_of_episode = ep.get("tasks") or []
            task_index = int(_numpy(part["task_index"], ())[0])
            instruction = tasks_of_episode[0] if tasks_of_episode else task_text.get(task_index, "")
            if not instruction:
                raise LeRobotFormatError(f"{where}: no task text (our format needs an instruction)")
            writer.append(Episode(
                frames=frames, actions=actions, states=states, joint_positions=joints, success=labels,
                instruction=instruction, suite=ep.get(_META + "suite") or cfg.suite,
                task_id=int(ep[_META + "task_id"]) if ep.get(_META + "task_id") is not None else task_index,
                init_state_id=int(ep[_META + "init_state_id"]) if ep.get(_META + "init_state_id") is not None else -1,
                camera=camera, source=ep.get(_META + "source") or "lerobot",
                seed=int(ep[_META + "seed"]) if ep.get(_META + "seed") is not None else index,
                wrist_frames=wrist, depth=depth), key=key)
            written += 1
    return {"episodes": written, "skipped_existing": skipped, "labels_made_monotone": relabelled,
            "fps": fps, "state_kind": kind, "image_key": image_key, "wrist_key": wrist_key}


def export_lerobot(cfg: ExportLeRobotConfig) -> dict:
    """Write our dataset ``cfg.dataset`` as a LeRobotDataset v3 folder at ``cfg.output_dir``."""
    from world_env_common.rig import Rig
    from world_env_training.data.dataset import Dataset

    dataset = Dataset(cfg.dataset)
    rig = Rig.load(cfg.rig_file) if cfg.rig_file else None
    extras = 0
    info = {"command": "world-env export-lerobot", "dataset": str(Path(cfg.dataset).resolve()),
            "dataset_info": dataset.info}
    with LeRobotWriter(cfg.output_dir, fps=cfg.fps, video_codec=cfg.video_codec, rig=rig, info=info,
                       robot_type=cfg.robot_type) as writer:
        for i in range(len(dataset)):
            episode = dataset[i]
            extras += len(episode.extras)
            writer.append(episode, key=dataset.entry(i)["key"])
        frames = writer.frames_total
    return {"episodes": len(dataset), "frames": frames, "extras_not_exported": extras}


def run_export(cfg: ExportLeRobotConfig) -> int:
    from world_env_common.rig import RigError
    from world_env_training.data.dataset import DatasetError

    try:
        result = export_lerobot(cfg)
    except (DatasetError, RigError, FileExistsError, ValueError) as err:
        print(f"world-env export-lerobot: {err}", file=sys.stderr)
        return 2
    note = f"; {result['extras_not_exported']} extras arrays not exported" if result["extras_not_exported"] else ""
    print(f"export-lerobot: {result['episodes']} episodes, {result['frames']} frames written to {cfg.output_dir} "
          f"(LeRobotDataset {CODEBASE_VERSION}, {cfg.video_codec}, {cfg.fps} fps{note})")
    return 0


def run_import(cfg: ImportLeRobotConfig) -> int:
    from world_env_common.rig import RigError
    from world_env_training.data.dataset import DatasetError

    try:
        result = import_lerobot(cfg)
    except (LeRobotFormatError, DatasetError, RigError, ValueError) as err:
        print(f"world-env import-lerobot: {err}", file=sys.stderr)
        return 2
    print(f"import-lerobot: {result['episodes']} episodes written to {cfg.output_dir} "
          f"({result['skipped_existing']} already there, {result['labels_made_monotone']} with labels made "
          f"monotone; state {result['state_kind']}, camera {result['image_key']}, {result['fps']} fps)")
    return 0
