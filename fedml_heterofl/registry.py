"""Name -> class registries, such as the names a configuration may give as ``defense_type`` or
``attack_type``.

A :class:`Registry` knows only the classes registered with it. A family of names that needs a heavy
import is provided from above: a module that registers the family's classes with
:meth:`Registry.register_lazy` when imported, named under the registry's entry-point group in the
distribution's metadata (``setup.py``: FedML's own defenses, ``fedml:<name>``, are the entry point
``fedml = fedml_heterofl.fedml_bridge.fedml_defenses`` of ``fedml_heterofl.defense_families``). The
module is imported on the first lookup of such a name. The registry names no family itself.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Dict, Optional


class Registry(dict):
    """Name -> class, filled by the :meth:`register` class decorator; :meth:`build` instantiates.

    ``kind`` names the entries in error messages (``"defense"``, ``"attack"``); ``families`` is the
    entry-point group whose entries ``NAME = module`` provide the names ``NAME:<name>`` (module doc).

    Lazy families: :meth:`provide` maps a name prefix (e.g. ``"fedml:"``) to a module that registers the
    family's classes with :meth:`register_lazy` when it is first imported — on the first lookup of such a
    name (``in``, ``[]``, ``get``, :meth:`build`), so a package that needs a heavy import is imported only
    when one of its names is used. Lazy entries are found by lookup but not listed by iteration
    (``sorted(registry)`` is the package's own names); :meth:`allowed` names both.
    """

    def __init__(self, kind: str, families: Optional[str] = None) -> None:
        super().__init__()
        self.kind = kind
        self.families = families
        self._providers: Optional[Dict[str, str]] = None if families else {}
        self._lazy: Dict[str, type] = {}

    @property
    def providers(self) -> Dict[str, str]:
        """Prefix -> module of every lazy family: the entry points of :attr:`families` (read once) and
        those given to :meth:`provide`."""
        if self._providers is None:
            self._providers = {f"{ep.name}:": ep.value
                               for ep in importlib.metadata.entry_points(group=self.families)}
        return self._providers

    def provide(self, prefix: str, module: str) -> None:
        """Names starting with ``prefix`` are registered by importing ``module`` on first lookup."""
        self.providers[prefix] = module

    def lazy(self, name: str) -> Optional[type]:
        """The lazy entry registered as ``name``, if its family's module was imported."""
        return self._lazy.get(name)

    def register_lazy(self, cls: type) -> type:
        """Add ``cls`` under ``cls.name`` as a lazy entry (its name starts with a provided prefix)."""
        if not any(cls.name.startswith(p) for p in self.providers):
            raise ValueError(f"{cls.name!r} has none of the lazy prefixes {sorted(self.providers)}")
        self._lazy[cls.name] = cls
        return cls

    def _lookup(self, key: object) -> Optional[type]:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if not isinstance(key, str):
            return None
        for prefix, module in self.providers.items():
            if key.startswith(prefix):
                if key not in self._lazy:
                    try:
                        importlib.import_module(module)
                    except ImportError as exc:
                        raise ValueError(f"{self.kind} {key!r} needs {module}, which cannot be imported: {exc}") \
                            from exc
                return self._lazy.get(key)
        return None

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None

    def __getitem__(self, key: str) -> type:
        cls = self._lookup(key)
        if cls is None:
            raise KeyError(key)
        return cls

    def get(self, key: str, default: Any = None) -> Any:
        cls = self._lookup(key)
        return default if cls is None else cls

    def allowed(self) -> str:
        """The allowed names for an error message: the package's own, then each lazy family."""
        families = [f"{p}<name> ({self.providers[p]})" for p in sorted(self.providers)]
        return ", ".join(sorted(dict.keys(self)) + families)

    def register(self, cls: type) -> type:
        """Class decorator: add ``cls`` under ``cls.name`` (a second class under a taken name is an error)."""
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name")
        if cls.name in self and self[cls.name] is not cls:
            raise ValueError(f"{self.kind} name {cls.name!r} is already registered to {self[cls.name].__name__}")
        self[cls.name] = cls
        return cls

    def build(self, name: str, **params: object) -> object:
        """Instantiate the class registered as ``name`` (stripped, lower case) with keyword ``params``.

        Raises ``ValueError`` naming the allowed names for an unknown ``name``, and the class's own
        ``ValueError``/``TypeError`` (prefixed with the name) for bad parameters.
        """
        key = name.strip().lower()
        cls = self._lookup(key)
        if cls is None:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {self.allowed()}")
        try:
            return cls(**params)
        except TypeError as exc:
            raise TypeError(f"{self.kind} {key!r}: {exc}") from exc
