"""``world-env bag-to-dataset``: a recorded robot run (rosbag2, MCAP or sqlite3) -> training dataset.

So that demonstrations recorded on hardware (teleoperation, or a policy run) feed SFT, the world
model and the reflector like LIBERO's. Read with ``rosbags``; the topics are those
``bag_recorder_node`` records (camera image, joint states, arm and gripper commands, instruction,
optionally task success).

Episodes: every instruction message starts one (a repeated latch of the same text does not);
within it, a pause of more than ``split_gap_s`` in the arm commands starts another. An
episode's observations are the camera frames from its first arm command to its last (each with
the newest joint state received before it); at least ``min_steps`` steps are kept.

Per frame t: the state from our forward kinematics of the joints (rig base pose), the frame
resized to ``resolution`` (square). Action t (between frames t and t+1): the LIBERO OSC_POSE
action that drives the arm from frame t's joints to the arm target commanded at frame t+1
(``world_env_libero.standin.osc_action``, the stand-in's own conversion: an exact inverse when
the controller reaches its targets), with the gripper from the newest gripper command (open -1
above half the opening, close +1). Record at the control rate (one frame per command) for
actions on LIBERO's scale. Success: the newest ``success_topic`` Bool (labels made monotone),
else 0.

The episodes go into our dataset format, or with ``format lerobot`` straight into a new
LeRobotDataset v3 folder (``lerobot_format.LeRobotWriter``) at ``fps`` (default: the camera
topic's median rate).
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from pathlib import Path

import numpy as np

from world_env_training.configs import BagToDatasetConfig


def _stamp_s(t_ns: int) -> float:
    return t_ns * 1e-9


def read_streams(cfg: BagToDatasetConfig) -> dict[str, list]:
    """{stream: [(receive time s, payload)]} of the bag's relevant topics, in time order."""
    from rosbags.rosbag2 import Reader

    from world_env_bringup.recording import typestore

    store = typestore()
    wanted = {cfg.camera_topic: "image", cfg.joint_states_topic: "joints", cfg.arm_command_topic: "arm",
              cfg.gripper_command_topic: "gripper", cfg.instruction_topic: "instruction"}
    if cfg.success_topic:
        wanted[cfg.success_topic] = "success"
    streams = {name: [] for name in wanted.values()}
    path = Path(cfg.bag)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    with Reader(path) as reader:
        present = {c.topic for c in reader.connections}
        missing = [t for t, name in wanted.items() if t not in present and name != "success"]
        if missing:
            raise ValueError(f"bag {path} lacks topic(s) {missing}; it has {sorted(present)}")
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, t_ns, raw in reader.messages(connections=connections):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            streams[wanted[connection.topic]].append((_stamp_s(t_ns), msg))
    return streams


def _rgb(msg) -> np.ndarray:
    channels = {"rgb8": (0, 1, 2), "bgr8": (2, 1, 0)}
    if msg.encoding not in channels:
        raise ValueError(f"camera encoding {msg.encoding!r}: only rgb8 and bgr8 are converted")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width * 3].reshape(msg.height, msg.width, 3)[..., list(channels[msg.encoding])].copy()


def _latest(times: list[float], items: list, t: float):
    i = bisect_right(times, t) - 1
    return items[i] if i >= 0 else None


def _camera_fps(times: list[float]) -> int:
    """The camera topic's rate (Hz): the median interval between frames, rounded to an integer
    as LeRobot stores it."""
    if len(times) < 2:
        raise ValueError("the camera topic has fewer than 2 frames: give the fps option")
    return max(1, int(round(1.0 / float(np.median(np.diff(times))))))


def convert(cfg: BagToDatasetConfig) -> dict:
    from PIL import Image as PILImage

    from world_env_common.rig import Rig
    from world_env_common.robot import PandaModel
    from world_env_common.trajectory import finger_width
    from world_env_libero.standin import osc_action
    from world_env_training.data.dataset import DatasetWriter, Episode

    rig = Rig.load(cfg.rig_file) if cfg.rig_file else None
    robot = (PandaModel(rig.base_position, rig.base_quat_wxyz) if rig is not None
             else PandaModel(np.array(cfg.base_position), np.array(cfg.base_quat_wxyz)))
    arm_names, finger_names = robot.joint_names, robot.finger_joint_names
    streams = read_streams(cfg)

    joints_t, joints = [], []
    for t, msg in streams["joints"]:
        index = {n: i for i, n in enumerate(msg.name)}
        if all(n in index for n in arm_names):
            fingers = ([msg.position[index[n]] for n in finger_names] if all(n in index for n in finger_names)
                       else None)
            joints_t.append(t)
            joints.append((np.array([msg.position[index[n]] for n in arm_names]), fingers))
    arm_t, arm = [], []
    for t, msg in streams["arm"]:
        index = {n: i for i, n in enumerate(msg.joint_names)}
        if msg.points and all(n in index for n in arm_names):
            arm_t.append(t)
            arm.append(np.array([msg.points[-1].positions[index[n]] for n in arm_names]))
    grip_t, grip = [], []
    for t, msg in streams["gripper"]:
        if msg.points:
            grip_t.append(t)
            grip.append(finger_width(list(msg.joint_names), list(msg.points[-1].positions), finger_names))
    success_t = [t for t, _ in streams.get("success", [])]
    success = [bool(m.data) for _, m in streams.get("success", [])]

    # Episode boundaries: instruction changes, and pauses in the commands.
    starts, texts, previous = [], [], None
    for t, msg in streams["instruction"]:
        text = cfg.instruction or msg.data.strip()
        if text and text != previous:
            starts.append(t)
            texts.append(text)
            previous = text
    if not starts:
        if not cfg.instruction:
            raise ValueError("no instruction in the bag; give the instruction option")
        starts, texts = [-np.inf], [cfg.instruction]
    segments = []
    for i, (start, text) in enumerate(zip(starts, texts)):
        end = starts[i + 1] if i + 1 < len(starts) else np.inf
        cmds = [t for t in arm_t if start <= t < end]
        run = []
        for t in cmds:
            if run and t - run[-1] > cfg.split_gap_s:
                segments.append((run[0], run[-1], text))
                run = []
            run.append(t)
        if run:
            segments.append((run[0], run[-1], text))

    images = streams["image"]
    image_t = [t for t, _ in images]
    written, skipped = 0, 0
    size = cfg.resolution
    info = {"source": "recorded", "bag": str(Path(cfg.bag).resolve())}
    if cfg.format == "lerobot":
        from world_env_training.data.lerobot_format import LeRobotWriter

        fps = cfg.fps or _camera_fps(image_t)
        sink = LeRobotWriter(cfg.output_dir, fps=fps, video_codec=cfg.video_codec, rig=rig, info=info)
    else:
        sink = DatasetWriter(cfg.output_dir, info=info)
    with sink as writer:
        for index, (t0, t1, text) in enumerate(segments):
            lo, hi = bisect_right(image_t, t0), bisect_right(image_t, t1 + cfg.split_gap_s)
            frames, states, qs, labels, times = [], [], [], [], []
            for t, msg in images[lo:hi]:
                joint = _latest(joints_t, joints, t)
                if joint is None:
                    continue
                q, fingers = joint
                if fingers is None:
                    width = _latest(grip_t, grip, t)
                    fingers = [0.5 * (width if width is not None else robot.gripper_open_width),
                               -0.5 * (width if width is not None else robot.gripper_open_width)]
                rgb = _rgb(msg)
                if rgb.shape[:2] != (size, size):
                    rgb = np.asarray(PILImage.fromarray(rgb).resize((size, size), PILImage.BILINEAR))
                frames.append(rgb)
                qs.append(q)
                states.append(robot.state_from_joints(q, fingers))
                ok = _latest(success_t, success, t)
                labels.append(bool(ok) or (bool(labels[-1]) if labels else False))
                times.append(t)
            if len(frames) < cfg.min_steps + 1:
                skipped += 1
                continue
            actions = []
            for k in range(len(frames) - 1):
                target = _latest(arm_t, arm, times[k + 1])
                width = _latest(grip_t, grip, times[k + 1])
                actions.append(osc_action(robot, qs[k], target, width if width is not None else float(states[k][6])))
            camera = rig.camera.resized(size, size).to_dict() if rig is not None else {}
            writer.append(Episode(frames=np.stack(frames), actions=np.array(actions, np.float32),
                                  states=np.array(states, np.float32), joint_positions=np.array(qs, np.float32),
                                  success=np.array(labels, np.uint8), instruction=text, suite=cfg.suite,
                                  task_id=cfg.task_id, init_state_id=-1, camera=camera, source="recorded",
                                  seed=index))
            written += 1
    return {"episodes": written, "skipped_short": skipped, "segments": len(segments), "frames": len(images)}


def run(cfg: BagToDatasetConfig) -> int:
    try:
        result = convert(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        print(f"world-env bag-to-dataset: {err}", file=sys.stderr)
        return 2
    print(f"bag-to-dataset: {result['episodes']} episodes written to {cfg.output_dir} "
          f"({result['segments']} command segments, {result['skipped_short']} too short, "
          f"{result['frames']} frames read)")
    return 0
