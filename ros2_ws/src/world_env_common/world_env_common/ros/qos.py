"""The QoS profile of each kind of topic in the project.

Camera drivers and /joint_states publishers commonly use the sensor-data profile
(best effort, volatile); a reliable subscriber receives nothing from a best-effort
publisher, so subscribers of streams use best effort, which matches both kinds of publisher.
Commands to the arm and episode verdicts must not be lost: reliable.
"""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

# Camera images, CameraInfo, joint states, action-map inspection images.
SENSOR = qos_profile_sensor_data
# Joint trajectory commands, rewards and termination.
COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
# The task instruction: a late-joining node still gets the last one.
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
