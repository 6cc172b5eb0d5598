"""pasqal.cloud's check at validation, from what the sequence's parse recorded (no SDK).

Pasqal runs measured sequences; pulser's Pasqal connection measures one that is not in the
one basis it addresses (RemoteConnection._add_measurement_to_sequence), and refuses one
addressing several. Whether a sequence is measured and which bases it addresses are facts
of its parse (qrun/sources/pulser.py), cached with the rest, so this check needs no Pulser.
"""

from __future__ import annotations

# RemoteConnection._add_measurement_to_sequence's message (pulser-core 1.9), kept word for
# word so the verdict reads as it did when the SDK made it.
_UNDETERMINED_BASIS = ("The measurement basis can't be implicitly determined for a sequence "
                       "not addressing a single basis.")


def check_program(program, device: str, options: dict) -> str | None:
    """Pasqal runs measured sequences: one without a measurement must address one basis."""
    facts = program.facts
    if facts.measured is None or facts.addressed_bases is None:  # not a file's sequence facts
        from qrun.providers.pasqal_cloud.adapter import check_program as with_pulser

        return with_pulser(program, device, options)
    if facts.measured or len(facts.addressed_bases) == 1:
        return None
    return f"{program.origin} cannot run on Pasqal Cloud: {_UNDETERMINED_BASIS}"
