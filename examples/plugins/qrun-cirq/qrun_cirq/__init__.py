"""qrun-cirq: Cirq's simulators as qrun provider ``cirq.simulator``.

This module is what qrun reads at validation and planning, through the entry point in
pyproject.toml (group ``qrun.providers``): the spec only, no Cirq import, so that
``qrun validate`` stays fast and works where Cirq is not installed.
"""

from qrun.providers import Limits, ProviderSpec

SPEC = ProviderSpec(
    id="cirq.simulator",
    adapter="qrun_cirq.adapter",  # imported only where a job runs
    # Every gate-model format qrun reads: Qiskit parses them all, and the adapter hands
    # Cirq the circuit as OpenQASM 2 (qrun_cirq.program says what cannot go that way).
    formats=("qasm2", "qasm3", "qpy"),
    local=True,
    sdk_packages=("cirq-core",),
    # Qubit ceilings for this machine's memory (24 GB): a state vector of n qubits holds
    # 2^n amplitudes of 8 bytes (single precision), a density matrix 4^n.
    devices={"simulator": Limits(max_qubits=28), "density_matrix": Limits(max_qubits=14)},
    default_device="simulator",
    option_names=frozenset({"precision"}),  # "single" (Cirq's default) or "double"
    # Asked at validation, before anything runs; it imports Qiskit, not Cirq.
    check_module="qrun_cirq.program",
)
