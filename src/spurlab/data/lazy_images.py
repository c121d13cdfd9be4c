"""Images held as files and decoded on demand: bounded memory at any dataset size.

:class:`LazyImages` stands in for ``GroupedDataset.x`` when a split is a list of
image files. It behaves like a read-only float32 array of shape (N, C, S, S):
``len``, ``shape``, ``dtype``, ``ndim`` and indexing by an int, a slice, an int
array or a boolean mask return a float32 ndarray decoded, resized and
transformed for just those rows (on a thread pool: PIL releases the GIL while
decoding). Nothing of the whole split is ever held as floats.

With a cache folder, the decoded uint8 images (after resizing, before
normalisation and augmentation) are written to one file per split, read
back through ``np.memmap``: the first full pass fills a temporary file, which
is renamed onto its final name once every row is in, so a second epoch or a
second run reads bytes instead of decoding JPEGs.

:class:`UInt8Images` does the same for images already in memory as uint8
(CIFAR): they stay uint8 and become floats in [0, 1] one batch at a time.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spurlab.errors import DataNotFoundError, SpurlabError
from spurlab.params import Boolean, Interval, Options, Text, check_params, optional, positive_int
from spurlab.utils import available_memory_bytes

# mean/std per channel applied to images in [0, 1]; "none" leaves them in [0, 1] (what spurlab's embedders expect)
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # EfficientNet-Lite: [-1, 1]
}
RESIZE_MODES = ("squash", "crop")
MAX_WORKERS = 8
# the parameters every dataset of image files takes (Waterbirds, CelebA, image-table)
FILE_IMAGE_CONSTRAINTS = {
    "image_size": Interval(int, 8, 1024), "limit": optional(positive_int()), "normalize": Options(*NORMALIZATIONS),
    "resize": Options(*RESIZE_MODES), "augment": Boolean(), "cache": optional(Text()),
    "workers": optional(positive_int(256)),
}
TRANSFORM_CONSTRAINTS = {"image_size": positive_int(), "normalize": Options(*NORMALIZATIONS),
                         "resize": Options(*RESIZE_MODES), "augment": Boolean(), "seed": Interval(int, 0, None)}


def default_workers() -> int:
    """Decoding threads: one per core this process may use, at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


# ------------------------------------------------------------------ the transform
@dataclass(frozen=True)
class ImageTransform:
    """How a file becomes an input: RGB, resized to ``image_size`` (``squash`` the whole picture, or
    ``crop``: shorter side to ``image_size`` then a centre crop), scaled to [0, 1] and normalised.

    ``augment`` adds train-time augmentation (random horizontal flip and a random shift of up to
    ``image_size // 8`` pixels, edge-padded), drawn from ``seed`` and a per-call counter: the same
    sequence of reads gives the same images.
    """

    image_size: int = 64
    normalize: str = "none"
    resize: str = "squash"
    augment: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # normalize: match your backbone's training
        check_params("ImageTransform", TRANSFORM_CONSTRAINTS,
                     {name: getattr(self, name) for name in TRANSFORM_CONSTRAINTS})

    @property
    def stored_key(self) -> str:
        """What the cached uint8 pixels depend on (normalisation and augmentation come after)."""
        return f"{self.image_size}-{self.resize}"

    def decode(self, path: Path) -> np.ndarray:
        """One file as uint8 (3, S, S); raises OSError/ValueError from PIL on a bad file."""
        from PIL import Image

        size = int(self.image_size)
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size (much faster)
            im = im.convert("RGB")
            if self.resize == "crop":
                im = _centre_crop(im, size)
            else:
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)

    def to_float(self, pixels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 (N, C, S, S) -> float32, augmented when ``rng`` is given, then normalised."""
        x = pixels.astype(np.float32)
        x *= 1.0 / 255.0
        if rng is not None:
            x = _augment(x, rng)
        stats = NORMALIZATIONS[self.normalize]
        if stats is not None:
            mean, std = (np.asarray(v, np.float32)[None, :, None, None] for v in stats)
            if x.shape[1] == 1:
                mean, std = mean[:, :1], std[:, :1]
            x -= mean
            x /= std
        return x


def _centre_crop(im, size: int):
    from PIL import Image

    scale = size / min(im.size)
    w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
    im = im.resize((w, h), Image.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flips and shifts (edge padding), one draw per image."""
    n, _, h, w = x.shape
    flip = rng.random(n) < 0.5
    x[flip] = x[flip, :, :, ::-1]
    pad = max(1, min(h, w) // 8)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    for i in range(n):
        x[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return x


# ------------------------------------------------------------------ the on-disk cache
class DecodedCache:
    """Decoded uint8 images of one split in one file, ``(N, 3, S, S)``, read through ``np.memmap``.

    Rows are written to a temporary file as they are decoded; when every row is in, the file is
    renamed onto ``path`` (so an interrupted pass never leaves a half-written cache behind).
    Each read or write maps the file for that batch only, so touched pages do not pile up in the
    process's resident memory over an epoch.
    """

    def __init__(self, path: Path, n: int, image_size: int):
        self.path = Path(path)
        self.shape = (int(n), 3, int(image_size), int(image_size))
        self._lock = threading.Lock()
        self._tmp: Path | None = None
        self._filled: np.ndarray | None = None
        self.complete = self.path.is_file() and self.path.stat().st_size == int(np.prod(self.shape))

    def read(self, rows: np.ndarray) -> np.ndarray:
        data = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        try:
            return np.array(data[rows])
        finally:
            del data

    def write(self, rows: np.ndarray, pixels: np.ndarray) -> None:
        """Store decoded rows; publish the file once all rows have been written."""
        if self.complete:
            return
        with self._lock:
            if self._tmp is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
                os.ftruncate(fd, int(np.prod(self.shape)))
                os.close(fd)
                self._tmp, self._filled = Path(tmp), np.zeros(self.shape[0], dtype=bool)
            data = np.memmap(self._tmp, dtype=np.uint8, mode="r+", shape=self.shape)
            data[rows] = pixels
            data.flush()
            del data
            self._filled[rows] = True
            if self._filled.all():
                os.replace(self._tmp, self.path)
                self._tmp, self._filled, self.complete = None, None, True

    def discard(self) -> None:
        """Remove an unfinished temporary file (called when the owner goes away)."""
        tmp, self._tmp = self._tmp, None
        if tmp is not None and tmp.exists():
            tmp.unlink()

    def __del__(self) -> None:
        try:
            self.discard()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def cache_file(cache_dir: str | os.PathLike, files: Sequence[str], transform: ImageTransform,
               label: str = "images") -> Path:
    """The cache file of a list of image files under ``cache_dir``: keyed by the files (paths, sizes,
    modification times) and the pixel-level transform."""
    digest = hashlib.sha256(transform.stored_key.encode())
    for name in files:
        try:
            st = os.stat(name)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{name}\0{stamp}\n".encode())
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)
    return Path(cache_dir) / f"{safe}-{len(files)}x{transform.image_size}-{digest.hexdigest()[:16]}.u8"


# ------------------------------------------------------------------ the lazy array
@dataclass
class DecodeStats:
    """Counters shared by a split and its subsets (what the tests and benchmarks read)."""

    decoded: int = 0
    cache_hits: int = 0


class LazyArray(ABC):
    """Shared array behaviour of the lazy inputs: shape, dtype, indexing -> float32 batches."""

    dtype = np.dtype(np.float32)
    is_lazy = True

    def __init__(self, rows: np.ndarray, item_shape: tuple[int, ...]):
        self._rows = np.asarray(rows, dtype=np.int64)
        self._item_shape = tuple(int(s) for s in item_shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._rows), *self._item_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes_float32(self) -> int:
        """What the whole split would take as a float32 array (never allocated here)."""
        return self.size * 4

    def __len__(self) -> int:
        return len(self._rows)

    def _positions(self, key: Any) -> np.ndarray | int:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            k = int(key)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for {n} images")
            return k % n
        if isinstance(key, slice):
            return np.arange(n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} does not match {n} images")
            return np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"images are indexed by ints, slices or masks, not {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of bounds for {n} images")
        return idx % n if idx.size else idx

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        pos = self._positions(key)
        if isinstance(pos, int):
            batch = self._load(np.asarray([pos]))[0]
        else:
            batch = self._load(pos)
        return batch[(slice(None),) * (0 if isinstance(pos, int) else 1) + rest] if rest else batch

    def select(self, key: Any):
        """A lazy view of some rows (what ``GroupedDataset.subset`` uses): nothing is decoded."""
        pos = self._positions(key)
        pos = np.atleast_1d(pos)
        return self._view(self._rows[pos])

    def __iter__(self):
        for start in range(0, len(self), 256):
            yield from self[start:start + 256]

    def __array__(self, dtype=None, copy=None):
        """The whole split as one array: refused when it would not fit in memory."""
        need = self.nbytes_float32
        available = available_memory_bytes()
        if available is not None and need > 0.8 * available:
            raise SpurlabError(f"materializing {len(self)} images as float32 needs {need / 2**30:.1f} GiB, "
                               f"{available / 2**30:.1f} GiB is available",
                               hint="index the images per batch (x[i:i + batch]) instead of as a whole")
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def min(self) -> float:
        return float(min((self[s:s + 512].min() for s in range(0, len(self), 512)), default=np.nan))

    def max(self) -> float:
        return float(max((self[s:s + 512].max() for s in range(0, len(self), 512)), default=np.nan))

    @abstractmethod
    def _load(self, positions: np.ndarray) -> np.ndarray:
        """Float32 images at ``positions`` (row numbers of this view)."""

    @abstractmethod
    def _view(self, rows: np.ndarray):
        """A lazy view of this array's ``rows``."""


class UInt8Images(LazyArray):
    """In-memory uint8 images (N, C, H, W) read as float32 in [0, 1] one batch at a time."""

    def __init__(self, pixels: np.ndarray, rows: np.ndarray | None = None):
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4:
            raise SpurlabError(f"UInt8Images takes uint8 (N, C, H, W) pixels, got {pixels.dtype} {pixels.shape}")
        self.pixels = pixels
        super().__init__(np.arange(len(pixels)) if rows is None else rows, pixels.shape[1:])

    def _load(self, positions: np.ndarray) -> np.ndarray:
        out = self.pixels[self._rows[positions]].astype(np.float32)
        out *= 1.0 / 255.0
        return out

    def _view(self, rows: np.ndarray) -> UInt8Images:
        return UInt8Images(self.pixels, rows)

    def uint8(self) -> np.ndarray:
        """The selected rows' raw pixels."""
        return self.pixels[self._rows]

    def __repr__(self) -> str:
        return f"UInt8Images(n={len(self)}, shape={self.shape})"


class LazyImages(LazyArray):
    """Image files decoded on demand into float32 (N, 3, S, S) batches.

    ``files`` are full paths; ``source_rows`` (optional) the table rows they came from (counted from 1
    after any header line) and ``source`` the table, both only for error messages. ``cache_dir`` turns
    on the decoded uint8 cache.
    """

    def __init__(self, files: Sequence[str | os.PathLike], transform: ImageTransform | None = None,
                 cache_dir: str | os.PathLike | None = None, source: str = "", source_rows: Sequence[int] | None = None,
                 workers: int | None = None, label: str = "images"):
        self.transform = transform or ImageTransform()
        self.files = np.asarray([os.fspath(f) for f in files], dtype=object)
        self.source = source
        self.source_rows = np.asarray(source_rows if source_rows is not None else np.arange(len(self.files)))
        self.workers = int(workers or default_workers())
        self.stats = DecodeStats()
        self.cache = (DecodedCache(cache_file(cache_dir, list(self.files), self.transform, label), len(self.files),
                                   self.transform.image_size) if cache_dir is not None else None)
        self._calls = 0
        self._pool: ThreadPoolExecutor | None = None
        self._shared = self  # subsets share decoding state (pool, cache, counters) with the split
        s = int(self.transform.image_size)
        super().__init__(np.arange(len(self.files)), (3, s, s))

    def check_files(self) -> None:
        """Every file exists (a cheap ``stat``, before anything is decoded)."""
        for i, name in enumerate(self.files):
            if not os.path.isfile(name):
                raise DataNotFoundError(f"{self._where(i)}image file missing: {name}",
                                        hint="fix the path (relative paths are read from the image root) "
                                             "or drop the row")

    def _where(self, i: int) -> str:
        row = self.source_rows[i]
        return f"{self.source}, row {row}: " if self.source else f"row {row}: "

    # -------------------------------------------------------- decoding
    def pixels(self, positions: np.ndarray) -> np.ndarray:
        """uint8 (k, 3, S, S) of the given positions (from the cache when it is complete)."""
        base = self._rows[np.asarray(positions, dtype=np.int64)]
        shared = self._shared
        cache = shared.cache
        if cache is not None and cache.complete:
            shared.stats.cache_hits += len(base)
            return cache.read(base)
        out = shared._decode(base)
        if cache is not None:
            cache.write(base, out)
        return out

    def _decode(self, base_rows: np.ndarray) -> np.ndarray:
        s = int(self.transform.image_size)
        out = np.empty((len(base_rows), 3, s, s), dtype=np.uint8)

        def one(k: int) -> None:
            i = int(base_rows[k])
            try:
                out[k] = self.transform.decode(Path(self.files[i]))
            except FileNotFoundError as exc:
                raise DataNotFoundError(f"{self._where(i)}image file missing: {self.files[i]}",
                                        hint="the table lists it; restore the file or drop the row") from exc
            except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated files
                raise SpurlabError(f"{self._where(i)}cannot read image {self.files[i]}: {exc}",
                                   hint="the file is not an image PIL can decode or is damaged; "
                                        "replace it or drop the row") from exc

        if len(base_rows) <= 2 or self.workers == 1:
            for k in range(len(base_rows)):
                one(k)
        else:
            list(self._executor().map(one, range(len(base_rows))))
        self.stats.decoded += len(base_rows)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="spurlab-decode")
        return self._pool

    def _load(self, positions: np.ndarray) -> np.ndarray:
        shared = self._shared
        rng = None
        if self.transform.augment:
            rng = np.random.default_rng([int(self.transform.seed), shared._calls])
            shared._calls += 1
        return self.transform.to_float(self.pixels(positions), rng)

    def _view(self, rows: np.ndarray) -> LazyImages:
        view = object.__new__(LazyImages)
        view.__dict__.update(self.__dict__)
        view._rows = np.asarray(rows, dtype=np.int64)
        return view

    def with_transform(self, **changes: Any) -> LazyImages:
        """The same files under another float-level transform (normalisation, augmentation, seed).
        Changing the image size or resize mode needs a new ``LazyImages``."""
        transform = replace(self.transform, **changes)
        if transform.stored_key != self.transform.stored_key:
            raise SpurlabError("with_transform changes normalisation and augmentation only",
                               hint="build a new dataset for another image_size or resize")
        view = self._view(self._rows)
        view.transform = transform
        return view

    def epoch(self, batch_size: int = 256):
        """Iterate over every row once in batches (e.g. to fill the cache)."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]

    def close(self) -> None:
        if self._shared._pool is not None:
            self._shared._pool.shutdown(wait=True)
            self._shared._pool = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None
        if state.get("_shared") is self:
            state["_shared"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._shared is None:
            self._shared = self

    def __repr__(self) -> str:
        cache = "none" if self.cache is None else ("complete" if self.cache.complete else "filling")
        return f"LazyImages(n={len(self)}, shape={self.shape}, cache={cache})"


class ConcatenatedRows(LazyArray):
    """Several arrays of the same item shape read as one (training set + selected pool rows):
    each batch is gathered from the parts it touches, nothing is stacked up front."""

    def __init__(self, parts: Sequence[Any]):
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise SpurlabError(f"cannot concatenate inputs of different item shapes {sorted(shapes)}",
                               hint="every part needs the same image size and channels")
        self.parts = list(parts)
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])
        super().__init__(np.arange(self._starts[-1]), shapes.pop())

    def _load(self, positions: np.ndarray) -> np.ndarray:
        base = self._rows[np.asarray(positions, dtype=np.int64)]
        out = np.empty((len(base), *self._item_shape), dtype=np.float32)
        which = np.searchsorted(self._starts, base, side="right") - 1
        for k in np.unique(which):
            here = which == k
            out[here] = self.parts[k][base[here] - self._starts[k]]
        return out

    def _view(self, rows: np.ndarray) -> ConcatenatedRows:
        view = object.__new__(ConcatenatedRows)
        view.__dict__.update(self.__dict__)
        view._rows = np.asarray(rows, dtype=np.int64)
        return view


def concat_rows(parts: Sequence[Any]) -> Any:
    """``np.concatenate(parts)`` for in-memory arrays; a lazy :class:`ConcatenatedRows` when any part is lazy."""
    if not any(is_lazy(p) for p in parts):
        return np.concatenate([np.asarray(p) for p in parts])
    return ConcatenatedRows(parts)


# ------------------------------------------------------------------ the loaders' helpers
def cache_folder(cache: str | os.PathLike | None, data_dir: Path) -> Path | None:
    """``cache=`` of the image datasets: none, ``auto`` (``DATA/decoded``) or a folder."""
    if cache in (None, "", False, "none"):
        return None
    return data_dir / "decoded" if cache in ("auto", True) else Path(str(cache)).expanduser()


def lazy_split_inputs(files: list[str], rows: np.ndarray, transform: ImageTransform, cache_dir: Path | None,
                      source: str, label: str, workers: int | None = None) -> LazyImages:
    """The lazy inputs of one split, after checking every file exists."""
    images = LazyImages(files, transform, cache_dir=cache_dir, source=source, source_rows=rows,
                        workers=workers, label=label)
    images.check_files()
    return images


def is_lazy(x: Any) -> bool:
    """True for the lazy image arrays of this module (index them per batch)."""
    return isinstance(x, LazyArray)


def take_rows(x: Any, indices: np.ndarray) -> Any:
    """``x[indices]`` for arrays; a lazy view (nothing decoded) for lazy inputs."""
    return x.select(indices) if is_lazy(x) else x[indices]
