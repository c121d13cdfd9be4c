"""One registry type for everything users can plug in by name: datasets, studies, training methods.

A :class:`Registry` maps names to entries. Built-in entries live in modules that
register themselves when imported; the registry imports them the first time it is
read, so ``import spurlab`` stays cheap and a user's own entries (registered from
their code) sit beside the built-in ones.

Plug-ins reach the command line, the audit and sweep workers the same way: every
registry also imports the modules named in ``$SPURLAB_PLUGINS`` (comma-separated)
and those advertised under the ``spurlab.plugins`` entry-point group of installed
packages.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterator
from typing import Generic, TypeVar

from spurlab.errors import SpurlabError, UnknownNameError

T = TypeVar("T")
PLUGINS_ENV = "SPURLAB_PLUGINS"
ENTRY_POINT_GROUP = "spurlab.plugins"


def plugin_modules() -> list[str]:
    """Modules to import for their registrations: ``$SPURLAB_PLUGINS``, then installed entry points."""
    named = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    advertised = [ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(named + advertised))


def load_plugins() -> None:
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SpurlabError(f"cannot import spurlab plug-in {module!r}: {exc}",
                               hint=f"check ${PLUGINS_ENV} (comma-separated module names importable "
                                    "from this Python) or the package that declares it") from exc


def _same_definition(old: object, new: object) -> bool:
    """The same object, or the same class defined again (a module imported twice or reloaded)."""
    if old is new:
        return True
    key = lambda obj: (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))  # noqa: E731
    return isinstance(old, type) and isinstance(new, type) and key(old) == key(new)


class Registry(Generic[T]):
    """Named entries of one ``kind``, filled by importing ``modules`` on first use.

    Parameters
    ----------
    kind : str
        What an entry is ("dataset", "study", ...); used in error messages.
    modules : sequence of str
        Modules whose import registers the built-in entries.
    order : "modules" or "name"
        Listing order: built-in entries in ``modules`` order, then the user's
        (registration order within a module), or alphabetical.
    builtin_names : sequence of str, optional
        The names ``modules`` register (a test keeps the two equal). With it, an unknown name is refused
        without importing the modules when no plug-in is configured: a typo answers at once instead of
        after torch has loaded.
    """

    def __init__(self, kind: str, modules: tuple[str, ...] | list[str] = (), order: str = "modules",
                 builtin_names: tuple[str, ...] | list[str] | None = None):
        if order not in ("modules", "name"):
            raise ValueError(f"order must be 'modules' or 'name', got {order!r}")
        self.kind = kind
        self.modules = list(modules)
        self.order = order
        self.builtin_names = None if builtin_names is None else list(builtin_names)
        self._entries: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._loaded = False

    def add(self, name: str, entry: T, origin: str | None = None, replace: bool = False) -> T:
        """Register ``entry`` as ``name``; a second, different entry under one name is an error."""
        if not name:
            raise RuntimeError(f"a {self.kind} needs a non-empty name ({entry!r})")
        if name in self._entries and not replace and not _same_definition(self._entries[name], entry):
            raise RuntimeError(f"{self.kind} {name!r} registered twice (pass replace=True to override)")
        self._entries[name] = entry
        self._origin[name] = origin or getattr(entry, "__module__", "")
        return entry

    def load(self) -> None:
        """Import the modules of the built-in entries (once)."""
        if self._loaded:
            return
        for module in self.modules:
            importlib.import_module(module)
        load_plugins()
        self._loaded = True

    def entries(self) -> dict[str, T]:
        """Every entry by name, in the registry's listing order."""
        self.load()
        if self.order == "name":
            return dict(sorted(self._entries.items()))
        rank = {module: i for i, module in enumerate(self.modules)}
        names = sorted(self._entries, key=lambda n: rank.get(self._origin[n], len(rank)))  # stable
        return {name: self._entries[name] for name in names}

    def get(self, name: str, load: bool = True) -> T:
        """The entry called ``name``; an unknown name lists the known ones.

        ``load=False`` looks only at what is registered so far (for use while a
        module that registers entries is being imported).
        """
        if load:
            self.refuse_unknown(name)
        entries = self.entries() if load else self._entries
        if name not in entries:
            raise UnknownNameError(self.kind, name, list(entries))
        return entries[name]

    def refuse_unknown(self, name: str) -> None:
        """Raise :class:`UnknownNameError` when ``name`` is surely unknown, without importing anything;
        otherwise do nothing (a later :meth:`get` loads the entries and answers for certain)."""
        if not self._loaded and self._surely_unknown(name):
            known = self.builtin_names + [n for n in self._entries if n not in self.builtin_names]
            raise UnknownNameError(self.kind, name, known)

    def _surely_unknown(self, name: str) -> bool:
        """Unknown without importing anything: not built in, not registered yet, and no plug-in could add it."""
        return (self.builtin_names is not None and name not in self.builtin_names and name not in self._entries
                and not plugin_modules())

    def names(self) -> list[str]:
        return list(self.entries())

    def __contains__(self, name: object) -> bool:
        return name in self.entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} loaded)"
