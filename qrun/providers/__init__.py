"""Providers: the registry of specs, and the adapters they name.

A provider is one folder, ``qrun/providers/<name>/``: ``__init__.py`` holds its SDK-free
``SPEC`` (a ProviderSpec), ``adapter.py`` the code that drives its SDK, and a cloud's
``fake.py`` the local service users rehearse on. Every provider, built-in or from another
installed package, is registered through the ``qrun.providers`` entry-point group (see
docs/providers.md); the registry reads the group the first time it is asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from qrun.errors import BackendUnavailable
from qrun.providers.base import RemoteAdapter
from qrun.providers.spec import Limits, ProviderSpec

ENTRY_POINT_GROUP = "qrun.providers"

__all__ = ["ENTRY_POINT_GROUP", "PROVIDERS", "Limits", "ProviderSpec", "Registry", "adapter_for"]


class Registry(Mapping[str, ProviderSpec]):
    """Provider id -> spec, loaded lazily from the entry-point group.

    qrun's own providers come first (a plugin cannot replace one); a plugin that fails to
    load, or registers an id already taken, is left out and remembered in ``problems``, so
    one broken package never stops the others, and a manifest naming it is told why.
    """

    def __init__(self, group: str = ENTRY_POINT_GROUP):
        self._group = group
        self._specs: dict[str, ProviderSpec] | None = None
        self._problems: list[str] = []

    @property
    def specs(self) -> dict[str, ProviderSpec]:
        if self._specs is None:
            self._specs, self._problems = _load(self._group)
        return self._specs

    @property
    def problems(self) -> list[str]:
        self.specs  # noqa: B018 (loads)
        return list(self._problems)

    def builtin(self) -> list[ProviderSpec]:
        """The providers qrun itself ships (the checked-in schema lists exactly these)."""
        return [spec for spec in self.specs.values() if spec.distribution == "qrun"]

    def __getitem__(self, provider_id: str) -> ProviderSpec:
        return self.specs[provider_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


def _load(group: str) -> tuple[dict[str, ProviderSpec], list[str]]:
    from dataclasses import replace
    from importlib.metadata import entry_points

    def order(entry):  # qrun's own first, then plugins by package and entry point
        origin = _distribution(entry)
        return (origin != "qrun", origin or "", entry.name)

    found = sorted(entry_points(group=group), key=order)
    specs: dict[str, ProviderSpec] = {}
    problems: list[str] = []
    for entry in found:
        origin = _distribution(entry) or "an unknown package"
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin must not take the others down
            problems.append(f"{origin}: entry point {entry.name} = {entry.value} failed to load "
                            f"({type(exc).__name__}: {exc})")
            continue
        for spec in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
            if not isinstance(spec, ProviderSpec):
                problems.append(f"{origin}: entry point {entry.name} gives {type(spec).__name__}, "
                                "not a qrun.providers.ProviderSpec")
            elif spec.id in specs:
                problems.append(f"{origin}: provider {spec.id} is already registered by "
                                f"{specs[spec.id].distribution}; left out")
            else:
                specs[spec.id] = replace(spec, distribution=origin)
    if not specs:
        problems.append("no provider is registered: qrun's own entry points are missing "
                        "(reinstall it: pip install -e .)")
    return specs, problems


def _distribution(entry) -> str | None:
    dist = getattr(entry, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


PROVIDERS = Registry()

_adapters: dict = {}


def adapter_for(provider_id: str, device: str, options: dict, credentials: dict | None = None):
    """The adapter instance for a backend, created once per process (simulators and cloud
    clients are reused). ``credentials`` holds references (profile or variable names) only."""
    cache_key = (provider_id, device, repr(sorted(options.items())),
                 repr(sorted((credentials or {}).items())))
    if cache_key not in _adapters:
        spec = PROVIDERS[provider_id]
        module = spec.adapter_module()
        if spec.local:
            _adapters[cache_key] = module.Adapter(device=device, options=options)
        else:
            _adapters[cache_key] = module.Adapter(device=device, options=options,
                                                  credentials=credentials or {})
    return _adapters[cache_key]


def remote_adapter_for(provider_id: str, device: str, options: dict,
                       credentials: dict | None = None) -> RemoteAdapter:
    """``adapter_for`` a cloud provider, checked against the contract the engine relies on
    (a plugin's adapter that lacks a method is refused here, not half-way through a job)."""
    adapter = adapter_for(provider_id, device, options, credentials)
    if not isinstance(adapter, RemoteAdapter):
        missing = [name for name in ("submit", "find", "poll", "fetch", "cancel", "metadata")
                   if not callable(getattr(adapter, name, None))]
        raise BackendUnavailable(f"provider {provider_id}'s adapter lacks the remote adapter "
                                 f"methods {', '.join(missing)} (qrun/providers/base.py)")
    return adapter
