"""sdmp_fast: high-throughput MoCo v3 / DINO pretraining with the SDMP data-mixing prior.

Public API: :class:`Config`, :func:`load_config`, :func:`build_method`, :func:`train`.
Importing the package imports no optional backend (DALI, FFCV, Triton).
"""
from sdmp_fast.config import Config, load_config
from sdmp_fast.schema import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "build_method", "train"]
__version__ = "0.1.0"


def __getattr__(name):  # heavy pieces on first use
    if name == "build_method":
        from sdmp_fast.methods import build_method
        return build_method
    if name == "train":
        from sdmp_fast.pretrain import run
        return run
    raise AttributeError(name)
