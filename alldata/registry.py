"""One name -> object registry for sources, generator families, models and benchmark tasks.

Entries are registered eagerly with the :meth:`Registry.register` decorator (timm's
``register_model``) or declared lazily as ``"module:attr"`` strings, imported the first time
the name is asked for, so listing names never imports torch. An unknown name raises
:class:`~alldata.errors.UnknownNameError` naming the allowed values and the close matches
(MONAI's ``look_up_option``).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from alldata.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


def _same_definition(old: object, new: object) -> bool:
    """Whether ``new`` is ``old`` defined again (its module reloaded): same module and qualified name."""
    key = getattr(new, "__qualname__", None)
    return key is not None and (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == (
        getattr(new, "__module__", None), key)


class Registry(Generic[T]):
    """Maps names to objects, each registered directly or declared as a lazy ``"module:attr"``.

    A lazy target is ``"package.module:Attr"`` (the attribute is taken after the import
    unless the module registered the name itself) or just ``"package.module"`` (the module
    registers the name with the decorator when imported).

    Args:
        kind: what the entries are, for messages (``"source"``, ``"segmenter"``).
        lazy: name -> lazy target, declared up front.
        install_hint: appended to the :class:`ImportError` when a lazy module cannot be
            imported (e.g. ``"pip install 'alldata[gen]'"``).

    Examples:
        >>> SOURCES = Registry("source")
        >>> @SOURCES.register("bccd")
        ... class BCCD: ...
        >>> SOURCES.get("bccd").__name__
        'BCCD'
        >>> MODELS = Registry("model", lazy={"od": "collections:OrderedDict"})
        >>> MODELS.list("o*"), MODELS.get("od").__name__
        (['od'], 'OrderedDict')
    """

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None, *, install_hint: str = "") -> None:
        self.kind = kind
        self.install_hint = install_hint
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        for name, target in (lazy or {}).items():
            self.register_lazy(name, target)

    # -- registering ----------------------------------------------------------------------
    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering an object as ``name``.

        A name already bound to another object is a :class:`ValueError` unless
        ``override=True`` or the object is the same definition re-imported (a reloaded
        module); both replace it with a warning. A module filling its own lazy entry is
        not a duplicate.
        """

        def deco(obj: T) -> T:
            old = self._items.get(name)
            if name in self._items and old is not obj:
                self._duplicate(name, repr(old), repr(obj), override or _same_definition(old, obj))
            self._items[name] = obj
            return obj

        return deco

    def register_lazy(self, name: str, target: str, *, override: bool = False) -> None:
        """Declare ``name`` as ``"module:attr"`` (or ``"module"``), imported on first :meth:`get`."""
        module, _, attr = target.partition(":")
        if not module or not all(p.isidentifier() for p in module.split(".")) or (attr and not attr.isidentifier()):
            raise ValueError(f"lazy {self.kind} {name!r}: target {target!r} is not 'package.module:attr'")
        old = self._lazy.get(name)
        if old is not None and old != target:
            self._duplicate(name, repr(old), repr(target), override)
        elif name in self._items and old is None:
            self._duplicate(name, repr(self._items[name]), repr(target), override)
            del self._items[name]
        self._lazy[name] = target

    def _duplicate(self, name: str, old: str, new: str, allowed: bool) -> None:
        if not allowed:
            raise ValueError(f"{self.kind} {name!r} is already registered to {old}; pass override=True to replace it")
        warnings.warn(f"{self.kind} {name!r} registered again: {new} replaces {old}", stacklevel=4)

    # -- looking up -----------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``, importing its lazy module first if needed.

        Raises:
            UnknownNameError: ``name`` is neither registered nor declared; the message lists
                the allowed names and the close matches.
            ImportError: the lazy module cannot be imported (with :attr:`install_hint`).
        """
        if name in self._items:
            return self._items[name]
        if name in self._lazy:
            return self._load(name)
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"Unknown {self.kind} {name!r}. Registered: {', '.join(known) or '(none)'}.{hint}")

    def _load(self, name: str) -> T:
        target = self._lazy[name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            hint = f"; {self.install_hint}" if self.install_hint else ""
            raise ImportError(f"cannot import {module_name} for {self.kind} {name!r} ({e}){hint}") from e
        if name not in self._items:  # the module did not register it itself
            if not attr or not hasattr(module, attr):
                raise ImportError(f"{module_name} was imported but defines no {self.kind} {name!r} ({target})")
            self._items[name] = getattr(module, attr)
        return self._items[name]

    def target(self, name: str) -> str | None:
        """The lazy target declared for ``name`` (``"module:attr"``), without importing it."""
        return self._lazy.get(name)

    def load_all(self) -> None:
        """Import every lazy entry (e.g. to check that each one resolves)."""
        for name in list(self._lazy):
            self.get(name)

    # -- listing (never imports) ----------------------------------------------------------
    def names(self) -> list[str]:
        """Registered and declared names, sorted."""
        return sorted(set(self._items) | set(self._lazy))

    def list(self, pattern: str = "*") -> list[str]:
        """Names matching the shell-style ``pattern`` (:func:`fnmatch.fnmatchcase`), sorted."""
        return [n for n in self.names() if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} names)"
