"""Self-supervised methods (registered in METHODS)."""
from . import dino, mocov3  # noqa: F401  (registration side effects)
from .base import Method, StepRandom, build_method  # noqa: F401
