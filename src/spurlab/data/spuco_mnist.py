"""SpuCoMNIST rebuilt from its description (Joshi et al., "Towards Mitigating Spurious Correlations in
the Wild: A Benchmark and a more Realistic Dataset", 2023; the SpuCo library's ``SpuCoMNIST``).

* **Classes** are groups of MNIST digits, by default the five pairs 0-1, 2-3, 4-5, 6-7, 8-9.
* **Spurious attribute**: the background colour, one of ``K`` colours (``K`` = number of classes)
  spaced evenly in hue. Colour ``c`` is the one aligned with class ``c``.
* **Difficulty** (SpuCo's three *magnitude* levels): the colour fills every background pixel
  (``easy``, large magnitude), only background pixels of the top-left 4x4 square (``medium``) or of
  the top-left 2x2 square (``hard``, small magnitude). A pixel is background when MNIST has it at 0.
* **Train** (MNIST train minus the validation split): in every class a share ``strength`` of the
  images (rounded down) gets the class's own colour; the rest get the other colours in turn, by
  their position in a random order (so the minority groups are small and of unequal size:
  about 6-20 images each at strength 0.995).
* **Val** (carved from MNIST train) and **test** (MNIST test) are group-balanced: within every class
  the colours are assigned in turn, so each (class, colour) group holds ``n_class / K`` images.

Images are 3 x 28 x 28 uint8 (the digit stays grey; the trainer scales uint8 to [0, 1]), 165 MB for
all 70,000 rather than 660 MB as float32.

Deliberate differences from SpuCo's code: the validation split is a seeded stratified share
(``val_fraction``, 0.2 = 12,000 images) instead of SpuCo's stored list of 11,996 indices; the
palette is the HSV hue circle (``colorsys``) instead of matplotlib's ``hsv`` colour map (which is a
piecewise-linear approximation of it: the two differ by at most about 0.03 per channel).
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from spurlab.data.dataset_registry import register_dataset, register_preset
from spurlab.data.grouped import DatasetSplits, GroupedDataset
from spurlab.data.images import MNIST_CLASSES, map_classes, parse_classes, read_idx_dataset, task_class_names
from spurlab.errors import SpurlabError
from spurlab.params import Boolean, Interval, Options, Text, check_params, optional, positive_int, probability

DIGIT_PAIRS = "0,1/2,3/4,5/6,7/8,9"
# side of the top-left square the colour fills (None: the whole background)
DIFFICULTY_SQUARE = {"easy": None, "medium": 4, "hard": 2}
DIFFICULTY_ALIASES = {"magnitude_easy": "easy", "magnitude_medium": "medium", "magnitude_hard": "hard",
                      "large": "easy", "small": "hard"}
CHUNK = 8192  # images coloured at a time (bounds the temporaries)


def hue_palette(n_colours: int) -> np.ndarray:
    """``(n_colours, 3)`` RGB in [0, 1]: hues ``i / n_colours`` at full saturation and value."""
    return np.array([colorsys.hsv_to_rgb(i / n_colours, 1.0, 1.0) for i in range(n_colours)], dtype=np.float64)


def resolve_difficulty(difficulty: str) -> str:
    name = DIFFICULTY_ALIASES.get(str(difficulty).lower(), str(difficulty).lower())
    if name not in DIFFICULTY_SQUARE:
        raise SpurlabError(f"unknown difficulty {difficulty!r}",
                           hint="use easy (whole background), medium (4x4 corner) or hard (2x2 corner)")
    return name


def colour_backgrounds(images: np.ndarray, attrs: np.ndarray, palette: np.ndarray, difficulty: str) -> np.ndarray:
    """Grey ``(N, H, W)`` uint8 digits -> ``(N, 3, H, W)`` uint8 with background colour ``palette[attrs]``."""
    n, h, w = images.shape
    region = np.zeros((h, w), dtype=bool)
    side = DIFFICULTY_SQUARE[resolve_difficulty(difficulty)]
    if side is None:
        region[:] = True
    else:
        region[:side, :side] = True
    colours = np.round(palette * 255).astype(np.uint8)  # (K, 3)
    out = np.empty((n, 3, h, w), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        part = images[start:start + CHUNK]
        background = ((part == 0) & region)[:, None]  # (n, 1, H, W)
        fill = colours[attrs[start:start + CHUNK]][:, :, None, None]  # (n, 3, 1, 1)
        out[start:start + CHUNK] = np.where(background, fill, part[:, None])
    return out


def correlated_attributes(labels: np.ndarray, n_colours: int, strength: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Per class: ``floor(strength * n_c)`` images get the class's colour, the others the other colours in
    turn by their position in a random order (SpuCo's construction)."""
    attrs = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_aligned = int(strength * len(members))
        others = np.array([k for k in range(n_colours) if k != c])
        position = np.arange(len(members))
        aligned = np.zeros(len(members), dtype=bool)
        aligned[rng.permutation(len(members))[:n_aligned]] = True
        colour = np.where(aligned, c, others[position % len(others)])
        attrs[members] = colour[rng.permutation(len(members))]
    return attrs


def balanced_attributes(labels: np.ndarray, n_colours: int, rng: np.random.Generator) -> np.ndarray:
    """Per class, colours ``0..K-1`` in turn (then shuffled): every (class, colour) group equally large."""
    attrs = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        attrs[members] = rng.permutation(np.arange(len(members)) % n_colours)
    return attrs


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    held = np.concatenate([rng.choice(np.flatnonzero(labels == c), size=int(round(fraction * np.sum(labels == c))),
                                      replace=False) for c in np.unique(labels)])
    held = np.sort(held)
    return np.setdiff1d(np.arange(len(labels)), held), held


def _limit(n: int | None, total: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``total`` rows, or a seeded sample of ``n`` (checked >= 1 by SPUCO_CONSTRAINTS)."""
    if n is None or n >= total:
        return np.arange(total)
    return np.sort(rng.choice(total, size=n, replace=False))


# What spuco-mnist accepts (spurlab.params): declared to the registry and checked again by the builder itself.
SPUCO_CONSTRAINTS = {"classes": Text(), "strength": probability(closed="neither"),
                     "difficulty": Options(*DIFFICULTY_SQUARE, *DIFFICULTY_ALIASES),
                     "val_fraction": probability(closed="neither"), "n_train": optional(positive_int()),
                     "n_test": optional(positive_int()), "download": Boolean(), "seed": Interval(int, 0)}


@register_dataset("spuco-mnist", "SpuCoMNIST rebuilt: digit-pair classes, background colour as the spurious "
                  "attribute at strength 0.995 (train), group-balanced val (from MNIST train) and test",
                  kind="image", needs_files=True, constraints=SPUCO_CONSTRAINTS)
def build_spuco_mnist(data_dir: Path, classes: str = DIGIT_PAIRS, strength: float = 0.995,
                      difficulty: str = "easy", val_fraction: float = 0.2, n_train: int | None = None,
                      n_test: int | None = None, download: bool = False, seed: int = 0) -> DatasetSplits:
    """The three splits; ``n_train``/``n_test`` subsample MNIST train/test first (quick runs, tests)."""
    strength, val_fraction, n_train, n_test = check_params(
        "build_spuco_mnist", SPUCO_CONSTRAINTS,
        {"strength": strength, "val_fraction": val_fraction, "n_train": n_train, "n_test": n_test}).values()
    difficulty = resolve_difficulty(difficulty)
    groups = parse_classes(classes, 10)
    names = task_class_names(groups, MNIST_CLASSES)
    k = len(groups)
    rng = np.random.default_rng(seed)
    raw = read_idx_dataset(Path(data_dir), "MNIST", download=download)
    train_img, train_lbl = map_classes(*raw["train"], groups)
    test_img, test_lbl = map_classes(*raw["test"], groups)
    keep = _limit(n_train, len(train_lbl), rng)
    train_img, train_lbl = train_img[keep], train_lbl[keep]
    keep = _limit(n_test, len(test_lbl), rng)
    test_img, test_lbl = test_img[keep], test_lbl[keep]
    tr, va = _stratified_split(train_lbl, float(val_fraction), rng)
    parts = {"train": (train_img[tr], train_lbl[tr]), "val": (train_img[va], train_lbl[va]),
             "test": (test_img, test_lbl)}
    palette = hue_palette(k)
    attr_names = tuple(f"hue{round(360 * i / k)}" for i in range(k))
    splits = {}
    for split, (img, lbl) in parts.items():
        a = (correlated_attributes(lbl, k, strength, rng) if split == "train"
             else balanced_attributes(lbl, k, rng))
        x = colour_backgrounds(np.asarray(img, dtype=np.uint8), a, palette, difficulty)
        splits[split] = GroupedDataset(x=x, y=lbl, a=a, class_names=names, attr_names=attr_names, split=split)
    return DatasetSplits(splits, name="spuco-mnist")


register_preset("spuco-mnist-medium", "spuco-mnist", "SpuCoMNIST, medium magnitude: colour in the top-left 4x4 "
                "background pixels only", difficulty="medium")
register_preset("spuco-mnist-hard", "spuco-mnist", "SpuCoMNIST, small magnitude: colour in the top-left 2x2 "
                "background pixels only", difficulty="hard")
