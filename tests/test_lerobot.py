"""LeRobotDataset v3 import/export (issue 16): round trips, foreign layouts (joint-space state,
other camera names), bags straight to LeRobot, and training from an imported dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from world_env_common.camera import CameraModel, look_at
from world_env_common.rig import Rig
from world_env_common.robot import PandaModel
from world_env_training.configs import ExportLeRobotConfig, ImportLeRobotConfig
from world_env_training.data.dataset import Dataset, DatasetWriter, Episode
from world_env_training.data.lerobot_format import (
    LeRobotFormatError, export_lerobot, import_lerobot, run_export, run_import,
)

BASE = (-0.6, 0.0, 0.0)
Q0 = np.array([0.0, -0.16, 0.0, -2.44, 0.0, 2.23, 0.79])
INSTRUCTIONS = ("put the bowl on the plate", "open the top drawer")
# Stated tolerance of the lossy presets (DATASET.md): PSNR of each decoded 32x32 episode against
# ours. Measured on these frames: h264 28.75-35.09 dB, av1 28.39-33.51 dB (the lossless preset
# is bit-exact). A sharp-edged red square in 32x32 frames is the hard case for 4:2:0 chroma.
MIN_PSNR_DB = {"h264": 28.0, "av1": 27.5}


def _camera(size: int) -> CameraModel:
    return CameraModel.from_fovy(45.0, size, size, look_at((0.6, 0.0, 1.4), (-0.1, 0.0, 0.9)))


def _frames(n: int, h: int, w: int, phase: int) -> np.ndarray:
    """Rendered-looking frames: a smooth background and a square moving across it."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        image = np.stack([x * 200.0 / w + 20, y * 200.0 / h + 20, np.full((h, w), 90.0 + 10 * phase)], -1)
        a = (2 * t + 3 * phase) % (w // 2)
        image[h // 4:h // 4 + h // 4, a:a + w // 4] = (230, 40, 40)
        out[t] = image.astype(np.uint8)
    return out


def _write_ours(path: Path, episodes: int = 3, steps: int = 6, size: int = 32, wrist: bool = True,
                depth: bool = True) -> None:
    robot = PandaModel(np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    rng = np.random.default_rng(0)
    with DatasetWriter(path, info={"command": "test"}) as writer:
        for e in range(episodes):
            n = steps + e  # different lengths: episode boundaries matter
            joints = np.stack([Q0 + 0.02 * np.sin(0.5 * t + e) for t in range(n + 1)])
            width = 0.08 - 0.005 * np.arange(n + 1)
            states = np.stack([robot.state_from_joints(q, [w / 2, -w / 2]) for q, w in zip(joints, width)])
            success = np.zeros(n + 1, np.uint8)
            if e % 2:
                success[n - 1:] = 1
            actions = rng.uniform(-0.5, 0.5, (n, 7)).astype(np.float32)
            actions[:, 6] = np.where(np.arange(n) < n // 2, -1.0, 1.0)
            d = None
            if depth:
                d = np.linspace(0.5, 2.0, size * size, dtype=np.float32).reshape(size, size) + 0.01 * e
                d = np.repeat(d[None], n + 1, 0)
                d[:, :2, :2] = 0.0  # no reading
            writer.append(Episode(
                frames=_frames(n + 1, size, size, e), actions=actions, states=states.astype(np.float32),
                joint_positions=joints.astype(np.float32), success=success, instruction=INSTRUCTIONS[e % 2],
                suite="libero_goal", task_id=e % 2, init_state_id=e, camera=_camera(size).to_dict(),
                source="expert" if e < 2 else "exploration", seed=10 + e,
                wrist_frames=_frames(n + 1, 16, 24, e + 5) if wrist else None, depth=d))


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lerobot") / "ours"
    _write_ours(path)
    return path


def _export(ours: Path, out: Path, **kw) -> Path:
    export_lerobot(ExportLeRobotConfig(dataset=str(ours), output_dir=str(out), **kw))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_lossless_round_trip_gives_back_the_same_dataset(ours, tmp_path):
    lr = _export(ours, tmp_path / "lr", video_codec="lossless", fps=10)
    info = json.loads((lr / "meta/info.json").read_text())
    a = Dataset(ours)
    lengths = [a.entry(i)["length"] + 1 for i in range(len(a))]
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(lengths), 2)
    assert info["features"]["observation.images.agentview"]["shape"] == [32, 32, 3]
    assert info["features"]["observation.images.wrist"]["shape"] == [16, 24, 3]
    assert info["features"]["observation.depth"]["shape"] == [32, 32]
    # Frame rows: one per observation, episodes one after another, timestamps on the fps grid.
    rows = pq.read_table(lr / "data/chunk-000/file-000.parquet")
    assert rows.num_rows == sum(lengths)
    assert rows["episode_index"].to_pylist() == [e for e, n in enumerate(lengths) for _ in range(n)]
    assert rows["index"].to_pylist() == list(range(sum(lengths)))
    np.testing.assert_allclose(rows["timestamp"].to_numpy()[:lengths[0]], np.arange(lengths[0]) / 10, atol=1e-6)
    episodes = pq.read_table(lr / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["dataset_to_index"] - e["dataset_from_index"] for e in episodes] == lengths
    assert [e["tasks"] for e in episodes] == [[INSTRUCTIONS[i % 2]] for i in range(3)]
    stats = json.loads((lr / "meta/stats.json").read_text())
    all_states = np.concatenate([a[i].states for i in range(len(a))])
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_states.mean(0), rtol=1e-5, atol=1e-6)

    assert run_import(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "back"))) == 0
    b = Dataset(tmp_path / "back")
    assert len(b) == len(a) and b.info["fps"] == 10
    for i in range(len(a)):
        x, y = a[i], b[i]
        for name in ("states", "actions", "joint_positions", "success", "frames", "wrist_frames", "depth"):
            np.testing.assert_array_equal(getattr(y, name), getattr(x, name), err_msg=name)
        for name in ("instruction", "suite", "task_id", "init_state_id", "camera", "source", "seed"):
            assert getattr(y, name) == getattr(x, name), name
        assert b.entry(i)["key"] == a.entry(i)["key"]
    # Importing again resumes: every episode is already there.
    result = import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "back")))
    assert (result["episodes"], result["skipped_existing"]) == (0, 3)


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_lossy_round_trip_keeps_everything_but_frames_exact(ours, tmp_path, codec):
    lr = _export(ours, tmp_path / "lr", video_codec=codec)
    info = json.loads((lr / "meta/info.json").read_text())
    assert info["features"]["observation.images.agentview"]["info"]["video.codec"] == codec
    import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "back")))
    a, b = Dataset(ours), Dataset(tmp_path / "back")
    for i in range(len(a)):
        x, y = a[i], b[i]
        for name in ("states", "actions", "joint_positions", "success", "depth"):
            np.testing.assert_array_equal(getattr(y, name), getattr(x, name), err_msg=name)
        assert y.frames.shape == x.frames.shape and y.wrist_frames.shape == x.wrist_frames.shape
        assert _psnr(y.frames, x.frames) >= MIN_PSNR_DB[codec], _psnr(y.frames, x.frames)


def test_export_refuses_a_used_folder_and_mixed_frame_sizes(ours, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    assert run_export(ExportLeRobotConfig(dataset=str(ours), output_dir=str(tmp_path / "used"))) == 2
    mixed = tmp_path / "mixed"
    shutil.copytree(ours, mixed)
    with DatasetWriter(mixed) as writer:
        writer.append(Episode(frames=np.zeros((2, 16, 16, 3), np.uint8), actions=np.zeros((1, 7), np.float32),
                              states=np.zeros((2, 7), np.float32), joint_positions=np.zeros((2, 7), np.float32),
                              success=np.zeros(2, np.uint8), instruction="x", suite="s", task_id=0,
                              init_state_id=0, camera={}, source="expert", seed=0), key="small")
    with pytest.raises(ValueError, match="one shape per feature"):
        export_lerobot(ExportLeRobotConfig(dataset=str(mixed), output_dir=str(tmp_path / "out")))
    odd = tmp_path / "odd"
    _write_ours(odd, episodes=1, size=15, wrist=False, depth=False)
    with pytest.raises(ValueError, match="odd height or width"):
        export_lerobot(ExportLeRobotConfig(dataset=str(odd), output_dir=str(tmp_path / "odd_h264")))
    export_lerobot(ExportLeRobotConfig(dataset=str(odd), output_dir=str(tmp_path / "odd_rgb"), video_codec="lossless"))
    import_lerobot(ImportLeRobotConfig(input_dir=str(tmp_path / "odd_rgb"), output_dir=str(tmp_path / "odd_back")))
    np.testing.assert_array_equal(Dataset(tmp_path / "odd_back")[0].frames, Dataset(odd)[0].frames)


def _foreign(src: Path, dst: Path, state: str = "joints9", rename: dict | None = None, keep_rig: bool = False,
             state_key: str = "observation.state") -> Path:
    """A copy of an export that looks like someone else's LeRobot dataset: none of our metadata
    (but the rig with ``keep_rig``), cameras renamed, and observation.state replaced by joint
    positions (+ gripper) under ``state_key``."""
    rename = rename or {}
    shutil.copytree(src, dst)
    info = json.loads((dst / "meta/info.json").read_text())
    ours = info.pop("world_env")
    if keep_rig:
        info["world_env"] = {"rig": ours["rig"]}
    info["features"] = {rename.get(k, k): v for k, v in info["features"].items()}
    for old, new in rename.items():
        (dst / "videos" / old).rename(dst / "videos" / new)
    episodes = pq.read_table(dst / "meta/episodes/chunk-000/file-000.parquet")
    keep = [c for c in episodes.column_names if not c.startswith("world_env/")]
    episodes = episodes.select(keep).rename_columns(
        [next((c.replace(f"videos/{o}/", f"videos/{n}/") for o, n in rename.items() if c.startswith(f"videos/{o}/")), c)
         for c in keep])
    pq.write_table(episodes, dst / "meta/episodes/chunk-000/file-000.parquet")
    data_file = dst / "data/chunk-000/file-000.parquet"
    data = pq.read_table(data_file)
    q = np.stack(data["observation.joint_positions"].to_numpy(zero_copy_only=False))
    width = np.stack(data["observation.state"].to_numpy(zero_copy_only=False))[:, 6]
    if state == "eef":  # keep our end-effector state, drop the joints
        data = data.drop_columns(["observation.joint_positions"])
        pq.write_table(data, data_file)
        info["features"].pop("observation.joint_positions")
        (dst / "meta/info.json").write_text(json.dumps(info))
        return dst
    values = {"joints9": np.c_[q, width / 2, -width / 2], "joints8": np.c_[q, width], "joints7": q}[state]
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(np.float32)), values.shape[1])
    data = data.set_column(data.column_names.index("observation.state"), state_key, column)
    data = data.drop_columns(["observation.joint_positions"])
    pq.write_table(data, data_file)
    info["features"].pop("observation.joint_positions")
    info["features"][state_key] = dict(info["features"].pop("observation.state"), shape=[values.shape[1]],
                                       names=[f"joint{i}" for i in range(values.shape[1])])
    (dst / "meta/info.json").write_text(json.dumps(info))
    return dst


@pytest.mark.parametrize("state", ["joints9", "joints8"])
def test_joint_space_dataset_gets_fk_states_from_the_rig(ours, tmp_path, state):
    foreign = _foreign(_export(ours, tmp_path / "lr", video_codec="lossless"), tmp_path / "foreign", state)
    out = tmp_path / "back"
    with pytest.raises(LeRobotFormatError, match="rig_file"):
        import_lerobot(ImportLeRobotConfig(input_dir=str(foreign), output_dir=str(out)))
    rig = Rig(_camera(64), np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    rig.save(tmp_path / "rig.yaml")
    result = import_lerobot(ImportLeRobotConfig(input_dir=str(foreign), output_dir=str(out),
                                                rig_file=str(tmp_path / "rig.yaml"), suite="my_arm"))
    assert result["state_kind"] == "joints"  # told by the state's names
    a, b = Dataset(ours), Dataset(out)
    for i in range(len(a)):
        x, y = a[i], b[i]
        np.testing.assert_allclose(y.states, x.states, atol=2e-6)
        np.testing.assert_array_equal(y.joint_positions, x.joint_positions)
        np.testing.assert_array_equal(y.frames, x.frames)
        assert (y.suite, y.task_id, y.source, y.init_state_id) == ("my_arm", i % 2, "lerobot", -1)
        assert y.camera == _camera(32).to_dict() == rig.camera.resized(32, 32).to_dict()


def test_a_rig_given_at_export_travels_with_the_dataset(ours, tmp_path):
    rig = Rig(_camera(64), np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    rig.save(tmp_path / "rig.yaml")
    lr = _export(ours, tmp_path / "lr", video_codec="lossless", rig_file=str(tmp_path / "rig.yaml"),
                 robot_type="franka_panda")
    info = json.loads((lr / "meta/info.json").read_text())
    assert info["world_env"]["rig"] == rig.to_dict() and info["robot_type"] == "franka_panda"
    foreign = _foreign(lr, tmp_path / "foreign", "joints9", keep_rig=True, state_key="observation.arm")
    with pytest.raises(LeRobotFormatError, match="no 'observation.state' feature"):
        import_lerobot(ImportLeRobotConfig(input_dir=str(foreign), output_dir=str(tmp_path / "back")))
    import_lerobot(ImportLeRobotConfig(input_dir=str(foreign), output_dir=str(tmp_path / "back"),
                                       state_key="observation.arm"))  # no rig_file: the one in info.json
    back = Dataset(tmp_path / "back")
    assert back.info["rig"] == rig.to_dict()
    for i, x in enumerate(Dataset(ours)):
        np.testing.assert_allclose(back[i].states, x.states, atol=2e-6)


def test_missing_joint_positions_are_solved_by_ik_given_a_rig(ours, tmp_path):
    foreign = _foreign(_export(ours, tmp_path / "lr", video_codec="lossless"), tmp_path / "foreign", "eef")
    cfg = dict(input_dir=str(foreign), output_dir=str(tmp_path / "back"), state_kind="eef")
    with pytest.raises(LeRobotFormatError, match="no observation.joint_positions.*rig_file"):
        import_lerobot(ImportLeRobotConfig(**cfg))
    assert not (tmp_path / "back").exists()  # refused before anything is written
    rig = Rig(_camera(64), np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    rig.save(tmp_path / "rig.yaml")
    import_lerobot(ImportLeRobotConfig(rig_file=str(tmp_path / "rig.yaml"), **cfg))
    robot = PandaModel(np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    for x, y in zip(Dataset(ours), Dataset(tmp_path / "back")):
        np.testing.assert_array_equal(y.states, x.states)
        reached = np.stack([robot.fk(q.astype(float))[0] for q in y.joint_positions])
        np.testing.assert_allclose(reached, x.states[:, :3], atol=2e-3)  # IK's position tolerance


def test_incomplete_joint_state_and_ambiguous_state_fail_naming_what_is_missing(ours, tmp_path):
    lr = _export(ours, tmp_path / "lr", video_codec="lossless")
    foreign = _foreign(lr, tmp_path / "foreign", "joints7")
    with pytest.raises(LeRobotFormatError, match="gripper opening is missing"):
        import_lerobot(ImportLeRobotConfig(input_dir=str(foreign), output_dir=str(tmp_path / "a")))
    info = json.loads((lr / "meta/info.json").read_text())
    info.pop("world_env")
    info["features"]["observation.state"]["names"] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]
    (lr / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match="state_kind"):
        import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "b")))
    result = import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "b"), state_kind="eef"))
    assert result["episodes"] == 3
    np.testing.assert_array_equal(Dataset(tmp_path / "b")[0].states, Dataset(ours)[0].states)
    with pytest.raises(LeRobotFormatError, match="codebase_version"):
        info["codebase_version"] = "v2.1"
        (lr / "meta/info.json").write_text(json.dumps(info))
        import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "c")))


def test_camera_keys_and_resolution_options(ours, tmp_path):
    lr = _export(ours, tmp_path / "lr", video_codec="lossless")
    names = {"observation.images.agentview": "observation.images.image",
             "observation.images.wrist": "observation.images.wrist_image"}
    foreign = _foreign(lr, tmp_path / "foreign", "joints9", rename=names)
    rig = Rig(_camera(64), np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    rig.save(tmp_path / "rig.yaml")
    base = dict(input_dir=str(foreign), rig_file=str(tmp_path / "rig.yaml"))
    with pytest.raises(LeRobotFormatError, match="image_key"):  # two cameras, neither ours by name
        import_lerobot(ImportLeRobotConfig(output_dir=str(tmp_path / "a"), **base))
    import_lerobot(ImportLeRobotConfig(output_dir=str(tmp_path / "a"), image_key="observation.images.image",
                                       wrist_key="observation.images.wrist_image", **base))
    import_lerobot(ImportLeRobotConfig(output_dir=str(tmp_path / "b"), image_key="observation.images.image",
                                       resolution=16, **base))
    a, full, small = Dataset(ours)[1], Dataset(tmp_path / "a")[1], Dataset(tmp_path / "b")[1]
    np.testing.assert_array_equal(full.frames, a.frames)
    np.testing.assert_array_equal(full.wrist_frames, a.wrist_frames)
    assert small.wrist_frames is None and small.frames.shape[1:] == (16, 16, 3)
    assert small.depth.shape[1:] == (16, 16) and small.camera == _camera(32).resized(16, 16).to_dict()
    with pytest.raises(LeRobotFormatError, match="not a camera feature"):
        import_lerobot(ImportLeRobotConfig(output_dir=str(tmp_path / "c"), image_key="observation.images.nope", **base))


# --- bags straight to LeRobot -----------------------------------------------------------------

def _write_bag(path: Path, steps: int = 12, rate_hz: float = 10.0) -> None:
    """A recorded run as bag_recorder_node writes it: camera, joint states, arm and gripper
    commands, the instruction and task success, at ``rate_hz``."""
    from world_env_bringup.recording import BagRecorder

    store = __import__("world_env_bringup.recording", fromlist=["typestore"]).typestore()
    T = store.types
    robot = PandaModel(np.array(BASE), np.array([1.0, 0.0, 0.0, 0.0]))
    header = lambda t: T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](  # noqa: E731
        sec=int(t), nanosec=int((t % 1) * 1e9)), frame_id="")
    topics = {"/camera/image_raw": "sensor_msgs/msg/Image", "/joint_states": "sensor_msgs/msg/JointState",
              "/arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
              "/gripper_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
              "/task/instruction": "std_msgs/msg/String", "/task/success": "std_msgs/msg/Bool"}
    bag = BagRecorder(path)
    for topic, msgtype in topics.items():
        bag.add_topic(topic, msgtype)

    def write(topic, msg, t):
        bag.write(topic, store.serialize_cdr(msg, topics[topic]), int(t * 1e9))

    write("/task/instruction", T["std_msgs/msg/String"](data=INSTRUCTIONS[0]), 0.05)
    frames = _frames(steps + 2, 64, 64, 0)
    for k in range(steps + 2):
        t = 1.0 + k / rate_hz
        q = Q0 + 0.03 * np.sin(0.4 * k)
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"]
        duration = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
        write("/joint_states", T["sensor_msgs/msg/JointState"](
            header=header(t), name=list(robot.joint_names) + list(robot.finger_joint_names),
            position=np.r_[q, 0.04, -0.04], velocity=np.zeros(0), effort=np.zeros(0)), t)
        write("/camera/image_raw", T["sensor_msgs/msg/Image"](
            header=header(t + 0.001), height=64, width=64, encoding="rgb8", is_bigendian=0, step=64 * 3,
            data=frames[k].reshape(-1)), t + 0.001)
        if k <= steps:
            target = Q0 + 0.03 * np.sin(0.4 * (k + 1))
            write("/arm_controller/joint_trajectory", T["trajectory_msgs/msg/JointTrajectory"](
                header=header(t + 0.002), joint_names=list(robot.joint_names),
                points=[point(positions=target, velocities=np.zeros(0), accelerations=np.zeros(0),
                              effort=np.zeros(0), time_from_start=duration)]), t + 0.002)
            write("/gripper_controller/joint_trajectory", T["trajectory_msgs/msg/JointTrajectory"](
                header=header(t + 0.002), joint_names=list(robot.finger_joint_names),
                points=[point(positions=np.array([0.04, -0.04]), velocities=np.zeros(0),
                              accelerations=np.zeros(0), effort=np.zeros(0), time_from_start=duration)]), t + 0.002)
        write("/task/success", T["std_msgs/msg/Bool"](data=k >= steps - 2), t + 0.003)
    bag.close()


def test_bag_to_dataset_writes_lerobot_directly(tmp_path):
    from world_env_training.data.bag_dataset import run
    from world_env_training.configs import BagToDatasetConfig

    _write_bag(tmp_path / "bag")
    common = dict(bag=str(tmp_path / "bag"), base_position=list(BASE))
    assert run(BagToDatasetConfig(output_dir=str(tmp_path / "ours"), **common)) == 0
    assert run(BagToDatasetConfig(output_dir=str(tmp_path / "lr"), format="lerobot", video_codec="lossless",
                                  **common)) == 0
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["fps"] == 10 and info["world_env"]["info"]["source"] == "recorded"  # the camera's rate
    assert run(BagToDatasetConfig(output_dir=str(tmp_path / "lr"), format="lerobot", **common)) == 2  # exists
    assert run(BagToDatasetConfig(output_dir=str(tmp_path / "lr5"), format="lerobot", fps=5, **common)) == 0
    assert json.loads((tmp_path / "lr5/meta/info.json").read_text())["fps"] == 5
    import_lerobot(ImportLeRobotConfig(input_dir=str(tmp_path / "lr"), output_dir=str(tmp_path / "back")))
    a, b = Dataset(tmp_path / "ours"), Dataset(tmp_path / "back")
    assert len(a) == len(b) == 1
    x, y = a[0], b[0]
    assert x.length >= 10 and x.success[-1] == 1 and x.success[0] == 0
    for name in ("frames", "states", "actions", "joint_positions", "success"):
        np.testing.assert_array_equal(getattr(y, name), getattr(x, name), err_msg=name)
    assert (y.instruction, y.source) == (INSTRUCTIONS[0], "recorded")


# --- training from an imported dataset ----------------------------------------------------------

@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """Our 64x64 dataset through LeRobot (h264, as a user would share it) and back."""
    root = tmp_path_factory.mktemp("imported")
    _write_ours(root / "ours", episodes=4, steps=8, size=64, wrist=False, depth=False)
    _export(root / "ours", root / "lr", video_codec="h264")
    import_lerobot(ImportLeRobotConfig(input_dir=str(root / "lr"), output_dir=str(root / "back")))
    return root / "back"


def test_sft_trains_from_an_imported_dataset(imported, tmp_path, one_thread):
    from world_env_training.configs import TrainSFTConfig
    from world_env_training.train.train_sft import run
    from world_env_training.models.vla import VLAConfig

    tiny = {k: v for k, v in VLAConfig.tiny().to_dict().items()
            if k not in ("vision_encoder", "llm", "lora_rank", "chunk_size")}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(tiny))
    cfg = TrainSFTConfig(demos=str(imported), output_dir=str(tmp_path / "sft"), vision_encoder="tiny_cnn",
                         llm="tiny_llama", lora_rank=4, chunk_size=4, policy_config=str(tmp_path / "policy.yaml"),
                         steps=3, batch_size=4, warmup_steps=1, save_every=3, log_every=1)
    assert run(cfg) == 0
    assert (tmp_path / "sft" / "checkpoints" / "step_0000003").is_dir()


def test_world_model_trains_from_an_imported_dataset(imported, tmp_path, one_thread):
    from test_world_model import TINY_64

    from world_env_training.configs import TrainWorldModelConfig
    from world_env_training.train.train_world_model import run

    (tmp_path / "model.yaml").write_text(yaml.safe_dump(TINY_64))
    cfg = TrainWorldModelConfig(demos=str(imported), exploration="", output_dir=str(tmp_path / "wm"),
                                model_config=str(tmp_path / "model.yaml"), memory_frames=2, steps=3,
                                batch_size=2, save_every=3, log_every=1, holdout_per_task=0)
    assert run(cfg) == 0
    assert (tmp_path / "wm" / "checkpoints" / "step_0000003").is_dir()


def test_reflector_trains_from_an_imported_dataset(imported, tmp_path, one_thread):
    from world_env_training.configs import TrainReflectorConfig
    from world_env_training.train.train_reflector import run

    (tmp_path / "reflector.yaml").write_text("image_size: 32\nvision_grid: 2\nhead_hidden_dim: 32\n")
    cfg = TrainReflectorConfig(demos=str(imported), exploration="", output_dir=str(tmp_path / "reflector"),
                               vision_encoder="tiny_cnn", llm="tiny_llama", llm_layers=0, num_frames=3,
                               reflector_config=str(tmp_path / "reflector.yaml"), steps=3, batch_size=4,
                               warmup_steps=1, save_every=3, eval_every=3, log_every=1)
    assert run(cfg) == 0
    assert (tmp_path / "reflector" / "checkpoints" / "step_0000003").is_dir()


def test_episodes_spread_over_several_files_and_chunks_read_back(ours, tmp_path):
    from world_env_training.data.lerobot_format import LeRobotWriter

    a = Dataset(ours)
    # Limits of 0 MB start a new parquet and mp4 file after every episode; 2 files per chunk.
    with LeRobotWriter(tmp_path / "lr", fps=20, video_codec="lossless", chunks_size=2, data_file_mb=0,
                       video_file_mb=0) as writer:
        for i in range(len(a)):
            writer.append(a[i], key=a.entry(i)["key"])
    files = sorted(str(p.relative_to(tmp_path / "lr")) for p in (tmp_path / "lr").rglob("file-*.*"))
    assert [f for f in files if f.startswith("data/")] == [
        "data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet", "data/chunk-001/file-000.parquet"]
    assert "videos/observation.images.wrist/chunk-001/file-000.mp4" in files
    import_lerobot(ImportLeRobotConfig(input_dir=str(tmp_path / "lr"), output_dir=str(tmp_path / "back")))
    for x, y in zip(a, Dataset(tmp_path / "back")):
        np.testing.assert_array_equal(y.frames, x.frames)
        np.testing.assert_array_equal(y.wrist_frames, x.wrist_frames)
        np.testing.assert_array_equal(y.states, x.states)


def test_image_features_stored_in_the_parquet_are_read(ours, tmp_path):
    """LeRobot also stores cameras as PNG bytes in the parquet (dtype image) instead of video."""
    import io

    from PIL import Image

    lr = _export(ours, tmp_path / "lr", video_codec="lossless")
    key = "observation.images.agentview"
    a = Dataset(ours)
    frames = np.concatenate([a[i].frames for i in range(len(a))])
    pngs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    data_file = lr / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(data_file).append_column(key, pa.array(pngs)), data_file)
    shutil.rmtree(lr / "videos" / key)
    info = json.loads((lr / "meta/info.json").read_text())
    info["features"][key] = {"dtype": "image", "shape": [32, 32, 3], "names": ["height", "width", "channels"]}
    (lr / "meta/info.json").write_text(json.dumps(info))
    episodes = pq.read_table(lr / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(episodes.drop_columns([c for c in episodes.column_names if c.startswith(f"videos/{key}/")]),
                   lr / "meta/episodes/chunk-000/file-000.parquet")
    import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "back")))
    for x, y in zip(a, Dataset(tmp_path / "back")):
        np.testing.assert_array_equal(y.frames, x.frames)
        np.testing.assert_array_equal(y.wrist_frames, x.wrist_frames)


def test_labels_are_made_monotone_or_zero_when_absent(ours, tmp_path):
    lr = _export(ours, tmp_path / "lr", video_codec="lossless")
    data_file = lr / "data/chunk-000/file-000.parquet"
    data = pq.read_table(data_file)
    labels = np.array(data["success"].to_pylist())
    labels[1] = True  # episode 0: 0 1 0 0 ... (a flicker)
    data = data.set_column(data.column_names.index("success"), "success", pa.array(labels))
    pq.write_table(data, data_file)
    result = import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "a")))
    assert result["labels_made_monotone"] == 1
    assert Dataset(tmp_path / "a")[0].success.tolist() == [0] + [1] * (len(Dataset(ours)[0].success) - 1)
    pq.write_table(data.drop_columns(["success"]), data_file)
    info = json.loads((lr / "meta/info.json").read_text())
    info["features"].pop("success")
    (lr / "meta/info.json").write_text(json.dumps(info))
    import_lerobot(ImportLeRobotConfig(input_dir=str(lr), output_dir=str(tmp_path / "b")))
    assert not any(episode.success.any() for episode in Dataset(tmp_path / "b"))
