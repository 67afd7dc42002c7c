"""SDMP's Mixup, CutMix and ResizeMix of a batch in plain torch (the reference, any device).

``params`` draws everything random about a mix (lam, the boxes) on the device; ``blend`` applies a draw
deterministically; ``mixer`` draws a step's op and mixes its views, built once per run.
"""
from sdmp_fast.mixing.blend import apply_mix, mix  # noqa: F401
from sdmp_fast.mixing.mixer import DeviceMixer, HostMixer, Mixer, build_mixer  # noqa: F401
from sdmp_fast.mixing.params import OPS, MixParams, op_code, sample_lam, sample_mix_params  # noqa: F401
