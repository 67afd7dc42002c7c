"""Self-supervised methods (registered in METHODS)."""
from sdmp_fast.methods import dino, mocov3  # noqa: F401  (registration side effects)
from sdmp_fast.methods.base import Method, build_method  # noqa: F401
