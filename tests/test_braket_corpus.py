"""Real-world circuits on braket.local against exact references and Aer (braket_corpus.py).

CI size: the committed QASMBench programs of at most 5 qubits (58) and Qiskit library
circuits as built and lowered to IBM's basis (62 programs). The slow run (`pytest -m slow`)
takes every committed QASMBench program (81, up to 12 qubits; QRUN_QASMBENCH's instead when
set) and the library at five gate-set levels, one routed on a line: 611 programs, 110 of
them dynamic.
"""

from __future__ import annotations

import pytest

from . import braket_corpus as corpus

pytestmark = pytest.mark.filterwarnings("ignore:You are running a noise-free circuit")


@pytest.fixture(scope="module")
def adapters():
    from qrun.providers.aer.adapter import Adapter as Aer
    from qrun.providers.braket_local.adapter import Adapter

    return {d: Adapter(d, {}) for d in ("braket_sv", "braket_dm")}, Aer("automatic", {})


def _check_all(programs, adapters) -> list:
    braket, aer = adapters
    found = []
    for program in programs:
        found += [f"{program.name}: {p}" for p in corpus.problems(program, braket, aer)]
    return found


def test_qasmbench_small_circuits_agree(adapters):
    programs = corpus.qasmbench(corpus.DATA, max_qubits=5)
    assert len(programs) == 58
    assert _check_all(programs, adapters) == []


def test_qiskit_library_circuits_agree(adapters):
    programs = corpus.qiskit_library(full=False)
    assert len(programs) >= 30 and any(p.format == "qasm2" for p in programs)
    assert any("random_dynamic" in p.name for p in programs)
    assert _check_all(programs, adapters) == []


@pytest.mark.slow
def test_the_whole_corpus_agrees(adapters):
    programs = corpus.qasmbench(max_qubits=12) + corpus.qiskit_library(full=True)
    assert len(programs) >= 550
    assert _check_all(programs, adapters) == []
