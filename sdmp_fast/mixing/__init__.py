"""Batched Mixup, CutMix and ResizeMix for SDMP in plain torch: the reference and the CPU path.

``params`` draws everything random about a mix (lam, the boxes) on the device; ``blend`` applies a draw
deterministically, so other implementations (the Triton kernel) are checked on the same draw.
"""
from sdmp_fast.mixing.blend import apply_mix, apply_selected_mix, mix, mix_selected  # noqa: F401
from sdmp_fast.mixing.params import OPS, MixParams, sample_lam, sample_mix_params, sample_selected_mix_params  # noqa: F401
