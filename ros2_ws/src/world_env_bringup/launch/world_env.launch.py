"""world-env bring-up: ``ros2 launch world_env_bringup world_env.launch.py mode:=imagined|real``.

The node set, parameters and remappings come from ``world_env_bringup.graph`` (see there and the
README for every launch argument); this file only turns them into launch actions.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from world_env_bringup.graph import LAUNCH_ARGUMENTS, graph


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [Node(package=spec.package, executable=spec.executable, name=spec.name, output="screen",
                 parameters=[str(spec.params_file), spec.params], remappings=list(spec.remaps.items()))
            for spec in graph(**values)]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_nodes)])
