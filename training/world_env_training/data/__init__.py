"""Data: scripted experts, demonstration and exploration collection, the episode dataset format, robot bags and
LeRobot datasets."""
