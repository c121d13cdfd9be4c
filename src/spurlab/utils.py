"""Small shared utilities: seeding, devices, atomic writes, progress, validation."""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from spurlab.errors import SpurlabError
from spurlab.params import Refusal, label_array

T = TypeVar("T")


# ---------------------------------------------------------------- randomness
def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator for local use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return np.random.default_rng(seed)


def torch_generator(seed: int, device: str = "cpu"):
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


# ---------------------------------------------------------------- devices
def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; validates the rest."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpurlabError(
            f"device {device!r} was requested but CUDA is not available",
            hint="use --device auto or --device cpu",
        )
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise SpurlabError(f"unknown device {device!r}", hint="use auto, cpu or cuda[:N]")
    return device


# ---------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename onto it only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(getattr(obj, "label", None), str):  # a model choice (ModelSpec) in a config
        return obj.label
    if callable(obj) and not isinstance(obj, type):  # a model factory or module given in a config
        return f"<{type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}>"
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


# ---------------------------------------------------------------- progress
_STARTED = time.perf_counter()
_LINES = {"last": 0.0}  # when the last progress line was printed
LINE_EVERY_S = 10.0  # plain-lines mode: a loop's progress at most this often (step messages always print)
LINE_MAX_GAP_S = 60.0  # ... and at least this often in a long loop, even between tenths (shows it is alive)


def progress_mode() -> str:
    """``"bar"`` on a terminal, ``"lines"`` (plain timed lines) when stderr is a pipe, a file or CI, ``"off"`` with
    ``--quiet`` (``SPURLAB_QUIET``) or under pytest. ``SPURLAB_PROGRESS=bar|lines|off`` overrides."""
    forced = os.environ.get("SPURLAB_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    if os.environ.get("SPURLAB_QUIET") or "PYTEST_CURRENT_TEST" in os.environ:
        return "off"
    return "bar" if sys.stderr.isatty() and not os.environ.get("CI") else "lines"


def show_progress() -> bool:
    """Whether progress is shown at all (a bar or plain lines)."""
    return progress_mode() != "off"


def _line(message: str) -> None:
    _LINES["last"] = now = time.perf_counter()
    print(f"[spurlab {now - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], description: str = "", total: int | None = None,
             each: bool = False) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal; elsewhere a timed line at a tenth of the way at most every
    ``LINE_EVERY_S`` seconds (short loops stay silent) and at least every ``LINE_MAX_GAP_S`` seconds in a slow
    loop, or after every item with ``each=True`` (the steps of a command, e.g. a sweep's runs); silently with
    ``--quiet``."""
    mode = progress_mode()
    if mode == "off":
        yield from iterable
        return
    if mode == "bar":
        from rich.progress import track

        yield from track(iterable, description=description, total=total, transient=True)
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    every = max(1, total // 10) if total else 1
    done = 0
    for item in iterable:
        yield item
        done += 1
        since = time.perf_counter() - _LINES["last"]
        if each or (done % every == 0 and since >= LINE_EVERY_S) or since >= LINE_MAX_GAP_S:
            _line(f"{description} {done}/{total or '?'}")


def log(message: str) -> None:
    """One status line on stderr with the time since start (a terminal, a pipe or a log file; not with --quiet)."""
    if show_progress():
        message = message.removeprefix("[spurlab] ")
        _line(message)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside the block (unchanged when ``n`` is None), then restored."""
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_memory_bytes() -> int | None:
    """Memory the OS can give this process now (``MemAvailable`` on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array from an array-like or a torch tensor on any device (GPU tensors are copied back)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def signed_labels(y: Any) -> np.ndarray:
    """Binary labels, class indices {0, 1} or signs {-1, +1} (any shape, array or tensor), as float64 signs."""
    y = as_numpy(y, np.float64)
    values = set(np.unique(y).tolist())
    if values <= {-1.0, 1.0}:
        return y
    if values <= {0.0, 1.0}:
        return 2.0 * y - 1.0
    raise SpurlabError(f"labels must be binary (0/1 or -1/+1), got values {sorted(values)[:6]}",
                       hint="binarize the labels first: class indices 0/1 or signs -1/+1")


# ---------------------------------------------------------------- validation
def check_finite(name: str, array: np.ndarray) -> None:
    if np.issubdtype(np.asarray(array).dtype, np.number) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise SpurlabError(
            f"{name} contains {bad} NaN or infinite value(s)",
            hint=f"clean or impute {name} before passing it in",
        )


def check_same_length(**arrays: Any) -> int:
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise SpurlabError(
            f"inputs have different lengths ({detail})",
            hint="every array must have one entry per example",
        )
    return next(iter(lengths.values()), 0)


def check_labels(name: str, labels: np.ndarray, n_classes: int | None = None, what: str = "classes") -> np.ndarray:
    """``labels`` as 1-d int64 class indices (the rule of :func:`spurlab.params.label_array`), below ``n_classes``."""
    try:
        labels = label_array(labels)
    except Refusal as exc:
        raise SpurlabError(f"{name} {exc}", hint=exc.hint) from None
    if n_classes is not None and labels.size and labels.max() >= n_classes:
        raise SpurlabError(
            f"{name} has value {labels.max()} but only {n_classes} {what} are declared",
            hint=f"labels must lie in 0..{n_classes - 1}",
        )
    return labels
