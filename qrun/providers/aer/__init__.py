"""qiskit.aer: Qiskit Aer's simulators, run locally."""

from qrun.providers.spec import Limits, ProviderSpec

GATE_FORMATS = ("qasm2", "qasm3", "qpy")

SPEC = ProviderSpec(
    id="qiskit.aer",
    adapter="qrun.providers.aer.adapter",
    formats=GATE_FORMATS,
    local=True,
    sdk_packages=("qiskit", "qiskit-aer"),
    # Aer's methods; qubit ceilings are what the method handles in this machine's memory.
    devices={
        "automatic": Limits(),
        "statevector": Limits(max_qubits=30),
        "density_matrix": Limits(max_qubits=15),
        "stabilizer": Limits(),
        "matrix_product_state": Limits(),
        "extended_stabilizer": Limits(),
    },
    default_device="automatic",
    option_names=frozenset({
        "precision", "max_parallel_threads", "max_parallel_experiments", "max_parallel_shots",
        "fusion_enable", "fusion_threshold", "blocking_enable", "zero_threshold",
        "mps_truncation_threshold", "statevector_parallel_threshold", "shot_branching_enable",
    }),
    tuning_options=frozenset({
        "max_parallel_threads", "max_parallel_experiments", "max_parallel_shots",
        "statevector_parallel_threshold", "blocking_enable",
    }),
)
