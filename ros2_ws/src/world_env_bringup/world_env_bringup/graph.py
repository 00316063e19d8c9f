"""The node graph of ``world_env.launch.py``, as data: which executables, with which parameters
and remappings, for ``mode:=imagined`` and ``mode:=real``.

The launch file turns these ``NodeSpec`` into ``launch_ros`` nodes; tests (``ros2 launch`` is not
installable from the registries here) start the same executables with ``NodeSpec.ros_args()``,
so both run one graph. ROS-free: importable without ``launch``.

imagined: world_simulator (the world model as camera and arm, sim time on /clock) + policy
    (sampling its chunks from the Laplace head for exploration) + reflector, on sim time, + the
    LOOP trainer, which runs the episodes (resets, enables the policy), learns from the chunks
    and rewards that flow through the graph, and hands each update's weights to the policy node
    (``train:=false``: no trainer; the simulator starts an episode itself and the policy is
    enabled, to watch a policy in imagination).
real: policy (starts disabled: enable it when the arm is ready) + reflector against the real
    camera and arm drivers' topics; no simulator. Commands are clamped to the joint limits and the
    workspace box of the parameter file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MODES = ("imagined", "real")

#: Launch arguments: name -> (default, description). Topic names are relative (they follow the
#: launch namespace); give absolute ones for drivers outside it.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "mode": ("imagined", "imagined (world simulator stands in for camera and arm) or real (the robot's drivers)"),
    "policy": ("runs/default/sft", "policy checkpoint: a train-sft / post-train run folder or a VLA model folder"),
    "reflector": ("runs/default/reflector", "Instant Reflector checkpoint (train-reflector run or model folder)"),
    "world_model": ("runs/default/world_model", "imagined: world-model checkpoint"),
    "start_dataset": ("runs/default/demos", "imagined: dataset whose first frames start imagined episodes"),
    "rig_file": ("", "imagined: rig YAML (camera + robot base); empty: taken from start_dataset"),
    "params_file": ("", "parameter file of the nodes; empty: the packaged params/<mode>.yaml"),
    "train": ("true", "imagined: run the LOOP trainer node (post-trains the policy from the graph's episodes)"),
    "loop_output_dir": ("runs/default/loop_ros", "imagined: the LOOP trainer's checkpoints and metrics"),
    "camera_topic": ("camera/image_raw", "camera Image topic (any size, bgr8/rgb8)"),
    "joint_states_topic": ("joint_states", "the arm's JointState topic"),
    "arm_command_topic": ("arm_controller/joint_trajectory", "arm joint_trajectory_controller command topic"),
    "gripper_command_topic": ("gripper_controller/joint_trajectory", "gripper command topic"),
    "instruction_topic": ("task/instruction", "task instruction (std_msgs/String; latched or not)"),
    "joint_names": ("", "the arm's 7 joint names as the driver publishes them, e.g. [joint1, ..., joint7]; "
                        "empty: panda_joint1..7"),
    "finger_joint_names": ("", "the gripper's 2 finger joint names, e.g. [finger_joint1, finger_joint2]; "
                               "empty: panda_finger_joint1..2"),
    "success_topic": ("", "real: a Bool task-success topic that ends episodes (e.g. task/success); empty: none"),
    "control_rate_hz": ("20.0", "policy commands per second (the simulator's steps in imagined mode)"),
    "use_sim_time": ("auto", "auto (true in imagined mode, false in real mode), true or false"),
    "device": ("cpu", "torch device of the models: cpu, cuda, cuda:N"),
}


def share_dir() -> Path:
    """The package's share folder (installed), or its source folder (tests before installing)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("world_env_bringup"))
    except Exception:  # noqa: BLE001 - not installed: the source tree
        return Path(__file__).resolve().parents[1]


@dataclass
class NodeSpec:
    package: str
    executable: str
    name: str
    params_file: Path
    params: dict = field(default_factory=dict)
    remaps: dict = field(default_factory=dict)

    def command(self) -> list[str]:
        """The installed executable (what ``ros2 run`` starts) with ``ros_args()``."""
        from ament_index_python.packages import get_package_prefix

        executable = Path(get_package_prefix(self.package)) / "lib" / self.package / self.executable
        if not executable.exists():
            raise FileNotFoundError(f"{executable} not found: build the workspace (scripts/build_ws.sh)")
        return [str(executable), *self.ros_args()]

    def ros_args(self) -> list[str]:
        """Command-line arguments that start the executable as the launch file would."""
        args = ["--ros-args", "-r", f"__node:={self.name}", "--params-file", str(self.params_file)]
        for key, value in self.params.items():
            args += ["-p", f"{key}:={_param_text(value)}"]
        for old, new in self.remaps.items():
            args += ["-r", f"{old}:={new}"]
        return args


def _param_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_text(v) for v in value) + "]"
    return str(value)


def _bool(text: str, name: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name}: expected true or false, got {text!r}")


def _names(text: str, name: str, count: int) -> list[str]:
    """A launch argument's joint names: ``[a, b, c]`` or ``a,b,c`` (an empty text: none)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    names = [part.strip().strip("'\"") for part in text.split(",")] if text.strip() else []
    if names and (len(names) != count or not all(names)):
        raise ValueError(f"{name}: expected {count} comma-separated joint names, got {names}")
    return names


def graph(**arguments: str) -> list[NodeSpec]:
    """The nodes of one mode; ``arguments`` are launch arguments (strings), defaults as above."""
    unknown = sorted(set(arguments) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; known: {sorted(LAUNCH_ARGUMENTS)}")
    a = {k: str(arguments.get(k, default)) for k, (default, _) in LAUNCH_ARGUMENTS.items()}
    mode = a["mode"]
    if mode not in MODES:
        raise ValueError(f"mode: expected imagined or real, got {mode!r}")
    imagined = mode == "imagined"
    sim_time = imagined if a["use_sim_time"] == "auto" else _bool(a["use_sim_time"], "use_sim_time")
    params_file = Path(a["params_file"]) if a["params_file"] else share_dir() / "params" / f"{mode}.yaml"
    if not params_file.is_file():
        raise ValueError(f"params_file: {params_file} does not exist")
    rate = float(a["control_rate_hz"])
    joints = {}
    for key, count in (("joint_names", 7), ("finger_joint_names", 2)):
        names = _names(a[key], key, count)
        if names:
            joints[key] = names
    topics = {"joint_states": a["joint_states_topic"], "arm_controller/joint_trajectory": a["arm_command_topic"],
              "gripper_controller/joint_trajectory": a["gripper_command_topic"]}
    nodes = []
    if imagined:
        sim_params = {"world_model": a["world_model"], "start_dataset": a["start_dataset"], "control_rate_hz": rate,
                      "device": a["device"], "use_sim_time": False, **joints}  # it is the clock
        if a["rig_file"]:
            sim_params["rig_file"] = a["rig_file"]
        nodes.append(NodeSpec("world_env_sim", "world_simulator_node", "world_simulator", params_file, sim_params,
                              {**topics, "camera/image_raw": a["camera_topic"],
                               "camera/camera_info": _info_topic(a["camera_topic"]),
                               "task/instruction": a["instruction_topic"]}))
    train = imagined and _bool(a["train"], "train")
    policy_params = {"checkpoint": a["policy"], "image_topic": a["camera_topic"], "control_rate_hz": rate,
                     "device": a["device"], "use_sim_time": sim_time, **joints}
    if train:  # the trainer runs the episodes: it enables the policy, which samples its chunks
        policy_params.update(sample=True, enabled=False)
        nodes[0].params["autostart"] = False
    if a["success_topic"]:
        policy_params["success_topic"] = a["success_topic"]
    nodes.append(NodeSpec("world_env_policy", "policy_node", "policy", params_file, policy_params,
                          {**topics, "instruction": a["instruction_topic"]}))
    nodes.append(NodeSpec("world_env_reflector", "reflector_node", "reflector", params_file,
                          {"checkpoint": a["reflector"], "image_topic": a["camera_topic"], "device": a["device"],
                           "use_sim_time": sim_time},
                          {"instruction": a["instruction_topic"]}))
    if train:
        nodes.append(NodeSpec("world_env_policy", "loop_trainer_node", "loop_trainer", params_file,
                              {"policy": a["policy"], "start_dataset": a["start_dataset"],
                               "output_dir": a["loop_output_dir"], "device": a["device"], "use_sim_time": False,
                               **joints}))
    return nodes


def _info_topic(image_topic: str) -> str:
    base = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
    return f"{base}/camera_info" if base else "camera_info"
