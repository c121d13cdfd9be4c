"""Spurious features injected into any image array and the group plans behind them.

Images are float arrays ``(N, C, H, W)`` in [0, 1]. A *group plan* decides,
per example, the spurious attribute ``a`` from the class ``y`` and a
correlation (``a == y`` with probability p, exactly up to rounding, per class);
an *injection* then draws attribute ``a`` into the image (a colour, a patch,
a texture, ...). Attribute ``c`` is the one aligned with class ``c``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.params import AnyOf, Boolean, Interval, Options, check_param, optional, positive_int, probability

# Distinct RGB colours; attribute c uses PALETTE[c].
PALETTE = np.array([
    [0.90, 0.10, 0.10],  # red
    [0.10, 0.75, 0.20],  # green
    [0.15, 0.35, 0.95],  # blue
    [0.95, 0.85, 0.10],  # yellow
    [0.85, 0.20, 0.85],  # magenta
    [0.10, 0.85, 0.85],  # cyan
    [1.00, 0.55, 0.05],  # orange
    [0.55, 0.30, 0.10],  # brown
    [0.60, 0.60, 0.60],  # grey
    [0.50, 0.10, 0.60],  # purple
])
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "brown", "grey", "purple")
TEXTURE_NAMES = ("h-stripes", "v-stripes", "checkerboard", "diagonal", "dots")
BRICK_RED = np.array([150, 50, 50]) / 255.0


# ------------------------------------------------------------------ group plans
def resolve_correlation(correlation: float | str, train_p: float, n_attrs: int) -> float | None:
    """``"same"`` -> p, ``"reversed"`` -> 1 - p, ``"balanced"`` -> None (uniform), else a float."""
    key = correlation.strip().lower() if isinstance(correlation, str) else correlation
    correlation = check_param("resolve_correlation", "correlation", CORRELATION, key)
    if correlation == "same":
        return train_p
    if correlation == "reversed":
        return 1.0 - train_p
    return None if correlation == "balanced" else correlation


def _spread(n: int, k: int) -> np.ndarray:
    """``n`` items spread over ``k`` bins as evenly as possible."""
    base, extra = divmod(n, k)
    return np.array([base + (i < extra) for i in range(k)], dtype=np.int64)


def plan_attributes(y: np.ndarray, n_attrs: int, correlation: float | None,
                    rng: np.random.Generator) -> np.ndarray:
    """Attribute per example: in each class c, exactly ``round(p * n_c)`` examples get
    ``a = c`` and the rest are spread evenly over the other attributes. ``None``
    spreads every class evenly over all attributes (no correlation)."""
    a = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if correlation is None:
            counts = _spread(len(idx), n_attrs)
            values = np.arange(n_attrs)
        else:
            if c >= n_attrs:
                raise SpurlabError(f"class {c} has no aligned attribute (only {n_attrs} attribute values)")
            n_aligned = int(round(correlation * len(idx)))
            others = [v for v in range(n_attrs) if v != c]
            if not others and n_aligned < len(idx):
                raise SpurlabError("a correlation below 1 needs at least two attribute values")
            counts = np.concatenate([[n_aligned], _spread(len(idx) - n_aligned, max(len(others), 1))[: len(others)]])
            values = np.array([c, *others])
        a[idx] = np.repeat(values, counts)
    return a


def plan_group_sizes(y: np.ndarray, n_attrs: int, group_sizes: dict[tuple[int, int], int],
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick examples for explicit ``{(y, a): count}`` sizes; returns ``(indices, a)``."""
    chosen, attrs = [], []
    for c in np.unique(y):
        wanted = {a: int(n) for (yy, a), n in group_sizes.items() if yy == c}
        pool = rng.permutation(np.flatnonzero(y == c))
        need = sum(wanted.values())
        if need > len(pool):
            raise SpurlabError(f"group sizes ask for {need} examples of class {c}, only {len(pool)} exist",
                               hint="lower the requested group sizes")
        start = 0
        for a_value, n in sorted(wanted.items()):
            if not 0 <= a_value < n_attrs:
                raise SpurlabError(f"attribute {a_value} out of range 0..{n_attrs - 1}")
            chosen.append(pool[start:start + n])
            attrs.append(np.full(n, a_value))
            start += n
    for (yy, _a), n in group_sizes.items():
        if yy not in set(np.unique(y).tolist()) and n > 0:
            raise SpurlabError(f"group sizes name class {yy}, which has no examples")
    idx = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    order = np.argsort(idx, kind="stable")
    return idx[order], np.concatenate(attrs)[order].astype(np.int64)


# ------------------------------------------------------------------ drawing
def to_rgb(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return x.copy()
    if x.shape[1] == 1:
        return np.repeat(x, 3, axis=1)
    raise SpurlabError(f"expected 1 or 3 channels, got {x.shape[1]}")


def _colours(a: np.ndarray, colours: np.ndarray | None) -> np.ndarray:
    table = PALETTE if colours is None else np.asarray(colours, dtype=np.float32)
    if a.max(initial=0) >= len(table):
        raise SpurlabError(f"attribute {a.max()} has no colour; {len(table)} colours are defined",
                           hint="pass more colours")
    return table[a].astype(np.float32)


def _luminance(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1, keepdims=True)


def foreground_colour(x, a, magnitude=1.0, colours=None, **_):
    """Colour the foreground (the digit) with the attribute's colour."""
    col = _colours(a, colours)[:, :, None, None]
    lum = _luminance(x)
    return np.clip(lum * (1 - magnitude + magnitude * col), 0, 1)


def background_colour(x, a, magnitude=1.0, colours=None, **_):
    """Fill the background (dark pixels) with the attribute's colour."""
    col = _colours(a, colours)[:, :, None, None]
    rgb = to_rgb(x)
    lum = _luminance(x)
    return np.clip(rgb + (1 - lum) * magnitude * col, 0, 1)


def patch(x, a, magnitude=1.0, colours=None, patch_size=None, **_):
    """A square of the attribute's colour in the top-left corner."""
    rgb = to_rgb(x)
    s = patch_size or max(2, x.shape[-1] // 4)
    rgb[:, :, :s, :s] = magnitude * _colours(a, colours)[:, :, None, None]
    return np.clip(rgb, 0, 1)


def line(x, a, magnitude=1.0, colours=None, line_width=None, **_):
    """A horizontal line of the attribute's colour across the top of the image."""
    rgb = to_rgb(x)
    w = line_width or max(1, x.shape[-2] // 14)
    rgb[:, :, :w, :] = magnitude * _colours(a, colours)[:, :, None, None]
    return np.clip(rgb, 0, 1)


def padding(x, a, magnitude=1.0, colours=None, pad_width=4, **_):
    """Pad the image with ``pad_width`` pixels of the attribute's colour."""
    rgb = to_rgb(x)
    n, c, h, w = rgb.shape
    col = magnitude * _colours(a, colours)[:, :, None, None]
    out = np.broadcast_to(col, (n, c, h + 2 * pad_width, w + 2 * pad_width)).copy()
    out[:, :, pad_width:pad_width + h, pad_width:pad_width + w] = rgb
    return np.clip(out, 0, 1)


def pad_constant(x: np.ndarray, width: int, colour=BRICK_RED) -> np.ndarray:
    """Pad every image with one colour (feature-contamination's brick-red padding)."""
    return padding(x, np.zeros(len(x), np.int64), colours=np.asarray([colour]), pad_width=width)


def noise_frame(x, a=None, frame_width=10, seed=0, zero_core=False, **_):
    """Surround the image with a frame of i.i.d. U[0, 1] pixels (label-independent).

    ``zero_core=True`` gives the *spurious query*: the frame kept, the image zeroed."""
    rng = np.random.default_rng(seed)
    n, c, h, w = x.shape
    out = rng.uniform(0.0, 1.0, size=(n, c, h + 2 * frame_width, w + 2 * frame_width)).astype(np.float32)
    out[:, :, frame_width:frame_width + h, frame_width:frame_width + w] = 0.0 if zero_core else x
    return out


def _texture_bank(h: int, w: int) -> np.ndarray:
    r, c = np.mgrid[0:h, 0:w]
    period = max(2, h // 7)
    return np.stack([
        ((r // period) % 2).astype(np.float32),                 # horizontal stripes
        ((c // period) % 2).astype(np.float32),                 # vertical stripes
        (((r // period) + (c // period)) % 2).astype(np.float32),  # checkerboard
        (((r + c) // period) % 2).astype(np.float32),           # diagonal stripes
        ((r % period == 0) & (c % period == 0)).astype(np.float32),  # dots
    ])


def texture(x, a, magnitude=0.6, **_):
    """Put a per-attribute texture (stripes, checkerboard, ...) in the background."""
    bank = _texture_bank(*x.shape[-2:])
    if a.max(initial=0) >= len(bank):
        raise SpurlabError(f"texture supports at most {len(bank)} attribute values")
    tex = bank[a][:, None]
    lum = _luminance(x)
    return np.clip(x + (1 - lum) * magnitude * tex, 0, 1).astype(np.float32)


INJECTIONS: dict[str, Callable[..., np.ndarray]] = {
    "foreground_colour": foreground_colour,
    "background_colour": background_colour,
    "patch": patch,
    "line": line,
    "padding": padding,
    "noise_frame": noise_frame,
    "texture": texture,
}
# Options of the drawing functions that image datasets pass through.
INJECTION_OPTIONS = ("colours", "patch_size", "line_width", "pad_width", "frame_width", "zero_core")
# What the image datasets' parameters accept, and those that act only with a spurious injection.
CORRELATION = AnyOf(probability(), Options("same", "reversed", "balanced"))
IMAGE_CONSTRAINTS = {
    "spurious": optional(Options(*INJECTIONS)),
    "p": probability(closed="neither"),
    "val_correlation": CORRELATION,
    "test_correlation": CORRELATION,
    "magnitude": Interval(float, 0, None),
    "val_fraction": Interval(float, 0, 1, closed="left"),
    "test_fraction": probability(closed="neither"),
    "n_train": optional(positive_int()),
    "n_test": optional(positive_int()),
    "download": Boolean(),
    "patch_size": optional(positive_int()),
    "line_width": optional(positive_int()),
    "pad_width": optional(Interval(int, 0, 10_000)),
    "frame_width": optional(Interval(int, 0, 10_000)),
    "zero_core": optional(Boolean()),
}
IMAGE_REQUIRES = {name: "spurious" for name in ("p", "val_correlation", "test_correlation", "magnitude",
                                                 *INJECTION_OPTIONS)}
# Injections whose spurious feature does not depend on an attribute.
ATTRIBUTE_FREE = {"noise_frame"}


def attribute_names(kind: str, n_attrs: int) -> tuple[str, ...]:
    """Readable attribute values, e.g. ``patch=red``."""
    names = TEXTURE_NAMES if kind == "texture" else COLOUR_NAMES
    return tuple(f"{kind}={names[i]}" if i < len(names) else f"{kind}={i}" for i in range(n_attrs))


def inject(x: np.ndarray, a: np.ndarray | None, kind: str, **options: Any) -> np.ndarray:
    """Draw spurious feature ``kind`` for attributes ``a`` into images ``x``."""
    if kind not in INJECTIONS:
        raise UnknownNameError("spurious injection", kind, list(INJECTIONS))
    if x.ndim != 4:
        raise SpurlabError(f"injections need images (N, C, H, W), got shape {x.shape}")
    return INJECTIONS[kind](x, a, **options).astype(np.float32)
