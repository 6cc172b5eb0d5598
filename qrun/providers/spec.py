"""What qrun knows about a provider without importing its SDK: the spec.

Validation and planning read only specs, so `qrun validate` needs no provider SDK. A spec
names its adapter module (and, for clouds, its fake service), which are imported lazily:
only when a job runs, in the process running it, or when a check needs the SDK.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from types import ModuleType

from qrun.errors import BackendUnavailable
from qrun.interrupts import import_sdk


@dataclass(frozen=True)
class Limits:
    """How much one job may carry and how hard a backend may be driven. None: no limit."""

    max_parallel: int | None = None
    submit_rate: float | None = None  # submissions per second
    max_shots_per_job: int | None = None
    max_experiments_per_job: int | None = None
    # The shots of all of one job's experiments together (a Braket program set's
    # maximumTotalShots; IBM's executions, circuits x shots, per job)
    max_total_shots_per_job: int | None = None
    max_qubits: int | None = None  # qubits, or atoms for neutral-atom backends
    max_modes: int | None = None  # photonic backends
    max_photons: int | None = None

    def tightened(self, other: Limits) -> Limits:
        """The stricter of the two for every limit."""
        def lower(a, b):
            return b if a is None else a if b is None else min(a, b)
        return Limits(**{f.name: lower(getattr(self, f.name), getattr(other, f.name))
                         for f in fields(self)})

    def overridden(self, other: Limits) -> Limits:
        """These limits with every limit that ``other`` sets replacing ours."""
        return Limits(**{f.name: getattr(other, f.name) if getattr(other, f.name) is not None
                         else getattr(self, f.name) for f in fields(self)})


@dataclass(frozen=True)
class ProviderSpec:
    """One provider, as a manifest's backend names it (``provider: braket.aws``)."""

    id: str
    adapter: str  # module defining ``Adapter`` (see qrun.providers.base), imported lazily
    formats: tuple[str, ...]  # the program formats it runs (see qrun.sources.FAMILY)
    local: bool  # local adapters run(); remote ones submit/find/poll/fetch/cancel
    sdk_packages: tuple[str, ...]  # distributions whose versions are recorded with results
    # device name -> its Limits; None: the adapter module lists them (known_devices,
    # device_limits), or, with a device_pattern, a cloud whose devices are not listed.
    devices: dict[str, Limits] | None = None
    default_device: str | None = None  # None: the manifest must name a device
    option_names: frozenset[str] = field(default_factory=frozenset)  # accepted `options:` keys
    # Options that change how fast, not what, the backend computes (threads, a results
    # bucket): left out of experiment keys.
    tuning_options: frozenset[str] = field(default_factory=frozenset)
    # Cloud devices are not listed (that would need the network at validation): their
    # names are checked against this pattern instead, and the hint says what one looks like.
    device_pattern: str | None = None
    device_hint: str = ""
    cloud_limits: Limits = field(default_factory=Limits)  # every device of a cloud provider
    # (device pattern, limits) pairs refining cloud_limits for the devices a pattern
    # matches, the first match winning: what is known of a kind of device without asking
    # it (its adapter's job_limits, at apply, says what the device itself declares).
    limits_by_device_pattern: tuple = ()
    # A module with check_program(program, device, options) -> str | None, asked at
    # validation. It must not import the SDK at its top, and inside check_program only
    # when a program needs a check the SDK alone can make (qrun/providers/*/check.py).
    check_module: str | None = None
    fake: str | None = None  # "module:Class" of its local fake service, for rehearsals
    distribution: str | None = None  # the installed package that registered it (set on load)

    @property
    def family(self) -> str:
        from qrun.sources import FAMILY

        return FAMILY[self.formats[0]]

    def adapter_module(self) -> ModuleType:
        """The adapter module; a missing SDK is a BackendUnavailable saying what to install."""
        try:
            return import_sdk(self.adapter)
        except ImportError as exc:
            raise BackendUnavailable(
                f"provider {self.id} needs {', '.join(self.sdk_packages)}, which cannot be "
                f"imported ({exc}); {self._install_hint()}"
            ) from None

    def _install_hint(self) -> str:
        if self.distribution in (None, "qrun"):
            return "install qrun with its extra, e.g. pip install 'qrun[all]'"
        return f"install {self.distribution}'s dependencies"

    def known_devices(self) -> list[str]:
        if self.devices is not None:
            return list(self.devices)
        from qrun.providers import device_cache  # the adapter's answer, kept per SDK version

        return device_cache.known_devices(self)

    def device_problem(self, device: str) -> str | None:
        """Why ``device`` is not one of this provider's, or None."""
        if self.device_pattern is not None:
            if re.fullmatch(self.device_pattern, device):
                return None
            hint = f" ({self.device_hint})" if self.device_hint else ""
            return f"{self.id} device {device!r} does not look like one{hint}"
        devices = self.known_devices()
        if device in devices:
            return None
        close = difflib.get_close_matches(device, devices, n=1)
        shown = ", ".join(devices) if len(devices) <= 12 else \
            ", ".join(devices[:12]) + f" and {len(devices) - 12} more"
        return (f"{self.id} has no device {device!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "") + f"; choose one of: {shown}")

    def device_limits(self, device: str) -> Limits:
        if self.devices is not None:
            return self.devices.get(device, Limits())
        if self.device_pattern is not None:  # a cloud: no network at validation
            for pattern, limits in self.limits_by_device_pattern:
                if re.fullmatch(pattern, device):
                    return self.cloud_limits.overridden(limits)
            return self.cloud_limits
        from qrun.providers import device_cache

        return device_cache.device_limits(self, device)

    def check_program(self, program, device: str, options: dict) -> str | None:
        """Why this backend cannot run ``program`` beyond family and size, or None."""
        if self.check_module is None:
            return None
        from qrun.providers import check_cache  # a program passed once passes again

        return check_cache.check_program(self, program, device, options)

    def fake_class(self) -> type:
        """The class of this provider's fake service (a qrun.fakes.server.FakeServer)."""
        if self.fake is None:
            raise BackendUnavailable(f"provider {self.id} has no fake service")
        module_name, _, class_name = self.fake.partition(":")
        return getattr(import_sdk(module_name), class_name)
