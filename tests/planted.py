"""Faults the tests plant to show that a check catches them."""
from __future__ import annotations


def old_dali_brightness_contrast(x, brightness, contrast):
    """loaders.dali's contrast step before the fix: the centre is an argument computed from the image, a GPU node
    on a GPU, which DALI refuses (arguments must be CPU nodes)."""
    from nvidia.dali import fn, types
    grey = fn.color_space_conversion(x, image_type=types.RGB, output_type=types.GRAY)
    centre = fn.reductions.mean(fn.cast(grey, dtype=types.FLOAT))
    return fn.brightness_contrast(x, brightness=brightness, contrast=contrast, contrast_center=centre)
