"""Load pickles of plain data (dicts, lists, strings, numbers, numpy arrays) without running code.

A pickle can name any importable callable and make the loader call it
(``os.system``, ``builtins.eval``, ...). :func:`load_plain_pickle` accepts only
the handful of names that numpy uses to pickle a numeric array, and even those
never reach numpy's own unpickling hooks: spurlab rebuilds each array from its
validated (shape, dtype, raw bytes). Anything else -- another global, an
object dtype, a persistent id, a truncated stream -- raises :class:`SpurlabError`.

Both the Python 2 pickles of the original CIFAR archives (protocol 2; their
``str`` is read as ``bytes`` or ``latin1`` text, the ``encoding`` argument) and
pickles re-saved by Python 3 (protocols 2-5) load.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any, BinaryIO

import numpy as np

from spurlab.errors import SpurlabError

PLAIN_TYPES = (dict, list, tuple, str, bytes, bytearray, int, float, bool, type(None))
_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})
NUMERIC_KINDS = "biuf"  # bool, signed int, unsigned int, float
BYTE_ORDERS = ("<", ">", "|", "=")
_REPAIR_HINT = "re-download the dataset from its official source; the file may be tampered with or corrupted"


class _RefusedPickle(Exception):
    """Raised inside the unpickler; turned into a SpurlabError naming the file."""


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray`` when a pickle names it; it cannot build anything."""


class _DtypeStub:
    """A numeric dtype described by the pickle, checked before numpy sees it."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8:
            raise _RefusedPickle(f"dtype {spec!r} is not a plain numeric type code")
        try:
            dtype = np.dtype(spec)
        except TypeError as exc:
            raise _RefusedPickle(f"unknown dtype {spec!r}") from exc
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise _RefusedPickle(f"dtype {spec!r} is not a plain numeric type")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5:
            raise _RefusedPickle("malformed dtype state")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in BYTE_ORDERS or any(part is not None for part in state[2:5]):
            raise _RefusedPickle("dtype state describes a structured or unknown dtype")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayStub:
    """What ``_reconstruct`` / ``_frombuffer`` produce; holds the rebuilt array."""

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy's array state: (version, shape, dtype, is_fortran, raw data); very old pickles omit version
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _RefusedPickle("malformed array state")
        _version, shape, dtype, is_fortran, raw = state if len(state) == 5 else (1, *state)
        if isinstance(raw, str):  # a Python 2 str read with encoding="latin1"
            raw = raw.encode("latin1")
        self.array = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C")


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DtypeStub):
        raise _RefusedPickle("array dtype was not built from a plain type code")
    if not isinstance(raw, (bytes, bytearray)):
        raise _RefusedPickle(f"array data is {type(raw).__name__}, expected bytes")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise _RefusedPickle(f"array shape {shape!r} is not a tuple of non-negative ints")
    if order not in ("C", "F", "K", "A"):
        raise _RefusedPickle(f"unknown array order {order!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize
    if len(raw) != expected:
        raise _RefusedPickle(f"array of shape {shape} needs {expected} bytes, the pickle holds {len(raw)}")
    flat = np.frombuffer(raw, dtype=dtype.dtype)
    return flat.reshape(shape, order="F" if order == "F" else "C")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if subtype is not _NdarrayMarker:
        raise _RefusedPickle("_reconstruct asked for a class other than numpy.ndarray")
    return _ArrayStub()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> _ArrayStub:
    stub = _ArrayStub()
    stub.array = _array_from_bytes(bytes(buffer) if isinstance(buffer, memoryview) else buffer,
                                   dtype, shape, order)
    return stub


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _RefusedPickle("_codecs.encode is accepted only for latin-1 text")
    return text.encode("latin1")


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NdarrayMarker,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _latin1_encode,
}


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (to spurlab's safe stand-ins)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedPickle(f"it asks to call {module}.{name}, which plain data never needs") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedPickle("it holds a persistent id, which plain data never needs")


MAX_DEPTH = 64


def _finish(obj: Any, depth: int = 0) -> Any:
    """Swap array stubs for arrays and check that everything else is plain data."""
    if depth > MAX_DEPTH:
        raise _RefusedPickle(f"it nests containers more than {MAX_DEPTH} deep (or refers to itself)")
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise _RefusedPickle("an array was declared but never filled")
        return obj.array
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, (str, bytes, int))]
        if bad:
            raise _RefusedPickle(f"a dict key of type {type(bad[0]).__name__} is not plain data")
        return {k: _finish(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if all(type(v) in _SCALARS for v in obj):  # labels, file names: nothing to swap or check
            return obj
        return type(obj)(_finish(v, depth + 1) for v in obj)
    if not isinstance(obj, PLAIN_TYPES):
        raise _RefusedPickle(f"it builds a {type(obj).__name__}, which is not plain data")
    return obj


def loads_plain_pickle(data: bytes, source: str = "pickle", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` allowing only plain data; ``source`` names it in errors."""
    return _load(io.BytesIO(data), source, encoding)


def load_plain_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Read a pickle file of plain data (see the module docstring); never runs code from the file."""
    with open(path, "rb") as fh:
        return _load(fh, str(path), encoding)


def _load(stream: BinaryIO, source: str, encoding: str) -> Any:
    try:
        obj = PlainDataUnpickler(stream, encoding=encoding).load()
        return _finish(obj)
    except _RefusedPickle as exc:
        raise SpurlabError(f"refused to load {source}: {exc}", hint=_REPAIR_HINT) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, MemoryError, OverflowError, RecursionError) as exc:
        raise SpurlabError(f"{source} is not a readable pickle ({type(exc).__name__}: {exc})",
                           hint=_REPAIR_HINT) from None
