"""Reinforcement learning: the imagined and LIBERO environments LOOP runs in, the algorithm and its runners."""
