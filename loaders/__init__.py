"""Loaders: each turns a data source into :class:`sdmp_fast.batch.Batch` objects.

Registered as import strings, so ``import loaders`` imports no optional backend (DALI, FFCV).
Every loader is built as ``build(cfg, recipe, rank=, world=, device=)`` and follows one sharding rule:
per-rank batch = data.batch_size / world, floor(samples / data.batch_size) steps per epoch on every
rank, full batches only (SDMP pairs row i with row B-1-i).
"""
from sdmp_fast.registry import LOADERS

LOADERS.register_lazy("torch", "loaders.torch_folder:build",
                      help="reference: ImageFolder-style reading, PIL decode, per-sample torch augmentation in workers (CPU)")
LOADERS.register_lazy("synthetic", "loaders.synthetic:build",
                      help="random normalised views made on the training device (compute-only ceiling, tests)")
LOADERS.register_lazy("dali", "loaders.dali:build",
                      help="DALI: decode once, every view and augmentation in one pipeline (nvJPEG + GPU ops on a GPU, CPU ops otherwise)",
                      install="pip install nvidia-dali-cuda130==2.4.0 "
                              "(or make setup)")
LOADERS.register_lazy("nvjpeg", "loaders.nvjpeg:build",
                      help="batched torchvision decode_jpeg (nvJPEG on a GPU, CPU otherwise) + batched augmentation "
                           "(sdmp_fast.augment) on the device; no DALI needed")
LOADERS.register_lazy("ffcv", "loaders.ffcv_loader:build",
                      help="FFCV .beton (data.beton=PATH): each image decoded once by ffcv into a canvas, every view made "
                           "by the batched augmentation (sdmp_fast.augment) on the device",
                      install="pip install ffcv==1.0.2 after the apt packages of scripts/setup.sh (or make setup)")
