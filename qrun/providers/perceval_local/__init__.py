"""perceval.local: Perceval's local photonic simulators."""

from qrun.providers.spec import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="perceval.local",
    adapter="qrun.providers.perceval_local.adapter",
    formats=("perceval",),
    local=True,
    sdk_packages=("perceval-quandela",),
    # Perceval states no limits; past ~16 modes and 8 photons SLOS's Fock space
    # (C(m+n-1, n) states) takes minutes: set limits in the manifest to go further.
    devices={"SLOS": Limits(max_modes=16, max_photons=8),
             "CliffordClifford2017": Limits(max_modes=64, max_photons=16),
             "Naive": Limits(max_modes=12, max_photons=6)},
    default_device="SLOS",
)
