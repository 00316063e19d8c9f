"""Training stages of the models: supervised fine-tuning of the policy, the world model, the reflector."""
