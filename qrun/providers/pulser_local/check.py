"""pulser.local's check at validation, without importing an SDK unless it must.

Only ``mimic_qpu`` asks for a check: the sequence must pass what a QPU would refuse, which
only Pulser itself can judge (its Backend.validate_sequence), so Pulser is imported then,
and only then. Without the option there is nothing to check beyond family and size.
"""

from __future__ import annotations


def check_program(program, device: str, options: dict) -> str | None:
    """With mimic_qpu, the sequence must pass the checks a QPU would apply."""
    if not options.get("mimic_qpu"):
        return None
    from pulser.backend.abc import Backend

    from qrun.sources.pulser import load_sequence

    try:
        Backend.validate_sequence(load_sequence(program.content, program.origin), mimic_qpu=True)
    except (TypeError, ValueError) as exc:
        return f"{program.origin} cannot be emulated as on a QPU (mimic_qpu): {exc}"
    return None
