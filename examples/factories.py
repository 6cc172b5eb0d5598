"""Python factories for examples/factories.yaml: each returns a circuit qrun serializes.

qrun imports this module from the manifest's folder and calls the function named in
`source: {python: "factories:NAME", args: {...}}`.
"""


def ghz(qubits: int = 3):
    """A Qiskit GHZ circuit on `qubits` qubits, measured."""
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(qubits, qubits)
    circuit.h(0)
    for q in range(1, qubits):
        circuit.cx(q - 1, q)
    circuit.measure(range(qubits), range(qubits))
    return circuit


def bell_braket(angle: float = 0.0):
    """A Braket Bell pair followed by a free rotation `theta` on qubit 1."""
    from braket.circuits import Circuit, FreeParameter

    return Circuit().h(0).cnot(0, 1).rz(1, FreeParameter("theta")).rz(0, angle)


def rabi(device: str = "DigitalAnalogDevice"):
    """One atom driven on resonance for `duration` ns at 2*pi rad/us: a pi pulse at 500 ns."""
    import math

    import pulser
    from pulser import Pulse, Register, Sequence

    sequence = Sequence(Register({"q0": (0.0, 0.0)}), getattr(pulser.devices, device))
    sequence.declare_channel("drive", "rydberg_global")
    duration = sequence.declare_variable("duration", dtype=int)
    sequence.add(Pulse.ConstantPulse(duration, 2 * math.pi, 0.0, 0.0), "drive")
    return sequence


def hong_ou_mandel():
    """A 50:50 beam splitter; with |1,1> in, both photons leave by the same port."""
    import perceval as pcvl

    return pcvl.Circuit(2) // pcvl.BS()


def mach_zehnder():
    """Two beam splitters around a phase shifter `phi`: one photon's exit port follows phi."""
    import perceval as pcvl

    return pcvl.Circuit(2) // pcvl.BS() // (0, pcvl.PS(pcvl.P("phi"))) // pcvl.BS()
