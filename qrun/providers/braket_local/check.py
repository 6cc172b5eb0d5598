"""braket.local's and braket.aws's check at validation, importing Qiskit only when needed.

A straight-line OpenQASM program (gates and final measurements, no word that may start
anything else) is translatable for a local simulator: Qiskit's basis translator turns every
gate into ones the simulators declare. Such a program is passed without Qiskit; any other
(conditions, loops, inputs, definitions, QPY, a Braket circuit, a cloud device) goes to the
full check, which parses and translates it (braket_local/program.py, Qiskit imported then).
"""

from __future__ import annotations

import re

LOCAL_DEVICES = ("braket_sv", "braket_dm")  # program.LOCAL_DEVICES (a test keeps them equal)
# Words that may start something beyond straight-line gates and measurements; an OpenQASM
# program without any is translatable for a local simulator, and is not parsed again.
BEYOND_STRAIGHT_LINE = re.compile(
    rb"\b(?:if|else|while|for|switch|box|opaque|def|extern|defcal|cal|break|continue|"
    rb"c_if|input|output|const|int|uint|float|angle|bool|duration|stretch)\b")


def check_program(program, device: str, options: dict) -> str | None:
    """Why ``program`` cannot run correctly on Braket device ``device``, or None."""
    if device in LOCAL_DEVICES and program.format in ("qasm2", "qasm3") \
            and not BEYOND_STRAIGHT_LINE.search(program.content):
        return None
    from qrun.providers.braket_local import program as translation

    return translation.check_program(program, device, options)
