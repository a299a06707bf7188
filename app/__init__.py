"""rlhf-forge service. Never imports torch."""
