"""Evaluation: success rates in LIBERO, world-model and reflector quality, the reward-hacking audit, statistics."""
