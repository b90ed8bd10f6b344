"""Training and evaluation: the training config, losses, the training loop and its steps, checkpoints, metrics,
evaluation, and the torch.distributed helpers they share."""
