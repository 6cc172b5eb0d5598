"""Qiskit's parsers are called with the process's output hidden (their Rust code prints on
descriptors 1 and 2; ANTLR's lexer on sys.stderr). Other threads print meanwhile: the
apply's notices, the progress bar. None of their lines may be lost, none may land in
another file, and none of the parsers' own messages may reach the terminal.

Run in a process of its own, its output read from real pipes, as a user's terminal sees it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import os, sys, tempfile, threading, time
    from qrun.sources import SourceError
    from qrun.sources.gate import parse_circuit

    BAD3 = b"OPENQASM 3.0; qubit[1] q; $$$ nonsense;"   # ANTLR prints, then the parse fails
    BAD2 = b"OPENQASM 2.0; qreg q[1]; x q[99999999999999999999];"  # a Rust panic
    GOOD = b"OPENQASM 2.0; include \\"qelib1.inc\\"; qreg q[2]; creg c[2]; h q[0]; measure q -> c;"
    stop = threading.Event()

    def parse_forever():
        while not stop.is_set():
            for fmt, text in (("qasm3", BAD3), ("qasm2", BAD2), ("qasm2", GOOD)):
                try:
                    parse_circuit(fmt, text)
                except SourceError:
                    pass
                time.sleep(0)  # let the printing thread have the interpreter

    parsers = [threading.Thread(target=parse_forever, daemon=True) for _ in range(2)]
    for thread in parsers:
        thread.start()
    # Files opened and closed meanwhile: a stream writing to a closed descriptor's number
    # would write into one of them.
    LINES = 600
    victims = []
    try:
        for i in range(LINES):
            print(f"notice {i}", file=sys.stderr)
            print(f"line {i}")
            time.sleep(0.001)  # the parsers' windows fall between and across the prints
            handle = tempfile.TemporaryFile()
            victims.append(handle)
            if len(victims) > 5:
                victims.pop(0).close()
    finally:
        stop.set()
    for thread in parsers:
        thread.join()
    for handle in victims:
        handle.seek(0)
        assert handle.read() == b"", "a parser's stand-in stream wrote into another file"
''')


def test_other_threads_output_is_kept_while_parsers_run_hidden(tmp_path):
    ran = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.splitlines() == [f"line {i}" for i in range(600)]
    assert ran.stderr.splitlines() == [f"notice {i}" for i in range(600)], ran.stderr[-2000:]
