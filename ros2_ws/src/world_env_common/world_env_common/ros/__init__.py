"""ROS 2 message conversions and QoS profiles (needs the ROS 2 message packages, not rclpy nodes)."""
