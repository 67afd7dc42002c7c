"""Configuration of pretraining: frozen dataclasses are the schema and the defaults.

Precedence: dataclass defaults < ``--config file.yaml`` < CLI ``key=value`` overrides (``sdmp_fast/schema.py``).
Unknown keys, wrong types and impossible values raise :class:`ConfigError` naming the key and what is
allowed. ``resolve()`` computes derived values (per-rank batch, scaled lr, step counts) once; only
``build_*`` functions read config objects. Which combinations a loader accepts (``data.beton``,
``data.format``, ``data.augment_impl``) is the loaders' knowledge: ``loaders.check_config``.

The defaults are the embedded default run: MoCo v3 + SDMP with a tiny ViT on Fashion-MNIST
(upsampled to 32 px) on whatever device is present. The ImageNet recipes of the paper live in
``configs/*.yaml`` as deltas from these defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sdmp_fast.schema import (FIXED, FREE, ConfigError, absent, choices, dump_yaml, load, markdown_reference, need,
                              to_dict)

__all__ = ["ALIASES", "Config", "ConfigError", "Resolved", "SECTIONS", "config_markdown", "dump_yaml", "load_config",
           "method_interpolation", "with_method_defaults",
           "resolve", "to_dict", "validate"]


@dataclass(frozen=True)
class DataConfig:
    loader: str = field(default="torch", metadata={"help": "loader name (see --help for the registered ones)", **FIXED})
    format: str = field(default="folder", metadata={"help": "folder (ImageNet-style) or webdataset (tar shards written by python -m loaders.shards; dali loader only)", **FIXED})
    beton: str = field(default="", metadata={"help": "FFCV .beton to train from (python -m loaders.write_beton): required by the ffcv loader, also read by the nvjpeg loader (without ffcv). The k-NN monitor still uses data.path", **FREE})
    order: str = field(default="random", metadata={"help": "ffcv loader: 'random' (the shared sharding rule: the same samples per step as every other loader) or 'quasi_random' (ffcv's page-local order for data that does not fit in RAM; one process only)", **choices("random", "quasi_random"), **FIXED})
    os_cache: bool = field(default=True, metadata={"help": "ffcv loader: read through the OS page cache (memory-maps the .beton; best when it fits in RAM or several processes share it); false = ffcv's process cache", **FREE})
    path: str = field(default="", metadata={"help": "ImageNet-style folder with train/ and val/ (or a single split), or a CIFAR folder (cifar-10-batches-py, cifar-100-python: materialised once as PNGs in data.cache_dir); empty = embedded Fashion-MNIST; with data.format=webdataset the shard folder (OUT of python -m loaders.shards)", **FREE})
    cache_dir: str = field(default="", metadata={"help": "where derived data (Fashion-MNIST JPEG folder, CIFAR PNG folders) is cached; empty = $SDMP_CACHE or ~/.cache/sdmp_fast", **FREE})
    class_subset: str = field(default="", metadata={"help": "text file of class folder names, one per line (e.g. ImageNet-100, Table 11): train and val keep only those classes, labels renumbered 0..K-1 in sorted name order, in every folder loader and the evaluation commands; empty = all classes. Not with data.beton or data.format=webdataset (write those from a subset: python -m loaders.write_beton SRC OUT --class-subset FILE)", **FIXED})
    batch_size: int = field(default=64, metadata={"help": "global batch size (all ranks together); must be even per rank (SDMP pairs row i with row B-1-i)", **FIXED})
    image_size: int = field(default=32, metadata={"help": "side of the global views in pixels", **FIXED})
    crop_min: float = field(default=0.2, metadata={"help": "lower bound of RandomResizedCrop's area fraction (MoCo v3: 0.08 for ViT, 0.2 for ResNet-50 short runs)", **FIXED})
    num_workers: int = field(default=2, metadata={"help": "loader workers per rank: torch loader processes (0 = load in the main process); ffcv loader decoding threads (0 = all cores)", **FREE})
    dali_threads: int = field(default=0, metadata={"help": "DALI: CPU worker threads per rank; 0 = the cores this process may use", **FREE})
    prefetch: int = field(default=2, metadata={"help": "batches prepared ahead: DALI's prefetch_queue_depth, FFCV's batches_ahead, the nvjpeg loader's queue", **FREE})
    dali_hw_decoder_load: float = field(default=0.65, metadata={"help": "DALI on a GPU: share of the JPEG decoding given to the hardware decoder, where the GPU has one", **FREE})
    dali_fp16: bool = field(default=False, metadata={"help": "DALI on a GPU: emit float16 views (half the copy; autocast casts them); the CPU step needs float32", **FIXED})
    skip_corrupt: bool = field(default=False, metadata={"help": "skip unreadable images (and report how many) instead of failing with their paths", **FREE})
    mean: tuple[float, float, float] = field(default=(0.485, 0.456, 0.406), metadata={"help": "per-channel normalisation mean (on the 0..1 scale)", **FIXED})
    std: tuple[float, float, float] = field(default=(0.229, 0.224, 0.225), metadata={"help": "per-channel normalisation std (on the 0..1 scale)", **FIXED})
    global_scale: tuple[float, float] = field(default=(0.4, 1.0), metadata={"help": "DINO: RandomResizedCrop area fraction range of the two global views (MoCo v3 uses crop_min instead)", **FIXED})
    local_crops: int = field(default=8, metadata={"help": "DINO: local views per image (multi-crop L; DINO + SDMP mixes locals L//2 ... L-1); MoCo v3 ignores it", **FIXED})
    local_size: int = field(default=16, metadata={"help": "DINO: side of the local views in pixels (96 for 224 px global views; 16 for the 32 px default)", **FIXED})
    local_scale: tuple[float, float] = field(default=(0.05, 0.4), metadata={"help": "DINO: RandomResizedCrop area fraction range of the local views", **FIXED})
    interpolation: str = field(default="auto", metadata={"help": "resize of the training crops (antialiased): 'auto' = the method's recipe, written out when the config is read (DINO: bicubic, its RandomResizedCrop(..., Image.BICUBIC); MoCo v3: bilinear); a run recorded without this key used bilinear", **choices("auto", "bilinear", "bicubic"), **absent("bilinear"), **FIXED})
    eval_interpolation: str = field(default="auto", metadata={"help": "resize of the evaluation view (resize, centre crop) of the k-NN report, recorded as the evaluation commands' default: 'auto' = the method's (DINO: bicubic, its Resize(256, interpolation=3); MoCo v3: bilinear); a run recorded without this key used bilinear", **choices("auto", "bilinear", "bicubic"), **absent("bilinear"), **FREE})
    augment_impl: str = field(default="torch", metadata={"help": "nvjpeg and ffcv loaders: batched view augmentation 'torch' (sdmp_fast/augment, any device) or 'triton' (sdmp_fast/kernels: a few launches per view size; needs a CUDA GPU)", **choices("torch", "triton"), **FREE})


def _pos_resample_absent(recorded: dict) -> str:
    """What a run recorded before model.pos_resample existed did: DINO runs (the only ones that feed a ViT other
    sizes) resampled with timm's antialiased call; for the others the key changes nothing, so it is the default."""
    return "timm" if (recorded.get("method") or {}).get("name") == "dino" else "dino"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="vit_tiny_p4", metadata={"help": "backbone name (see --help for the registered ones)", **FIXED})
    drop_path: float = field(default=0.0, metadata={"help": "stochastic depth rate of the ViT blocks", **FIXED})
    channels_last: bool = field(default=True, metadata={"help": "run the backbone in channels-last memory format", **FREE})
    pos_resample: str = field(default="dino", metadata={"help": "how a ViT with a variable input size (the *_dino and *_dyn backbones) resamples its position table for other grids, e.g. DINO's local crops: 'dino' = DINO's interpolate_pos_encoding (bicubic, no antialiasing, scale factor (n + 0.1) / N); 'timm' = timm's dynamic_img_size (bicubic, antialiased), what DINO runs recorded without this key used", **choices("dino", "timm"), **absent(_pos_resample_absent), **FIXED})


@dataclass(frozen=True)
class MethodConfig:
    name: str = field(default="mocov3", metadata={"help": "self-supervised method (see --help for the registered ones)", **FIXED})
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature T (MoCo v3: 0.2 ViT, 1.0 ResNet-50); the loss is scaled by 2T", **FIXED})
    momentum: float = field(default=0.99, metadata={"help": "momentum-encoder / teacher EMA coefficient at step 0 (MoCo v3 ViT: 0.99; DINO: 0.996)", **FIXED})
    momentum_final: float = field(default=1.0, metadata={"help": "EMA coefficient at the last step (half-cosine from momentum)", **FIXED})
    proj_layers: int = field(default=3, metadata={"help": "projector depth (MoCo v3: 3 for ViT, 2 for ResNet-50)", **FIXED})
    hidden_dim: int = field(default=1024, metadata={"help": "hidden width of projector and predictor", **FIXED})
    out_dim: int = field(default=256, metadata={"help": "output dimension of projector and predictor", **FIXED})
    pred_last_bn: bool = field(default=True, metadata={"help": "affine-free BatchNorm at the end of the predictor (MoCo v3: True for ViT, False for ResNet)", **FIXED})
    dino_out_dim: int = field(default=65536, metadata={"help": "DINO: head output dimension K (softmax over K prototypes)", **FIXED})
    dino_hidden_dim: int = field(default=2048, metadata={"help": "DINO: hidden width of the head's 3-layer MLP", **FIXED})
    dino_bottleneck_dim: int = field(default=256, metadata={"help": "DINO: bottleneck width (L2-normalised) before the weight-normalised last layer", **FIXED})
    norm_last_layer: bool = field(default=True, metadata={"help": "DINO: fix the weight-norm gain g of the last layer to 1 (DINO: true for stability; false for the ViT-S 300-epoch recipe)", **FIXED})
    student_temp: float = field(default=0.1, metadata={"help": "DINO: student softmax temperature", **FIXED})
    teacher_temp: float = field(default=0.07, metadata={"help": "DINO: teacher softmax temperature after the warm-up (DINO: above 0.07 is unstable; 0.04 for short runs)", **FIXED})
    warmup_teacher_temp: float = field(default=0.04, metadata={"help": "DINO: teacher temperature at step 0 (linear per-step warm-up to teacher_temp)", **FIXED})
    warmup_teacher_temp_epochs: float = field(default=30.0, metadata={"help": "DINO: length of the teacher-temperature warm-up in epochs (fractions allowed; 0 = teacher_temp from the start)", **FIXED})
    center_momentum: float = field(default=0.9, metadata={"help": "DINO: EMA coefficient of the centre subtracted from the teacher outputs (per step)", **FIXED})
    freeze_last_layer: float = field(default=1.0, metadata={"help": "DINO: the head's last layer gets no update (no gradient, no weight decay) during the first N epochs (fractions allowed)", **FIXED})


@dataclass(frozen=True)
class SDMPConfig:
    enabled: bool = field(default=True, metadata={"help": "add SDMP's mixed views and losses", **FIXED})
    variant: str = field(default="replace", metadata={"help": "'replace' (a mixed view replaces one clean query view; DINO: half of the local views) or 'extra' (two extra views; MoCo v3 only)", **choices("replace", "extra"), **FIXED})
    ops: tuple[str, ...] = field(default=("mixup", "cutmix", "resizemix"), metadata={"help": "mixing ops; one is drawn uniformly per step (shared by all ranks)", **FIXED})
    alpha: float = field(default=1.0, metadata={"help": "lambda ~ Beta(alpha, alpha) per sample", **FIXED})
    impl: str = field(default="torch", metadata={"help": "mixing implementation: 'torch' (the reference, any device) or 'triton' (sdmp_fast/kernels: one kernel launch per mix; needs a CUDA GPU)", **choices("torch", "triton"), **FREE})
    weights: tuple[float, float, float] = field(default=(1.0, 0.5, 0.5), metadata={"help": "MoCo v3: loss weights (clean, source, mix) of the 'replace' variant (DINO uses Eq. 9's unit weights)", **FIXED})
    mix_global_student: bool = field(default=False, metadata={"help": "DINO: the student's second global view is replaced by its mixed version (Table 10's 2 + 0 row, where it is the only mixed student view)", **FIXED})
    center_from_mixed: bool = field(default=False, metadata={"help": "DINO: also update the centre from the teacher outputs of the mixed global view (default: clean global views only, DINO's rule)", **FIXED})


@dataclass(frozen=True)
class OptimConfig:
    name: str = field(default="adamw", metadata={"help": "optimizer", **choices("adamw", "lars", "sgd"), **FIXED})
    lr: float = field(default=1.5e-3, metadata={"help": "base learning rate per 256 images (scaled by global batch / 256); the default is for the short CPU run, the ImageNet configs use MoCo v3's 1.5e-4", **FIXED})
    min_lr: float = field(default=0.0, metadata={"help": "final learning rate of the cosine (absolute)", **FIXED})
    weight_decay: float = field(default=0.1, metadata={"help": "weight decay (MoCo v3: 0.1 AdamW ViT, 1e-6 LARS ResNet; DINO: 0.04 at step 0)", **FIXED})
    weight_decay_end: float = field(default=-1.0, metadata={"help": "final weight decay of a per-step half-cosine from weight_decay (DINO: 0.4), applied to the decayed parameter group only; -1 = constant weight_decay", **FIXED})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas", **FIXED})
    momentum: float = field(default=0.9, metadata={"help": "SGD/LARS momentum", **FIXED})
    warmup_epochs: float = field(default=0.05, metadata={"help": "linear warm-up length in epochs (fractions allowed)", **FIXED})
    clip_grad: float = field(default=0.0, metadata={"help": "max gradient norm (0 = off)", **FIXED})
    clip_mode: str = field(default="global", metadata={"help": "how clip_grad applies: 'global' = one norm over all student parameters; 'per_param' = each parameter's gradient scaled by min(1, clip_grad / (norm + 1e-6)) (DINO)", **choices("global", "per_param"), **FIXED})


@dataclass(frozen=True)
class RunConfig:
    epochs: int = field(default=1, metadata={"help": "training length in epochs (ignored when max_steps > 0)", **FIXED})
    max_steps: int = field(default=450, metadata={"help": "training length in optimizer steps; 0 = use epochs", **FIXED})
    stop_after: int = field(default=0, metadata={"help": "stop this invocation (with a checkpoint) after this many steps without changing the schedule; 0 = off", **FREE})
    seed: int = field(default=0, metadata={"help": "seed of every random stream", **FIXED})
    out_dir: str = field(default="runs/default", metadata={"help": "run directory: config, metrics, checkpoints, export", **FREE})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present, else cpu), 'cpu', 'cuda' or 'cuda:N'", **FREE})
    precision: str = field(default="auto", metadata={"help": "autocast dtype: auto = bf16 on CUDA, fp32 on CPU", **choices("auto", "fp32", "bf16", "fp16"), **FIXED})
    log_every: int = field(default=20, metadata={"help": "read device values (loss, metrics) every N steps; no host sync in between", **FREE})
    checkpoint_minutes: float = field(default=10.0, metadata={"help": "also checkpoint every N minutes of wall time (epoch ends always checkpoint); 0 = only epoch ends", **FREE})
    tensorboard: bool = field(default=False, metadata={"help": "also write every logged scalar (loss terms, schedules, images/s, data wait, k-NN) as TensorBoard events in RUN_DIR/tensorboard (needs the tb extra: pip install -e '.[tb]')", **FREE})
    knn: bool = field(default=True, metadata={"help": "evaluate k-NN accuracy (trained vs random init) at the end", **FREE})
    knn_bank: int = field(default=10000, metadata={"help": "train images in the k-NN feature bank (fixed subset)", **FREE})
    knn_queries: int = field(default=0, metadata={"help": "val images used as k-NN queries; 0 = all", **FREE})
    knn_k: int = field(default=20, metadata={"help": "neighbours of the weighted k-NN vote", **FREE})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default", **FREE})
    fused: bool = field(default=True, metadata={"help": "one student forward over the concatenation of its views and one teacher forward over its views (per-view BatchNorm statistics, one all-gather of the keys); false = one forward per view", **FREE})
    cuda_graph: bool = field(default=False, metadata={"help": "capture the whole training step (forward with mixing, backward, optimizer, EMA) in one CUDA graph after 3 eager steps and replay it; CUDA only, one process, AdamW, bf16/fp32, sdmp.impl=torch (engine/graph.py)", **FIXED})
    compile: bool = field(default=False, metadata={"help": "torch.compile the student and teacher backbones in place (SDMP_COMPILE_BACKEND: the backend, default inductor); the alternative to run.cuda_graph, not both", **FREE})


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    sdmp: SDMPConfig = SDMPConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


SECTIONS = {f.name: f.type for f in fields(Config)}
# CLI flags that are aliases of dotted keys.
ALIASES = {"--loader": "data.loader", "--data": "data.path", "--out": "run.out_dir"}


def load_config(config_file: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Defaults < YAML file < overrides (``["section.key=value", ...]`` or a dict), then validated."""
    cfg = with_method_defaults(load(Config, config_file, overrides))
    validate(cfg)
    return cfg


def method_interpolation(method: str) -> str:
    """The resize interpolation of a method's own recipe, for its crops and its evaluation view: bicubic for DINO
    (main_dino.py, eval_knn.py, eval_linear.py), bilinear for MoCo v3 (torchvision's default in main_moco.py,
    main_lincls.py) and the others."""
    return "bicubic" if method == "dino" else "bilinear"


def with_method_defaults(cfg: Config) -> Config:
    """``cfg`` with every 'auto' that means the method's own value written out, so that what is recorded (config.yaml,
    checkpoints, exports) says what ran."""
    d = cfg.data
    auto = method_interpolation(cfg.method.name)
    crops, evaluation = (auto if v == "auto" else v for v in (d.interpolation, d.eval_interpolation))
    return replace(cfg, data=replace(d, interpolation=crops, eval_interpolation=evaluation))


# ----------------------------------------------------------------------------- validation

def validate(cfg: Config) -> None:
    """Reject impossible values with a message naming the key (the loader-specific ones: ``loaders.check_config``)."""
    validate_data(cfg.data)
    validate_method(cfg)
    validate_optim(cfg.optim)
    validate_run(cfg)


def validate_data(d: DataConfig) -> None:
    need(d.batch_size >= 2 and d.batch_size % 2 == 0, f"data.batch_size = {d.batch_size}: must be an even number >= 2")
    need(d.image_size >= 8, f"data.image_size = {d.image_size}: must be at least 8 pixels")
    need(0 < d.crop_min <= 1, f"data.crop_min = {d.crop_min}: must be in (0, 1]")
    need(d.num_workers >= 0, f"data.num_workers = {d.num_workers}: must be >= 0")
    need(all(x > 0 for x in d.std), f"data.std = {d.std}: every value must be > 0")
    for key, (lo, hi) in (("data.global_scale", d.global_scale), ("data.local_scale", d.local_scale)):
        need(0 < lo <= hi <= 1, f"{key} = {[lo, hi]}: need 0 < low <= high <= 1 (area fractions)")
    need(d.local_crops >= 0, f"data.local_crops = {d.local_crops}: must be >= 0")
    need(d.format in ("folder", "webdataset"), f"data.format = {d.format!r}: choose folder or webdataset")
    need(d.order in ("random", "quasi_random"), f"data.order = {d.order!r}: choose random or quasi_random")
    need(not d.beton or d.format == "folder", "data.beton and data.format = 'webdataset' are two different sources: pick one")
    need(d.dali_threads >= 0, f"data.dali_threads = {d.dali_threads}: must be >= 0 (0 = all available cores)")
    need(d.prefetch >= 1, f"data.prefetch = {d.prefetch}: must be >= 1")
    need(0 <= d.dali_hw_decoder_load <= 1, f"data.dali_hw_decoder_load = {d.dali_hw_decoder_load}: must be in [0, 1]")
    need(d.local_size >= 8, f"data.local_size = {d.local_size}: must be at least 8 pixels")


def validate_method(cfg: Config) -> None:
    """model, method and sdmp: the values and DINO + SDMP's combinations."""
    d, m, s = cfg.data, cfg.method, cfg.sdmp
    need(0 <= cfg.model.drop_path < 1, f"model.drop_path = {cfg.model.drop_path}: must be in [0, 1)")
    need(m.temperature > 0, f"method.temperature = {m.temperature}: must be > 0")
    need(0 <= m.momentum <= 1 and 0 <= m.momentum_final <= 1, "method.momentum and method.momentum_final must be in [0, 1]")
    need(m.proj_layers >= 1, f"method.proj_layers = {m.proj_layers}: must be >= 1")
    need(m.hidden_dim >= 1 and m.out_dim >= 1, "method.hidden_dim and method.out_dim must be >= 1")
    need(min(m.dino_out_dim, m.dino_hidden_dim, m.dino_bottleneck_dim) >= 1,
         "method.dino_out_dim, method.dino_hidden_dim and method.dino_bottleneck_dim must be >= 1")
    for key in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        need(getattr(m, key) > 0, f"method.{key} = {getattr(m, key)}: must be > 0")
    need(m.warmup_teacher_temp_epochs >= 0, f"method.warmup_teacher_temp_epochs = {m.warmup_teacher_temp_epochs}: must be >= 0")
    need(0 <= m.center_momentum <= 1, f"method.center_momentum = {m.center_momentum}: must be in [0, 1]")
    need(m.freeze_last_layer >= 0, f"method.freeze_last_layer = {m.freeze_last_layer}: must be >= 0 (epochs)")
    need(len(s.ops) >= 1, "sdmp.ops: name at least one of mixup, cutmix, resizemix")
    bad = [op for op in s.ops if op not in ("mixup", "cutmix", "resizemix")]
    need(not bad, f"sdmp.ops: unknown op(s) {bad}; choose from mixup, cutmix, resizemix")
    need(len(set(s.ops)) == len(s.ops), f"sdmp.ops = {list(s.ops)}: an op is listed twice")
    need(s.alpha > 0, f"sdmp.alpha = {s.alpha}: must be > 0")
    if m.name == "dino" and s.enabled:
        need(s.variant == "replace", f"sdmp.variant = {s.variant!r}: DINO + SDMP has only the 'replace' variant "
                                     "(mixed views replace half of the local views)")
        need(d.local_crops >= 1 or s.mix_global_student,
             "data.local_crops = 0 with DINO + SDMP leaves no mixed student view: set sdmp.mix_global_student=true "
             "(Table 10's 2 + 0 row) or data.local_crops >= 1")
    need(all(w >= 0 for w in s.weights), f"sdmp.weights = {s.weights}: must be >= 0")


def validate_optim(o: OptimConfig) -> None:
    need(o.lr > 0, f"optim.lr = {o.lr}: must be > 0")
    need(o.min_lr >= 0 and o.weight_decay >= 0, "optim.min_lr and optim.weight_decay must be >= 0")
    need(o.weight_decay_end >= 0 or o.weight_decay_end == -1,
         f"optim.weight_decay_end = {o.weight_decay_end}: must be >= 0, or -1 for a constant optim.weight_decay")
    need(o.warmup_epochs >= 0, f"optim.warmup_epochs = {o.warmup_epochs}: must be >= 0")
    need(o.clip_grad >= 0, f"optim.clip_grad = {o.clip_grad}: must be >= 0 (0 = off)")


def validate_run(cfg: Config) -> None:
    """run: the values, and what run.cuda_graph needs of the other sections."""
    r, o, s = cfg.run, cfg.optim, cfg.sdmp
    need(r.epochs >= 1, f"run.epochs = {r.epochs}: must be >= 1")
    need(r.max_steps >= 0 and r.stop_after >= 0, "run.max_steps and run.stop_after must be >= 0")
    need(r.log_every >= 1, f"run.log_every = {r.log_every}: must be >= 1")
    need(r.checkpoint_minutes >= 0, f"run.checkpoint_minutes = {r.checkpoint_minutes}: must be >= 0")
    need(r.device == "auto" or r.device == "cpu" or r.device.startswith("cuda"),
         f"run.device = {r.device!r}: use auto, cpu, cuda or cuda:N")
    need(r.knn_bank >= 1 and r.knn_queries >= 0 and r.knn_k >= 1, "run.knn_bank and run.knn_k must be >= 1, run.knn_queries >= 0")
    need(r.threads >= 0, f"run.threads = {r.threads}: must be >= 0")
    need(not (r.cuda_graph and r.compile), "run.cuda_graph and run.compile are alternatives: set one of them")
    need(not r.cuda_graph or r.precision != "fp16",
         "run.cuda_graph = true needs run.precision bf16, fp32 or auto: fp16's GradScaler decides on the host "
         "whether to skip a step, which a captured graph cannot")
    need(not r.cuda_graph or r.device != "cpu", "run.cuda_graph = true needs a CUDA device (run.device = 'cpu')")
    need(not r.cuda_graph or o.name == "adamw",
         f"run.cuda_graph = true needs optim.name = adamw (its lr is a device tensor); {o.name} takes its lr as a "
         "host float, which a captured graph would freeze")
    need(not (r.cuda_graph and s.enabled and s.impl != "torch"),
         "run.cuda_graph = true draws the mixing op on the device, which the Triton mixing kernel (sdmp.impl = "
         "triton) takes from the host: set sdmp.impl=torch")


# ----------------------------------------------------------------------------- resolution

@dataclass(frozen=True)
class Resolved:
    """Values derived once from the config and the run's environment."""
    world: int
    rank: int
    local_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float  # absolute peak lr = optim.lr * global batch / 256


def resolve(cfg: Config, num_samples: int, world: int = 1, rank: int = 0) -> Resolved:
    """Derive per-rank batch, step counts and scaled lr; errors name the key."""
    gb = cfg.data.batch_size
    if gb % world:
        raise ConfigError(f"data.batch_size = {gb} is not divisible by the world size {world}")
    local = gb // world
    if local % 2:
        raise ConfigError(f"data.batch_size = {gb}: the per-rank batch {local} (= batch / world {world}) must be even "
                          "(SDMP pairs row i with row B-1-i of each rank's batch); use a multiple of 2 x world")
    spe = num_samples // gb
    if spe < 1:
        raise ConfigError(f"data.batch_size = {gb} is larger than the training set ({num_samples} images); "
                          "lower data.batch_size")
    total = cfg.run.max_steps if cfg.run.max_steps > 0 else cfg.run.epochs * spe
    warm = int(round(cfg.optim.warmup_epochs * spe))
    warm = min(warm, total - 1) if total > 1 else 0
    return Resolved(world=world, rank=rank, local_batch=local, steps_per_epoch=spe, total_steps=total,
                    warmup_steps=warm, lr=cfg.optim.lr * gb / 256)


def config_markdown() -> str:
    """docs/config.md, generated from the dataclasses (tests/test_config.py keeps the file current)."""
    return markdown_reference(Config, [
        "# Configuration reference", "",
        "Generated from `sdmp_fast/config.py` by `make docs`; do not edit by hand.",
        "", "Precedence: dataclass defaults < `--config file.yaml` < command-line `section.key=value`.",
        "Aliases: " + ", ".join(f"`{a} X` = `{k}=X`" for a, k in ALIASES.items()) + ".",
        "Unknown keys, wrong types and impossible values are errors that name the key.",
        "On resume (`--resume auto`): a change to a *fixed* key (it changes the run's mathematics or data order) is "
        "refused unless `--allow-config-change` (recorded in RUN_DIR/config_changes.jsonl); *free* keys may change.",
        ""])


if __name__ == "__main__":
    print(config_markdown())
