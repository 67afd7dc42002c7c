"""Training engine: the trainer loop, precision, the run directory, optimizers, EMA, checkpoints, preemption, CUDA graphs."""
