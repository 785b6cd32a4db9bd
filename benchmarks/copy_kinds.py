"""A broad family of planted copies: edited versions of images, for retrieval benchmarks.

Each copy kind is a function of one image and a strength drawn per copy, uniformly from
the kind's range, by a seeded generator.  Every kind works on grey ``(h, w)``, RGB
``(h, w, 3)`` and RGBA ``(h, w, 4)`` uint8 arrays and returns an array of the same
height and width (resized back where the edit changes the size), so that copies stack
into one array; RGBA is composited over white first.  The kinds marked ``rgb`` need
colour: on a grey image they are skipped by :func:`plant_copies` unless ``mode="RGB"``,
where grey originals are promoted to RGB (three equal channels, which every dcsi
backbone reads exactly as the grey image).

=============  ===================================================================
family         kinds (strength range)
=============  ===================================================================
geometric      shift (2-10 % of the side, random direction, edge fill),
               crop_resize (keep 80-95 % of each side, resized back),
               rotate (2-10 degrees either way, white fill), rescale (down to
               40-80 % and back up: a thumbnail), pad (border of 3-12 % of the side,
               white/black/grey, resized back), aspect (one axis squeezed to 80-95 %,
               centred on white)
filtering      blur (Gaussian, radius 0.3-1.2 % of the longer side, at least 0.4 px),
               sharpen (1.5-3), median (3 px), unsharp (radius 1-2 px, 80-200 %)
noise          gaussian (sigma 4-16 grey levels), impulse (1-5 % of pixels),
               speckle (multiplicative, sigma 0.05-0.2)
photometric    brightness (x 0.7-1.3), contrast (x 0.6-1.4), gamma (0.6-1.6),
               colour_jitter (hue shift 3-15 %, saturation x 0.7-1.3; rgb),
               greyscale (of an RGB image; rgb), tint (a colour wash of 10-35 %;
               rgb)
compression    jpeg (quality 30-90), webp (quality 30-90), quantise (palette of
               8-64 colours)
overlay        text (a short caption, 1 line, in a corner), logo (a small filled
               disc and square, 8-16 % of the side, 60-100 % opaque)
flip (opt-in)  hflip, vflip
=============  ===================================================================

:data:`UNSEEN_KINDS` are edits outside every family and range above, kept apart so
that no default is ever chosen on them: shift_far (10-15 % of the side),
perspective (corners moved in by up to 4-10 %), shear (5-15 %), vignette (edges
darkened by 20-50 %), pixelate (nearest-neighbour down to 40-70 % and back),
jpeg_low (quality 5-15), solarize (levels above 200-240 inverted), equalize
(histogram equalisation), and four combinations of the kinds above: reshare
(bicubic down to 60-90 % and back, then JPEG 40-80), crop_bright_jpeg
(crop_resize, brightness, then JPEG 50-85), rotate_noise, blur_contrast.

Usage::

    from copy_kinds import plant_copies
    planted = plant_copies(images, originals, seed=0)       # one copy per original
    planted.copies, planted.kinds, planted.strengths
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

__all__ = [
    "FAMILIES",
    "KINDS",
    "UNSEEN_KINDS",
    "CopyKind",
    "PlantedCopies",
    "make_copy",
    "plant_copies",
]


@dataclass(frozen=True)
class CopyKind:
    """One way to edit an image.

    Attributes
    ----------
    name, family : str
    low, high : float
        Range of the strength drawn per copy.
    rgb : bool
        Needs colour (skipped on grey data unless copies are made in RGB).
    flip : bool
        A flip: only with ``flips=True``.
    apply : callable
        ``apply(image: PIL.Image, strength: float, rng) -> PIL.Image`` (same mode).
    """

    name: str
    family: str
    low: float
    high: float
    rgb: bool
    flip: bool
    apply: Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _fill(img: Image.Image, value: int = 255) -> int | tuple[int, int, int]:
    return value if img.mode == "L" else (value, value, value)


def _shift(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img)
    h, w = a.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = round(s * h * np.sin(angle)), round(s * w * np.cos(angle))
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return Image.fromarray(np.ascontiguousarray(a[rows][:, cols]))


def _crop_resize(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    cw, ch = max(1, round(w * s)), max(1, round(h * s))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)


def _rotate(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    angle = s if rng.random() < 0.5 else -s
    return img.rotate(angle, Image.Resampling.BILINEAR, fillcolor=_fill(img))


def _rescale(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _pad(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    border = max(1, round(s * max(w, h)))
    value = int(rng.choice([255, 0, 128]))
    padded = ImageOps.expand(img, border=border, fill=_fill(img, value))
    return padded.resize((w, h), Image.Resampling.BILINEAR)


def _aspect(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    horizontal = rng.random() < 0.5
    size = (max(1, round(w * s)), h) if horizontal else (w, max(1, round(h * s)))
    squeezed = img.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new(img.mode, (w, h), _fill(img))
    canvas.paste(squeezed, ((w - size[0]) // 2, (h - size[1]) // 2))
    return canvas


def _blur(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(max(0.4, s * max(img.size))))


def _sharpen(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(s)


def _median(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.MedianFilter(3))


def _unsharp(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    radius = float(rng.uniform(1.0, 2.0))
    return img.filter(ImageFilter.UnsharpMask(radius=radius, percent=round(s), threshold=2))


def _from_float(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _gaussian(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float64)
    return _from_float(a + rng.normal(0.0, s, a.shape))


def _impulse(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.array(img)
    hit = rng.random(a.shape[:2]) < s
    a[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)[
        (...,) + (None,) * (a.ndim - 2)
    ]
    return Image.fromarray(a)


def _speckle(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float64)
    return _from_float(a * (1.0 + rng.normal(0.0, s, a.shape)))


def _brightness(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(s)


def _contrast(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(s)


def _gamma(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float64) / 255.0
    return _from_float(255.0 * a**s)


def _colour_jitter(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    hsv = np.array(img.convert("HSV"), dtype=np.int64)
    shift = round(s * 255) * (1 if rng.random() < 0.5 else -1)
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def _greyscale(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.convert("L").convert("RGB")


def _tint(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    colour = rng.integers(0, 256, 3).astype(np.float64)
    a = np.asarray(img, dtype=np.float64)
    return _from_float((1.0 - s) * a + s * colour)


def _encoded(img: Image.Image, fmt: str, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    out = Image.open(io.BytesIO(buf.getvalue()))
    return out.convert(img.mode)


def _jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _encoded(img, "JPEG", round(s))


def _webp(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _encoded(img, "WEBP", round(s))


def _quantise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return img.quantize(colors=round(s), dither=Image.Dither.NONE).convert(img.mode)


_CAPTIONS = ("(c) 2024", "sample", "dcsi", "copy", "#42", "stock")


def _text(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    w, h = img.size
    caption = str(rng.choice(_CAPTIONS))
    left, top, right, bottom = draw.textbbox((0, 0), caption)
    x = int(rng.integers(0, max(1, w - (right - left))))
    y = int(rng.choice([0, max(0, h - (bottom - top) - 1)]))
    draw.text((x, y), caption, fill=_fill(img, int(rng.choice([0, 255]))))
    return out


def _logo(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    side = max(3, round(s * max(w, h)))
    logo = Image.new(img.mode, (side, side), _fill(img, int(rng.integers(0, 256))))
    inner = (side // 4, side // 4, 3 * side // 4, 3 * side // 4)
    ImageDraw.Draw(logo).rectangle(inner, fill=_fill(img, int(rng.integers(0, 256))))
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, side - 1, side - 1), fill=round(255 * rng.uniform(0.6, 1)))
    out = img.copy()
    out.paste(logo, (int(rng.choice([0, w - side])), int(rng.choice([0, h - side]))), mask)
    return out


def _hflip(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(img)


def _vflip(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageOps.flip(img)


def _kind(name, family, low, high, fn, *, rgb=False, flip=False) -> CopyKind:
    return CopyKind(name, family, float(low), float(high), rgb, flip, fn)


#: Every copy kind, by name.
KINDS: dict[str, CopyKind] = {
    k.name: k
    for k in (
        _kind("shift", "geometric", 0.02, 0.10, _shift),
        _kind("crop_resize", "geometric", 0.80, 0.95, _crop_resize),
        _kind("rotate", "geometric", 2, 10, _rotate),
        _kind("rescale", "geometric", 0.40, 0.80, _rescale),
        _kind("pad", "geometric", 0.03, 0.12, _pad),
        _kind("aspect", "geometric", 0.80, 0.95, _aspect),
        _kind("blur", "filtering", 0.003, 0.012, _blur),
        _kind("sharpen", "filtering", 1.5, 3.0, _sharpen),
        _kind("median", "filtering", 3, 3, _median),
        _kind("unsharp", "filtering", 80, 200, _unsharp),
        _kind("gaussian", "noise", 4, 16, _gaussian),
        _kind("impulse", "noise", 0.01, 0.05, _impulse),
        _kind("speckle", "noise", 0.05, 0.20, _speckle),
        _kind("brightness", "photometric", 0.7, 1.3, _brightness),
        _kind("contrast", "photometric", 0.6, 1.4, _contrast),
        _kind("gamma", "photometric", 0.6, 1.6, _gamma),
        _kind("colour_jitter", "photometric", 0.03, 0.15, _colour_jitter, rgb=True),
        _kind("greyscale", "photometric", 0, 0, _greyscale, rgb=True),
        _kind("tint", "photometric", 0.10, 0.35, _tint, rgb=True),
        _kind("jpeg", "compression", 30, 90, _jpeg),
        _kind("webp", "compression", 30, 90, _webp),
        _kind("quantise", "compression", 8, 64, _quantise),
        _kind("text", "overlay", 0, 0, _text),
        _kind("logo", "overlay", 0.08, 0.16, _logo),
        _kind("hflip", "flip", 0, 0, _hflip, flip=True),
        _kind("vflip", "flip", 0, 0, _vflip, flip=True),
    )
}
#: Family -> names of its kinds.
FAMILIES: dict[str, list[str]] = {}
for _k in KINDS.values():
    FAMILIES.setdefault(_k.family, []).append(_k.name)
del _k


# ------------------------------------------------------------------ unseen kinds
def _drawn(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """``img`` edited by a kind of :data:`KINDS` at a strength drawn from its range."""
    spec = KINDS[kind]
    return spec.apply(img, float(rng.uniform(spec.low, spec.high)), rng)


def _perspective(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    # each corner moved inwards by up to s of the side; solve for PIL's 8 coefficients
    w, h = img.size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    sign = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
    dst = [
        (x + sx * rng.uniform(0, s * w), y + sy * rng.uniform(0, s * h))
        for (x, y), (sx, sy) in zip(src, sign, strict=True)
    ]
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        A += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    coef = np.linalg.solve(np.array(A, dtype=np.float64), np.array(b, dtype=np.float64))
    return img.transform(
        (w, h), Image.Transform.PERSPECTIVE, tuple(coef), Image.Resampling.BILINEAR
    )


def _shear(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    k = s if rng.random() < 0.5 else -s
    return img.transform(
        (w, h), Image.Transform.AFFINE, (1, k, -k * h / 2, 0, 1, 0), Image.Resampling.BILINEAR
    )


def _vignette(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[:2]
    y, x = np.mgrid[:h, :w]
    r = np.hypot((y - (h - 1) / 2) / (h / 2), (x - (w - 1) / 2) / (w / 2))
    f = 1.0 - s * np.clip(r, 0.0, 1.4) ** 2
    return _from_float(a * (f if a.ndim == 2 else f[..., None]))


def _pixelate(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.NEAREST)
    return small.resize((w, h), Image.Resampling.NEAREST)


def _solarize(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageOps.solarize(img, round(s))


def _equalize(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return ImageOps.equalize(img)


def _reshare(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    small = img.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
    back = small.resize((w, h), Image.Resampling.BICUBIC)
    return _encoded(back, "JPEG", round(rng.uniform(40, 80)))


def _crop_bright_jpeg(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    out = _drawn(_drawn(img, "crop_resize", rng), "brightness", rng)
    return _encoded(out, "JPEG", round(rng.uniform(50, 85)))


def _rotate_noise(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _drawn(_drawn(img, "rotate", rng), "gaussian", rng)


def _blur_contrast(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _drawn(_drawn(img, "blur", rng), "contrast", rng)


#: Kinds in no family of :data:`KINDS`, nor in any range of one: no default was chosen
#: on them (``redundancy.py --copies unseen``).  The last four combine kinds of
#: :data:`KINDS`, each at a strength drawn from its range.
UNSEEN_KINDS: dict[str, CopyKind] = {
    k.name: k
    for k in (
        _kind("shift_far", "geometric", 0.10, 0.15, _shift),
        _kind("perspective", "geometric", 0.04, 0.10, _perspective),
        _kind("shear", "geometric", 0.05, 0.15, _shear),
        _kind("vignette", "filtering", 0.2, 0.5, _vignette),
        _kind("pixelate", "filtering", 0.4, 0.7, _pixelate),
        _kind("jpeg_low", "compression", 5, 15, _jpeg),
        _kind("solarize", "photometric", 200, 240, _solarize),
        _kind("equalize", "photometric", 0, 0, _equalize),
        _kind("reshare", "combined", 0.6, 0.9, _reshare),
        _kind("crop_bright_jpeg", "combined", 0, 0, _crop_bright_jpeg),
        _kind("rotate_noise", "combined", 0, 0, _rotate_noise),
        _kind("blur_contrast", "combined", 0, 0, _blur_contrast),
    )
}


def _as_pil(image: np.ndarray, mode: str) -> Image.Image:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be uint8 (h, w), (h, w, 3) or (h, w, 4); got {a.shape}")
    if a.ndim == 3 and a.shape[2] == 4:  # composite over white, as dcsi reads RGBA
        alpha = a[..., 3:].astype(np.float64) / 255.0
        a = np.rint(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    img = Image.fromarray(a)
    return img.convert(mode) if img.mode != mode else img


def make_copy(
    image: np.ndarray, kind: str, rng: np.random.Generator, *, mode: str | None = None
) -> tuple[np.ndarray, float]:
    """One copy of ``image`` of the given kind.

    Parameters
    ----------
    image : ndarray of shape (h, w), (h, w, 3) or (h, w, 4), uint8
    kind : str
        A key of :data:`KINDS` or :data:`UNSEEN_KINDS`.
    rng : numpy Generator
        Draws the strength (uniform in the kind's range) and any other choice.
    mode : {"L", "RGB"}, default=None
        Mode of the copy; None: "L" for a grey image, else "RGB".

    Returns
    -------
    copy : ndarray of shape (h, w) or (h, w, 3), uint8
    strength : float
    """
    spec = KINDS[kind] if kind in KINDS else UNSEEN_KINDS[kind]
    mode = mode or ("L" if np.asarray(image).ndim == 2 else "RGB")
    if spec.rgb and mode != "RGB":
        raise ValueError(f"copy kind {kind!r} needs colour; make copies with mode='RGB'")
    img = _as_pil(image, mode)
    strength = float(rng.uniform(spec.low, spec.high))
    out = spec.apply(img, strength, rng)
    if out.mode != mode:
        out = out.convert(mode)
    if out.size != img.size:
        out = out.resize(img.size, Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8), strength


@dataclass(frozen=True)
class PlantedCopies:
    """Copies made by :func:`plant_copies`.

    Attributes
    ----------
    copies : ndarray of shape (m, h, w) or (m, h, w, 3), uint8
    originals : ndarray of shape (m,), int64
        Index of each copy's original in the images given.
    kinds : list of str
    families : list of str
    strengths : ndarray of shape (m,), float64
    """

    copies: np.ndarray
    originals: np.ndarray
    kinds: list[str]
    families: list[str]
    strengths: np.ndarray


def plant_copies(
    images: np.ndarray,
    originals: Sequence[int],
    *,
    kinds: Sequence[str] | None = None,
    flips: bool = False,
    mode: str | None = None,
    seed: int = 0,
) -> PlantedCopies:
    """One copy of each listed original, of a kind drawn at random (seeded).

    Parameters
    ----------
    images : ndarray of shape (n, h, w), (n, h, w, 3) or (n, h, w, 4), uint8
    originals : sequence of int
        Which images get a copy (one each, in this order).
    kinds : sequence of str, default=None
        Kinds to draw from; None: every kind that fits ``mode``, without flips unless
        ``flips=True``.
    flips : bool, default=False
    mode : {"L", "RGB"}, default=None
        None: "L" for grey images, else "RGB".  "RGB" on grey images allows the
        colour kinds.
    seed : int, default=0

    Returns
    -------
    PlantedCopies
    """
    images = np.asarray(images)
    mode = mode or ("L" if images.ndim == 3 else "RGB")
    if kinds is None:
        kinds = [
            k.name for k in KINDS.values() if (flips or not k.flip) and (mode == "RGB" or not k.rgb)
        ]
    rng = np.random.default_rng(seed)
    chosen = [str(k) for k in rng.choice(list(kinds), size=len(originals))]
    copies, strengths = [], []
    for i, kind in zip(originals, chosen, strict=True):
        c, s = make_copy(images[int(i)], kind, rng, mode=mode)
        copies.append(c)
        strengths.append(s)
    return PlantedCopies(
        copies=np.stack(copies),
        originals=np.asarray(originals, dtype=np.int64),
        kinds=chosen,
        families=[KINDS[k].family for k in chosen],
        strengths=np.asarray(strengths),
    )
