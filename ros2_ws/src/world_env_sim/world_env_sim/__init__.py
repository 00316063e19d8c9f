"""World simulator package: nodes standing in for the camera and arm, over ROS-free cores."""
