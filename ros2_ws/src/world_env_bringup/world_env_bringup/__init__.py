"""world-env bring-up: the node graph of ``launch/world_env.launch.py``."""
