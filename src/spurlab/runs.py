"""Run plumbing shared by the CLI, studies, the audit, training and sweeps.

One ``key=value`` grammar (``--set``, sweep configs), output-folder names and version stamps. This module sits
low in the tree: it imports nothing from spurlab but ``errors`` and ``_version``.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from spurlab._version import __version__
from spurlab.errors import SpurlabError


def parse_value(text: str, default: Any) -> Any:
    """Parse ``text`` to the type of ``default`` (lists: comma-separated or JSON)."""
    text = text.strip()
    if text.startswith("[") or text.startswith("{"):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise SpurlabError(f"cannot parse {text[:60]!r} as JSON: {str(exc) or 'nested too deeply'}") from None
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SpurlabError(f"expected true/false, got {text!r}")
    if isinstance(default, (list, tuple)):
        item = default[0] if default else ""
        return [parse_value(t, item) for t in text.split(",") if t.strip()]
    if isinstance(default, int):
        try:
            return int(float(text)) if float(text).is_integer() else float(text)
        except ValueError:
            raise SpurlabError(f"expected a number, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise SpurlabError(f"expected a number, got {text!r}") from None
    if default is None:
        for cast in (int, float):
            with contextlib.suppress(ValueError):
                return cast(text)
        return None if text.lower() in ("none", "null") else text
    return text


def split_key_values(items: list[str] | None, option: str = "--set") -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: "v"}`` (raw strings; each caller parses them against its defaults)."""
    pairs: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SpurlabError(f"{option} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        if not key.strip():
            raise SpurlabError(f"{option} {item!r} has no parameter name before '='", hint=f"write {option} key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parsed v}`` (numbers, booleans, JSON lists, strings)."""
    parsed = {}
    for key, value in split_key_values(items).items():
        try:
            parsed[key] = parse_value(value, None)
        except SpurlabError as exc:
            raise SpurlabError(f"--set {key}: {exc}") from None
    return parsed


def package_versions() -> dict[str, str]:
    import numpy as np
    import pandas as pd
    import sklearn
    import torch

    return {"python": platform.python_version(), "spurlab": __version__, "numpy": np.__version__,
            "pandas": pd.__version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__}


def check_out_dir(path: str | os.PathLike | None, option: str = "--out") -> Path | None:
    """Refuse, before any work, an output folder that is an existing file or cannot be written to."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SpurlabError(f"{option} {str(path)!r} is an existing file, not a folder",
                           hint="pass a folder path (it is created if missing)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpurlabError(f"{option} {str(path)!r} cannot be created: {str(existing)!r} is a file",
                           hint="pass a folder path under an existing folder")
    try:  # a real write: permissions, read-only mounts, pseudo file systems
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise SpurlabError(f"{option} {str(path)!r} is not writable ({exc.strerror or exc} in {str(existing)!r})",
                           hint="pass a folder you can write to") from None
    return path


def check_out_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output file path that is a folder or whose folder cannot be written to."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SpurlabError(f"{option} {str(path)!r} is a folder; it must name a file", hint="e.g. --out emb.npz")
    check_out_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise SpurlabError(f"{option} {str(path)!r} exists and is not writable", hint="pass another file name")
    return path


def default_out_dir(prefix: str) -> Path:
    return Path("runs") / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
