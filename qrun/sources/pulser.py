"""Pulser programs: sequences in Pulser's abstract JSON representation.

Sequence variables (``seq.declare_variable``) are the program's parameters, swept like
OpenQASM inputs. The sequence's device travels with it and is checked against backends.
"""

from __future__ import annotations

from pathlib import Path

from . import Facts, SourceError, one_line


def load_sequence(content: bytes, origin: str = "<sequence>"):
    from pulser import Sequence

    try:
        return Sequence.from_abstract_repr(content.decode("utf-8"))
    except Exception as exc:  # pulser validates against its JSON schema; any failure is ours
        raise SourceError(f"{origin} is not a Pulser sequence: {one_line(exc)}") from None


def inspect(fmt: str, content: bytes, origin: str, index, include_dir: Path | None) -> Facts:
    sequence = load_sequence(content, origin)
    if sequence.is_register_mappable():
        raise SourceError(f"{origin} has a mappable register; qrun needs fixed atom positions")
    arrays = [name for name, v in sequence.declared_variables.items() if v.size != 1]
    if arrays:
        raise SourceError(f"{origin} declares array variables ({', '.join(sorted(arrays))}); "
                          "only single-valued variables can be swept")
    names = tuple(sorted(sequence.declared_variables))
    return Facts(parameters=names, required=names, width=len(sequence.register.qubit_ids),
                 device=device_facts(sequence.device), measured=bool(sequence.is_measured()),
                 addressed_bases=tuple(sorted(sequence.get_addressed_bases())))


def device_facts(device) -> dict:
    from pulser.devices import VirtualDevice

    return {"name": device.name, "virtual": isinstance(device, VirtualDevice),
            "max_atom_num": device.max_atom_num, "max_runs": device.max_runs}


def build(sequence, params: dict):
    """The sequence with its variables bound (int variables take int values, as Pulser asks)."""
    values = {}
    for name, value in params.items():
        variable = sequence.declared_variables[name]
        values[name] = int(round(value)) if variable.dtype is int else float(value)
    return sequence.build(**values) if values else sequence


def serialize(obj) -> tuple | None:
    if not type(obj).__module__.startswith("pulser"):
        return None
    from pulser import Sequence

    if isinstance(obj, Sequence):
        return "pulser", obj.to_abstract_repr().encode()
    return None
