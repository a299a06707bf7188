"""rlhf-forge trainer: SFT, reward model and PPO on rlhf-forge exports. Never imports app."""
