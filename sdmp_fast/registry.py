"""One small registry class; its instances name every pluggable piece.

Entries are either objects registered with the ``@REGISTRY.register("name")`` decorator next to
their definition, or import strings (``"package.module:attr"``) for optional backends (DALI, FFCV,
Triton), so importing ``sdmp_fast`` or ``loaders`` never imports them. Building a missing backend
raises :class:`MissingBackend` with the install command. An entry may carry a declaration (``meta``, e.g.
what a loader reads), readable without importing the entry.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


class MissingBackend(ImportError):
    """An optional backend named in the config is not installed."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._hints: dict[str, str] = {}
        self._help: dict[str, str] = {}
        self._meta: dict[str, Any] = {}

    def register(self, name: str, help: str = "", meta: Any = None) -> Callable[[Any], Any]:
        """Decorator: ``@BACKBONES.register("vit_s16")`` above a builder function or class; ``meta``: its declaration
        (:meth:`meta`, e.g. a backbone's patch size)."""
        def deco(obj: Any) -> Any:
            self._add(name, obj, help or (obj.__doc__ or "").strip().split("\n")[0])
            if meta is not None:
                self._meta[name] = meta
            return obj
        return deco

    def register_lazy(self, name: str, target: str, help: str = "", install: str = "", meta: Any = None) -> None:
        """Register ``"module:attr"``, imported on first :meth:`get`; ``install`` is the hint if that fails;
        ``meta`` is the entry's declaration (:meth:`meta`)."""
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._add(name, target, help)
        if install:
            self._hints[name] = install
        if meta is not None:
            self._meta[name] = meta

    def _add(self, name: str, obj: Any, help: str) -> None:
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        self._help[name] = help

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._help.get(n, "")) for n in self.names()]

    def meta(self, name: str) -> Any:
        """The declaration registered with ``name`` (None if it has none); the entry itself is not imported."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._meta.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        obj = self._entries[name]
        if isinstance(obj, str):
            module, attr = obj.split(":")
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                hint = self._hints.get(name, "")
                raise MissingBackend(
                    f"{self.kind} {name!r} needs a package that is not installed ({e})."
                    + (f" Install it with: {hint}" if hint else "")) from e
            obj = getattr(mod, attr)
            self._entries[name] = obj
        return obj

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)


BACKBONES = Registry("backbone")
METHODS = Registry("method")
LOADERS = Registry("loader")
