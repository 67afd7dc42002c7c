"""Training engine: schedules, EMA, optimizers, checkpoints and the trainer loop."""
