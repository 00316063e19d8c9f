"""Models: the VLA policy, the world simulator, the instant reflector, their backbones and precision settings."""
