"""Batched view augmentation on the device: a whole batch of views in a few tensor ops, no per-sample loop.

The recipes of :mod:`sdmp_fast.augment.recipes` are implemented twice: per sample by the reference loader
(``loaders.torch_folder``, torchvision on uint8) and here, vectorised over the batch, on a uint8 canvas
``[B, 3, Hmax, Wmax]`` (each image top-left aligned, its true size in ``sizes [B, 2]``), for the loaders
that decode a whole batch at once (nvjpeg, ffcv). :func:`sample_view_params` draws every random choice;
:func:`apply_views` turns them into normalised views; :func:`eval_views` is the deterministic evaluation
view, batched the same way. The Triton twin (``sdmp_fast.kernels.augment``) takes the same
:class:`ViewParams`. No ``.item()``/``.tolist()``/``float(tensor)`` and no ``torch.tensor(..., device=)``
copy: nothing waits for the device, so on a GPU the whole step is queued asynchronously. Everything is
float32 on the [0, 1] scale, where the reference works on uint8 and rounds: compare with tolerances.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F

from sdmp_fast.augment.recipes import Recipe, ViewSpec
from sdmp_fast.data.images import EvalSpec

__all__ = ["ViewParams", "sample_view_params", "apply_views", "finish_view", "eval_views", "check_canvas",
           "GRAY_WEIGHTS", "JITTER_ORDER"]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, torchvision's rgb_to_grayscale
# Fixed, where torchvision's ColorJitter and the reference loader draw a random order per sample: a small
# change of the augmentation distribution, accepted for speed.
JITTER_ORDER = ("brightness", "contrast", "saturation", "hue")
RRC_ATTEMPTS = 10


@dataclass
class ViewParams:
    """Every random choice of one view for a batch; all tensors are ``[B]`` on the images' device.

    The crop box (``top``, ``left``, ``height``, ``width``, int64) is in pixels of the original image.
    Colour factors are float32 and hold identity values (1, 1, 1, 0) where ``jitter`` is False; ``sigma``
    is 0 where ``blur`` is False. So ``jitter`` and ``blur`` are informational: applying the factors and
    sigma does the right thing everywhere, without a per-sample branch.
    """
    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor

    def to(self, device: torch.device | str) -> "ViewParams":
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


# ----------------------------------------------------------------------------------------------- sampling

def _between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _rrc_boxes(sizes: torch.Tensor, scale: Sequence[float], ratio: Sequence[float], u: torch.Tensor):
    """RandomResizedCrop boxes from uniforms ``u [B, 2 * RRC_ATTEMPTS + 2]`` (float64)."""
    n = RRC_ATTEMPTS
    height, width = sizes[:, 0:1].to(torch.float64), sizes[:, 1:2].to(torch.float64)  # [B, 1]
    target = height * width * _between(u[:, :n], scale[0], scale[1])
    aspect = torch.exp(_between(u[:, n:2 * n], math.log(ratio[0]), math.log(ratio[1])))
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, like Python's round()
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [B, n]
    first = valid.to(torch.uint8).argmax(1, keepdim=True)  # first valid attempt (0 when none is)
    found = valid.any(1)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    height, width = height[:, 0], width[:, 0]
    top = torch.minimum(torch.floor(u[:, 2 * n] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, 2 * n + 1] * (width - w + 1)), width - w)
    # torchvision's fallback: the whole image, centre-cropped to the nearest allowed aspect ratio
    in_ratio = width / height
    lo, hi = min(ratio), max(ratio)
    fw = torch.where(in_ratio > hi, torch.round(height * hi), width)
    fh = torch.where(in_ratio < lo, torch.round(width / lo), height)
    ftop, fleft = torch.floor((height - fh) / 2), torch.floor((width - fw) / 2)
    box = [torch.where(found, a, b) for a, b in ((top, ftop), (left, fleft), (h, fh), (w, fw))]
    return [x.to(torch.int64) for x in box]


def sample_view_params(recipe: Recipe, sizes: torch.Tensor, generator: torch.Generator) -> list[ViewParams]:
    """Draw one :class:`ViewParams` per view of ``recipe`` for images of true sizes ``sizes [B, 2]`` (h, w).

    One ``torch.rand`` call per view: the RandomResizedCrop box with torchvision's semantics relative to the
    original image (``RRC_ATTEMPTS`` candidates per sample drawn at once, the first valid one kept,
    torchvision's centre-crop fallback where none is), the flip, the colour-jitter mask and factors,
    grayscale, blur mask and sigma, solarize. ``generator`` must live on ``sizes.device``; the same
    generator state gives the same parameters.
    """
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise ValueError(f"sizes must be [B, 2] (height, width), got {tuple(sizes.shape)}")
    b, dev = sizes.shape[0], sizes.device
    n = RRC_ATTEMPTS
    out = []
    for spec in recipe.views:
        u = torch.rand(b, 2 * n + 12, generator=generator, device=dev, dtype=torch.float64)
        top, left, height, width = _rrc_boxes(sizes, spec.scale, spec.ratio, u[:, :2 * n + 2])
        c = u[:, 2 * n + 2:]  # float64 for the flags: u < 1 always, so p = 1 always applies
        c32 = c.to(torch.float32)
        jitter = c[:, 1] < spec.jitter_p
        bs, cs, ss, hs = spec.jitter
        factors = [torch.where(jitter, _between(c32[:, 2 + k], max(0.0, 1 - s), 1 + s), 1.0)
                   for k, s in enumerate((bs, cs, ss))]
        hue = torch.where(jitter, _between(c32[:, 5], -hs, hs), 0.0)
        blur = c[:, 7] < spec.blur_p
        sigma = torch.where(blur, _between(c32[:, 8], *spec.blur_sigma), 0.0)
        out.append(ViewParams(top=top, left=left, height=height, width=width, flip=c[:, 0] < spec.flip_p,
                              jitter=jitter, brightness=factors[0], contrast=factors[1], saturation=factors[2],
                              hue=hue, gray=c[:, 6] < spec.gray_p, blur=blur, sigma=sigma,
                              solarize=c[:, 9] < spec.solarize_p))
    return out


# ----------------------------------------------------------------------------------------------- resampling

def _resample_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (uint8 values are exact in it; tensor cores, half the memory; the weights are rounded
    to 11 bits), float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def _filter(d: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Resampling filter at distances ``d >= 0`` (in filter units; ``d`` may be overwritten): PIL's triangle
    (bilinear, support 1) or cubic (bicubic: Keys' cubic with a = -0.5, support 2, as PIL's and torch's
    antialiased bicubic; negative lobes between 1 and 2)."""
    if interpolation == "bilinear":
        return d.neg_().add_(1.0).clamp_(min=0.0)
    near = (1.5 * d - 2.5) * d * d + 1.0  # |d| < 1
    far = ((-0.5 * d + 2.5) * d - 4.0) * d + 2.0  # 1 <= |d| < 2: a * (|d|^3 - 5 |d|^2 + 8 |d| - 4)
    return torch.where(d < 1.0, near, torch.where(d < 2.0, far, 0.0))


def _aa_weights(start: torch.Tensor, length: torch.Tensor, virtual: torch.Tensor, offset: torch.Tensor,
                out_size: int, in_size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Antialiased resampling weights ``[B, out_size, in_size]`` (float32, rows sum to 1).

    Per sample: the input span ``[start, start + length)`` is resized to ``virtual`` pixels (torchvision /
    PIL filter of ``interpolation``, widened by the downscale factor, cut at the span and renormalised) and
    outputs ``offset .. offset + out_size - 1`` of that resize are kept (``offset`` > 0: a centre crop).
    All of ``start``, ``length``, ``virtual``, ``offset`` are float ``[B]`` tensors.
    """
    dev = start.device
    scale = (length / virtual)[:, None, None]  # input pixels per output pixel
    stretch = scale.clamp(min=1.0)  # the filter widens only when downscaling
    i = torch.arange(out_size, device=dev, dtype=torch.float32)[None, :, None] + offset[:, None, None]
    center = start[:, None, None] + scale * (i + 0.5)  # [B, out, 1], in input pixel coordinates
    pos = torch.arange(in_size, device=dev, dtype=torch.float32)[None, None, :] + 0.5  # pixel centres
    w = _filter((pos - center).abs_().div_(stretch), interpolation)
    w.mul_((pos >= start[:, None, None]) & (pos < (start + length)[:, None, None]))  # cut at the span
    # no 0 / 0: every output's nearest span pixel is within half a filter unit (weight >= 0.5 for both filters),
    # and the cubic's negative lobes (-0.0625 at the lowest) weigh far less than its positive centre
    return w.div_(w.sum(-1, keepdim=True))


def _resample(img: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows [B, s, H] @ img [B, 3, H, W] @ cols [B, s, W]^T`` -> float32 [0, 1] ``[B, 3, s, s]``, channels-last.

    Crop + resize as two batched matrix products with per-sample weight matrices (``_aa_weights``: zero
    outside each sample's box, so the canvas padding never leaks in): torchvision's antialiased bilinear or
    bicubic resize, columns first (tests/augment/test_augment.py bounds the gap to the uint8 reference loader
    and to PIL). The products touch the whole padded canvas, ``O(B * Hmax * Wmax * s)`` per view; the Triton
    twin reads only each box. ``img`` holds 0..255 values in the resampling dtype.
    """
    b, c, h, w = img.shape
    s_r, s_c = rows.shape[1], cols.shape[1]
    dt = img.dtype
    t = torch.bmm(img.reshape(b, c * h, w), cols.to(dt).transpose(1, 2))  # [B, 3H, s_c]
    # the horizontal pass clipped to the pixel range, as PIL and torch's uint8 path clip their intermediate image:
    # a no-op for bilinear weights (never negative), and for bicubic it keeps a sharp edge's overshoot (up to
    # ~27 levels through a checkerboard) from reaching the vertical pass
    t = t.clamp_(0.0, 255.0)
    t = t.view(b, c, h, s_c).permute(0, 2, 3, 1).reshape(b, h, s_c * c)  # [B, H, (j, c)]
    out = torch.bmm(rows.to(dt), t).view(b, s_r, s_c, c).permute(0, 3, 1, 2)  # [B, 3, s, s], channels-last
    return out.to(torch.float32).div_(255.0).clamp_(0.0, 1.0)  # div: k/255 exactly as img.float() / 255


# ----------------------------------------------------------------------------------------------- colour

def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of an RGB float image."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f + other * (1.0 - f)).clamp_(0.0, 1.0)


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue of every pixel by ``shift [B]`` (in turns, like ``TF.adjust_hue``)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    vmax = torch.maximum(torch.maximum(r, g), b)
    chroma = vmax - torch.minimum(torch.minimum(r, g), b)
    cdiv = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # hue in sextants [0, 6): red, then green, then blue decides where several channels tie for the max
    h6 = torch.where(vmax == r, (g - b) / cdiv, torch.where(vmax == g, (b - r) / cdiv + 2.0, (r - g) / cdiv + 4.0))
    h6 = torch.remainder(h6 + 6.0 * _col(shift), 6.0)
    # HSV -> RGB: channel n (R=5, G=3, B=1) is v - chroma * clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6
    n = (5.0 - 2.0 * torch.arange(3, device=x.device, dtype=torch.float32)).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + h6, 6.0)
    return (vmax - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)).clamp_(0.0, 1.0)


def _color_jitter(x: torch.Tensor, p: ViewParams, spec: ViewSpec) -> torch.Tensor:
    """brightness -> contrast -> saturation -> hue, each clamped to [0, 1] (torchvision float semantics)."""
    bs, cs, ss, hs = spec.jitter
    if bs > 0:
        x = (x * _col(p.brightness)).clamp_(0.0, 1.0)
    if cs > 0:
        x = _blend(x, _gray(x).mean((-2, -1), keepdim=True), _col(p.contrast))
    if ss > 0:
        x = _blend(x, _gray(x), _col(p.saturation))
    if hs > 0:
        x = torch.where(_col(p.hue != 0), _hue_shift(x, p.hue), x)  # hue 0: untouched, as torchvision
    return x


# ----------------------------------------------------------------------------------------------- blur, solarize

def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, half: int) -> torch.Tensor:
    """Separable Gaussian blur with per-sample ``sigma [B]`` (0: none), kernel ``2 ceil(3 sigma) + 1``, reflect.

    The reference's tap rule and ``TF.gaussian_blur``'s reflect padding; every sample's kernel is padded
    with zeros to ``2 * half + 1`` taps (the recipe's largest sigma: a static size, no host sync), which
    gives the same result.
    """
    b, _, h, w = x.shape
    if half >= min(h, w):
        raise ValueError(f"blur: sigma range needs a {2 * half + 1}-tap kernel, too large for a {h}x{w} view "
                         "(reflect padding must be smaller than the image)")
    taps = torch.arange(-half, half + 1, device=x.device, dtype=torch.float32)[None, :]  # [1, K]
    sig = sigma.to(torch.float32)[:, None]
    on = sig > 0
    safe = torch.where(on, sig, torch.ones_like(sig))
    kernel = torch.exp(-0.5 * (taps / safe) ** 2) * (taps.abs() <= torch.ceil(3 * safe))
    kernel = torch.where(on, kernel, (taps == 0).to(kernel.dtype))
    kernel = kernel / kernel.sum(1, keepdim=True)  # [B, K]: zeros beyond each sample's own size
    k = [kernel[:, j].view(b, 1, 1, 1) for j in range(2 * half + 1)]
    xp = F.pad(x, (half, half, 0, 0), mode="reflect")
    y = xp[..., 0:w] * k[0]
    for j in range(1, 2 * half + 1):
        y = y.addcmul_(xp[..., j:j + w], k[j])
    yp = F.pad(y, (0, 0, half, half), mode="reflect")
    z = yp[..., 0:h, :] * k[0]
    for j in range(1, 2 * half + 1):
        z = z.addcmul_(yp[..., j:j + h, :], k[j])
    return z


# ----------------------------------------------------------------------------------------------- views

def _per_channel(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[1, 3, 1, 1]`` float32 on ``like``'s device. From Python numbers by fill kernels: ``torch.tensor(...,
    device='cuda')`` would be a blocking host-to-device copy (a stream sync); a tensor is used as given."""
    if isinstance(values, torch.Tensor):
        return values.to(device=like.device, dtype=torch.float32).view(1, 3, 1, 1)
    return torch.stack([torch.full((), v, dtype=torch.float32, device=like.device) for v in values]).view(1, 3, 1, 1)


def _normalise(x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
               out_dtype: torch.dtype) -> torch.Tensor:
    m, s = _per_channel(mean, x), _per_channel(std, x)
    return ((x - m) / s).to(out_dtype).contiguous(memory_format=torch.channels_last)


def check_canvas(images: torch.Tensor, sizes: torch.Tensor) -> None:
    """Raise unless ``images`` is a uint8 canvas ``[B, 3, Hmax, Wmax]`` and ``sizes`` its ``[B, 2]`` true sizes."""
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 canvas [B, 3, Hmax, Wmax], got {images.dtype} {tuple(images.shape)}")
    if sizes.shape != (images.shape[0], 2):
        raise ValueError(f"sizes must be [B={images.shape[0]}, 2], got {tuple(sizes.shape)}")


def apply_views(images: torch.Tensor, sizes: torch.Tensor, params: list[ViewParams], recipe: Recipe,
                out_dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Normalised views ``[B, 3, s, s]`` (channels-last, ``out_dtype``), one per view of ``recipe``.

    ``images`` is the uint8 canvas ``[B, 3, Hmax, Wmax]`` (images top-left aligned, true sizes in ``sizes``);
    ``params`` come from :func:`sample_view_params` (boxes inside each image). Per view: crop + resize
    (antialiased, bilinear or bicubic as ``spec.interpolation`` says), flip, colour jitter (fixed order), grayscale,
    Gaussian blur, solarize, normalise.
    """
    check_canvas(images, sizes)
    if len(params) != len(recipe.views):
        raise ValueError(f"{len(params)} ViewParams for a recipe of {len(recipe.views)} views")
    img = images.to(_resample_dtype(images.device))  # 0..255, exact
    hmax, wmax = images.shape[-2:]
    views = []
    for spec, p in zip(recipe.views, params):
        s = spec.size
        f32 = lambda v: v.to(torch.float32)  # noqa: E731
        zero = torch.zeros_like(f32(p.top))
        rows = _aa_weights(f32(p.top), f32(p.height), torch.full_like(zero, s), zero, s, hmax, spec.interpolation)
        cols = _aa_weights(f32(p.left), f32(p.width), torch.full_like(zero, s), zero, s, wmax, spec.interpolation)
        # the flip folded into the column weights: the reference flips last, and a flip commutes with every later op
        cols = torch.where(p.flip.view(-1, 1, 1), cols.flip(1), cols)
        views.append(finish_view(_resample(img, rows, cols), p, spec, recipe.mean, recipe.std, out_dtype))
    return views


def finish_view(x: torch.Tensor, p: ViewParams, spec: ViewSpec, mean: Sequence[float] | torch.Tensor,
                std: Sequence[float] | torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Everything after crop + resize (and flip): colour jitter, grayscale, blur, solarize, normalise.

    ``x`` is a float32 ``[B, 3, s, s]`` view on the [0, 1] scale; ``p`` its parameters (the box and flip
    fields are not used). :func:`apply_views` calls it; so does the benchmark's FFCV-SSL-style arm, whose
    crops come out of FFCV's decoder, so both arms share one colour pipeline. Ops the spec can never apply
    (probability 0, a zero jitter strength) are skipped statically, so hand-made parameters must stay within
    the spec (blur sigma <= ``spec.blur_sigma[1]``).
    """
    if spec.jitter_p > 0 and any(v > 0 for v in spec.jitter):
        x = _color_jitter(x, p, spec)
    if spec.gray_p > 0:
        x = torch.where(_col(p.gray), _gray(x).expand_as(x), x)
    if spec.blur_half > 0:
        x = _gaussian_blur(x, p.sigma, spec.blur_half)
    if spec.solarize_p > 0:
        x = torch.where(_col(p.solarize) & (x >= spec.solarize_threshold / 255), 1.0 - x, x)
    return _normalise(x, mean, std, out_dtype)


def eval_views(images: torch.Tensor, sizes: torch.Tensor, spec: EvalSpec, mean: Sequence[float] | torch.Tensor,
               std: Sequence[float] | torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Deterministic evaluation views ``[B, 3, size, size]`` (channels-last, ``out_dtype``) of a uint8 canvas.

    torchvision semantics: resize the short side to ``spec.resize`` (long side ``int(resize * long / short)``,
    antialiased, ``spec.interpolation``) and centre crop ``spec.size``; if ``spec.resize == spec.size`` the whole image is
    resized to ``size x size`` instead. Then normalise with ``mean``/``std``.
    """
    check_canvas(images, sizes)
    s = spec.size
    h, w = sizes[:, 0].to(torch.float64), sizes[:, 1].to(torch.float64)
    if spec.resize == spec.size:
        new_h, new_w = torch.full_like(h, s), torch.full_like(w, s)
        off_y, off_x = torch.zeros_like(h), torch.zeros_like(w)
    else:
        r = spec.resize
        new_h = torch.where(w <= h, torch.floor(r * h / w), torch.full_like(h, r))
        new_w = torch.where(w <= h, torch.full_like(w, r), torch.floor(r * w / h))
        off_y, off_x = torch.round((new_h - s) / 2), torch.round((new_w - s) / 2)  # half to even, like round()
    zero = torch.zeros_like(h, dtype=torch.float32)
    f32 = lambda v: v.to(torch.float32)  # noqa: E731
    rows = _aa_weights(zero, f32(h), f32(new_h), f32(off_y), s, images.shape[-2], spec.interpolation)
    cols = _aa_weights(zero, f32(w), f32(new_w), f32(off_x), s, images.shape[-1], spec.interpolation)
    x = _resample(images.to(_resample_dtype(images.device)), rows, cols)
    return _normalise(x, mean, std, out_dtype)
