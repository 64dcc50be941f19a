"""Training: the loop, losses, checkpoints, logging and distributed helpers."""
