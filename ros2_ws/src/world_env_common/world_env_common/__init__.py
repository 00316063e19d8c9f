"""Code shared by the world-env ROS nodes and the offline training package.

The modules at this level (``robot``, ``camera``, ``action_map``, ``rosenv``) import no
ROS package; ``world_env_common.ros`` holds the message conversions and QoS profiles
and needs the ROS 2 message packages.
"""
