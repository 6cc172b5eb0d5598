"""Photonic programs: Perceval circuits and experiments in Perceval's serialization.

The program's content is a small JSON document: the serialized circuit or experiment and
the input state from the manifest's ``input:`` key (an experiment may carry its own).
Circuit parameters (``pcvl.P("theta")``) are swept like OpenQASM inputs.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

from ..interrupts import keep_ctrl_c
from . import Facts, SourceError, one_line


def load(content: bytes, origin: str = "<circuit>"):
    """(experiment, input state) from a program's content; raises SourceError."""
    import perceval as pcvl
    from perceval.serialization import deserialize

    keep_ctrl_c()  # the first Perceval import takes SIGINT over (qrun/interrupts.py)
    document = json.loads(content)
    serialized = _unzipped(document["serialized"].strip(), origin)
    try:
        obj = deserialize(serialized)
    except Exception as exc:
        raise SourceError(f"{origin} is not a Perceval serialization: {one_line(exc)}") from None
    if isinstance(obj, pcvl.ACircuit):  # a Circuit, or one component (a BS, a PS...)
        experiment = pcvl.Experiment(obj)
    elif isinstance(obj, pcvl.Experiment):
        experiment = obj
    else:
        raise SourceError(f"{origin} holds a {type(obj).__name__}, not a circuit or experiment")
    state = _input_state(document.get("input"), experiment, origin)
    return experiment, state


# Perceval writes `:PCVL:zip:` and base64 of a zlib stream; what it inflates to is capped,
# as zlib inflates a thousandfold: a 270 kB file held 200 MB, and a file at the size cap
# would take all memory. No circuit's serialization comes near the cap.
_ZIP_PREFIX = ":PCVL:zip:"
MAX_INFLATED_BYTES = 64 * 1024 * 1024


def _unzipped(serialized: str, origin: str) -> str:
    """The serialization with its zip layer undone (within MAX_INFLATED_BYTES)."""
    if not serialized.startswith(_ZIP_PREFIX):
        return serialized
    try:
        packed = base64.b64decode(serialized[len(_ZIP_PREFIX):])  # lenient, as Perceval is
        inflater = zlib.decompressobj()
        text = inflater.decompress(packed, MAX_INFLATED_BYTES)
        if inflater.unconsumed_tail:
            raise SourceError(f"{origin} inflates to more than {MAX_INFLATED_BYTES} bytes; no "
                              "circuit needs that")
        return text.decode("utf-8")
    except (ValueError, zlib.error) as exc:  # binascii.Error and UnicodeDecodeError included
        raise SourceError(f"{origin} is not a Perceval serialization: its zipped part cannot "
                          f"be read ({one_line(exc)})") from None


def _input_state(text: str | None, experiment, origin: str):
    import perceval as pcvl

    if text is None:
        if experiment.input_state is None:
            raise SourceError(f"{origin} needs an input state: add input: \"|1,0,...>\" to the circuit")
        return experiment.input_state
    try:
        state = pcvl.BasicState(text)
    except Exception as exc:
        raise SourceError(f"input {text!r} is not a Fock state like |1,0,1,0>: {one_line(exc)}") from None
    if state.m != experiment.m:
        raise SourceError(f"input {text!r} has {state.m} modes; {origin} has {experiment.m}")
    return state


def inspect(fmt: str, content: bytes, origin: str, index, include_dir: Path | None) -> Facts:
    experiment, state = load(content, origin)
    parameters = experiment.get_circuit_parameters()
    names = tuple(sorted(parameters))
    required = tuple(sorted(name for name, p in parameters.items() if not p.defined))
    return Facts(parameters=names, required=required, width=experiment.m, photons=state.n)


def serialize(obj) -> tuple | None:
    if not type(obj).__module__.startswith("perceval"):
        return None
    import perceval as pcvl
    from perceval.serialization import serialize as pcvl_serialize

    # A component (a beam splitter, a phase shifter, any ACircuit) is a circuit to Perceval:
    # it serializes as one, and is read back as a Circuit.
    if isinstance(obj, (pcvl.ACircuit, pcvl.Experiment)):
        return "perceval", pcvl_serialize(obj).encode()
    return None
