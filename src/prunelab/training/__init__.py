"""The training loop (masks held, checkpoints, test passes)."""
