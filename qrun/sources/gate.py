"""Gate-model programs: OpenQASM 2 and 3 and QPY (parsed by Qiskit), and Braket circuits.

Qiskit's parsers are the reference implementations of OpenQASM and QPY; every gate-model
backend reads these programs through :func:`parse_circuit`. Braket circuits (built by a
Python factory) keep Braket's own OpenQASM dialect and are read by the Braket SDK.
"""

from __future__ import annotations

import io
from pathlib import Path

from . import Facts, SourceError, one_line


def inspect(fmt: str, content: bytes, origin: str, index: int | None,
            include_dir: Path | None) -> Facts:
    if fmt == "braket":
        return _inspect_braket(content, origin)
    circuit = parse_circuit(fmt, content, origin, index, include_dir)
    names = tuple(sorted(p.name for p in circuit.parameters))
    return Facts(parameters=names, required=names, width=circuit.num_qubits,
                 clbits=circuit.num_clbits)


def parse_circuit(fmt: str, content: bytes, origin: str = "<circuit>", index: int | None = None,
                  include_dir: Path | None = None):
    """Parse program bytes into a Qiskit ``QuantumCircuit`` (free parameters unbound)."""
    if fmt == "qpy":
        return _parse_qpy(content, origin, index)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{origin} is not UTF-8 text (byte {exc.start})") from None
    if fmt == "qasm2":
        return _parse_qasm2(text, origin, include_dir)
    return _parse_qasm3(text, origin)


def _parse_qasm2(text: str, origin: str, include_dir: Path | None):
    import qiskit.qasm2

    try:
        return qiskit.qasm2.loads(
            text,
            include_path=[str(include_dir)] if include_dir else (),
            custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS,
        )
    except Exception as exc:  # qiskit raises several types; all mean "does not parse"
        raise SourceError(f"{origin} is not valid OpenQASM 2: {one_line(exc)}") from None


def _parse_qasm3(text: str, origin: str):
    """Qiskit's native importer when it can (30x faster: 0.7 ms against 21 ms a circuit in
    bench/peer_braket.py's circuits), else its complete one (inputs, and whatever the native
    one does not handle yet), whose verdict and messages count."""
    import warnings

    import qiskit.qasm3

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental native version of the importer"
            return qiskit.qasm3.loads_experimental(text)
    except Exception:
        pass
    try:
        return qiskit.qasm3.loads(text)
    except Exception as exc:
        raise SourceError(f"{origin} is not valid OpenQASM 3: {one_line(exc)}") from None


def _parse_qpy(content: bytes, origin: str, index: int | None):
    import qiskit.qpy

    try:
        circuits = qiskit.qpy.load(io.BytesIO(content))
    except Exception as exc:
        raise SourceError(f"{origin} is not a readable QPY file: {one_line(exc)}") from None
    if index is None:
        if len(circuits) != 1:
            raise SourceError(f"{origin} holds {len(circuits)} circuits; choose one with index:")
        index = 0
    if index >= len(circuits):
        raise SourceError(f"{origin} holds {len(circuits)} circuits; index {index} is out of range")
    return circuits[index]


def _inspect_braket(content: bytes, origin: str) -> Facts:
    circuit = parse_braket(content, origin)
    names = tuple(sorted(p.name for p in circuit.parameters))
    return Facts(parameters=names, required=names, width=circuit.qubit_count,
                 clbits=circuit.qubit_count)


def parse_braket(content: bytes, origin: str = "<circuit>"):
    """A Braket ``Circuit`` from Braket's OpenQASM 3 (as its ``to_ir`` writes it)."""
    from braket.circuits import Circuit

    try:
        return Circuit.from_ir(content.decode("utf-8"))
    except Exception as exc:
        raise SourceError(f"{origin} is not a Braket circuit: {one_line(exc)}") from None


def serialize(obj) -> tuple | None:
    """(format, bytes) for a circuit object a Python factory returned, or None if not ours."""
    module = type(obj).__module__
    if module.startswith("qiskit"):
        import qiskit.qasm3
        from qiskit import QuantumCircuit

        if isinstance(obj, QuantumCircuit):
            # OpenQASM 3, not QPY: QPY stores each parameter's random UUID, so the same
            # circuit built twice would get two digests, and every apply would rerun it.
            try:
                return "qasm3", qiskit.qasm3.dumps(obj).encode()
            except Exception as exc:
                raise SourceError(f"the circuit cannot be written as OpenQASM 3: "
                                  f"{one_line(exc)}") from None
    if module.startswith("braket"):
        from braket.circuits import Circuit
        from braket.circuits.serialization import IRType

        if isinstance(obj, Circuit):
            return "braket", obj.to_ir(IRType.OPENQASM).source.encode()
    return None
