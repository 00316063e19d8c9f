"""VLA policy node: camera, joint states and instruction in; joint trajectories out (see README)."""
