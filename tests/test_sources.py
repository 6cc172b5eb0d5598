"""Circuit sources that crashed qrun or were refused wrongly (issue 8), and path roots.

- Qiskit's native OpenQASM 3 importer panics (a BaseException) on some valid programs:
  every command exits 2 with one line per problem, never a traceback; where the complete
  importer takes the program, it runs and gives the counts Aer gives when called directly.
- Pragmas and annotations are refused with their file, line and text.
- The OpenQASM version is found past any comment header.
- Perceval components (a beam splitter...) are circuits.
- `qrun validate --state-dir`; which folder a manifest's paths must stay inside.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from qrun import manifest as manifests
from qrun.errors import QrunError
from qrun.sources import SourceError, _rust, guess_format, load_file, make_program, qasm3

from .conftest import GHZ2, qrun, write

# Some tests call the native importer directly, to show its failures.
pytestmark = pytest.mark.filterwarnings("ignore:This is an experimental native version")

HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'

# Valid OpenQASM 3 that Qiskit 2.6's native importer panics on.
SUBROUTINE = HEADER + "def flip(qubit a) {\n  x a;\n}\nqubit[1] q;\nbit[1] c;\nflip(q[0]);\n" \
                      "c[0] = measure q[0];\n"
CALIBRATION_GRAMMAR = 'OPENQASM 3.0;\ndefcalgrammar "openpulse";\ninclude "stdgates.inc";\n' \
                      "qubit[1] q;\nbit[1] c;\nx q[0];\nc[0] = measure q[0];\n"
QELIB_IN_QASM3 = 'OPENQASM 3.0;\ninclude "qelib1.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\n' \
                 "cx q[0], q[1];\nc = measure q;\n"
# ...and one the complete importer takes: c[0] is 0, so !c[0] flips q[1]: always 01.
NEGATED_CONDITION = HEADER + "qubit[2] q;\nbit[2] c;\nc[0] = measure q[0];\n" \
                             "if (!c[0]) { x q[1]; }\nc[1] = measure q[1];\n"


def xor_condition_as_qiskit_writes_it() -> str:
    """`if (c[0] ^ c[1])`, written by qiskit.qasm3.dumps."""
    import qiskit.qasm3
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.classical import expr

    circuit = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(2, "c"))
    circuit.x(0)
    circuit.measure(0, 0)
    with circuit.if_test(expr.bit_xor(circuit.clbits[0], circuit.clbits[1])):
        circuit.x(1)
    circuit.measure(1, 1)
    return qiskit.qasm3.dumps(circuit)


FACTORY = '''
def xor_condition():
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.classical import expr

    circuit = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(2, "c"))
    circuit.x(0)
    circuit.measure(0, 0)
    with circuit.if_test(expr.bit_xor(circuit.clbits[0], circuit.clbits[1])):
        circuit.x(1)
    circuit.measure(1, 1)
    return circuit
'''

CAMPAIGN = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {{name: {name}}}
    spec:
      shots: 200
      seed: 5
      circuits:
{circuits}
      backends:
        - {{name: aer, provider: qiskit.aer}}
"""


def campaign(folder: Path, name: str, circuits: list[str]) -> Path:
    lines = "\n".join(f"        - {c}" for c in circuits)
    return write(folder, f"{name}.yaml", CAMPAIGN.format(name=name, circuits=lines))


def run(command: str, manifest: Path, folder: Path) -> subprocess.CompletedProcess:
    extra = {"apply": ["--no-progress"], "export": ["-o", "-", "-f", "jsonl"]}.get(command, [])
    # With RUST_BACKTRACE a panic prints a backtrace: it must stay hidden too.
    return qrun(command, manifest, *extra, cwd=folder, env={"RUST_BACKTRACE": "1"})


@pytest.fixture(scope="module")
def panicking(tmp_path_factory) -> Path:
    """A project whose circuits are the four constructs, as files and as a factory."""
    folder = tmp_path_factory.mktemp("panics")
    write(folder, "circuits/subroutine.qasm", SUBROUTINE)
    write(folder, "circuits/grammar.qasm", CALIBRATION_GRAMMAR)
    write(folder, "circuits/qelib.qasm", QELIB_IN_QASM3)
    write(folder, "circuits/xor.qasm", xor_condition_as_qiskit_writes_it())
    write(folder, "build.py", FACTORY)
    return campaign(folder, "panics", [
        "{name: subroutine, source: circuits/subroutine.qasm}",
        "{name: grammar, source: circuits/grammar.qasm}",
        "{name: qelib, source: circuits/qelib.qasm}",
        "{name: xor, source: circuits/xor.qasm}",
        '{name: built, source: {python: "build:xor_condition"}}'])


EXPECTED_REFUSALS = [
    "spec.circuits[0].source: circuits/subroutine.qasm:3: subroutine definitions (def): valid "
    "OpenQASM 3, but not supported by Qiskit's OpenQASM 3 importer, which qrun reads programs "
    "with (at 'def flip(qubit a) {')",
    "spec.circuits[1].source: circuits/grammar.qasm:2: calibration grammars (defcalgrammar): "
    "valid OpenQASM 3, but not supported by Qiskit's OpenQASM 3 importer, which qrun reads "
    "programs with (at 'defcalgrammar \"openpulse\";')",
    "spec.circuits[2].source: circuits/qelib.qasm includes 'qelib1.inc', OpenQASM 2's gate "
    "library, but is read as OpenQASM 3, whose library is 'stdgates.inc'",
    "spec.circuits[3].source: circuits/xor.qasm:7: not readable as OpenQASM 3 by Qiskit: "
    "unhandled binary operator '^' (at 'if (c[0] ^ c[1]) {')",
    "spec.circuits[4].source: python:build:xor_condition:7: not readable as OpenQASM 3 by "
    "Qiskit: unhandled binary operator '^' (at 'if (c[0] ^ c[1]) {')",
]


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "export"])
def test_programs_the_native_importer_panics_on_are_refused_cleanly(panicking, command,
                                                                     _state_dir):
    result = run(command, panicking, panicking.parent)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1] == "5 problems found; nothing was run."
    assert [line.split(": ", 1)[1] for line in lines[:-1]] == EXPECTED_REFUSALS
    assert all(line.startswith(f"{panicking}:") for line in lines[:-1])
    assert not _state_dir.exists(), "nothing may be written for a refused manifest"


def test_program_the_native_importer_panics_on_runs_when_the_complete_one_takes_it(
        tmp_path, _state_dir):
    import qiskit.qasm3
    from qiskit_aer import AerSimulator

    with pytest.raises(_rust.RustPanic):  # the premise: the native importer panics on it
        _rust.call(qiskit.qasm3.loads_experimental, NEGATED_CONDITION)
    write(tmp_path, "circuits/negated.qasm", NEGATED_CONDITION)
    manifest = campaign(tmp_path, "negated", ["{name: negated, source: circuits/negated.qasm}"])
    for command in ("validate", "plan", "apply"):
        result = run(command, manifest, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "panicked" not in result.stderr and "Traceback" not in result.stderr
    exported = run("export", manifest, tmp_path)
    assert exported.returncode == 0, exported.stderr
    counts = json.loads(exported.stdout.splitlines()[0])["counts"]
    # The reference: Aer on what the complete importer reads, called directly (Qiskit
    # writes bit 0 last; qrun's character i is bit i).
    direct = AerSimulator(seed_simulator=1).run(qiskit.qasm3.loads(NEGATED_CONDITION),
                                                shots=200).result().get_counts()
    assert counts == {key[::-1]: value for key, value in direct.items()} == {"01": 200}


def test_a_panic_falls_back_and_interrupts_go_on(monkeypatch):
    import qiskit.qasm3

    try:
        qiskit.qasm3.loads_experimental(SUBROUTINE)
    except BaseException as exc:  # a real panic, to borrow its type
        panic_type = type(exc)
    assert _rust.is_panic(panic_type("x")) and not issubclass(panic_type, Exception)
    reference = qiskit.qasm3.loads(NEGATED_CONDITION)

    def panics(text):
        raise panic_type("as if the native importer panicked")

    monkeypatch.setattr(qiskit.qasm3, "loads_experimental", panics)
    assert qasm3.parse(NEGATED_CONDITION, "c.qasm") == reference  # the complete importer's
    for stop in (KeyboardInterrupt, SystemExit):
        def interrupted(text, stop=stop):
            raise stop()

        monkeypatch.setattr(qiskit.qasm3, "loads_experimental", interrupted)
        with pytest.raises(stop):
            qasm3.parse(NEGATED_CONDITION, "c.qasm")


def test_qasm2_parser_panic_on_a_huge_integer_is_an_error(capfd):
    text = GHZ2.replace("h q[0];", "h q[99999999999999999999];")
    with pytest.raises(SourceError, match="an integer too large"):
        make_program("qasm2", text.encode(), "big.qasm")
    assert capfd.readouterr() == ("", "")  # the panic's message stayed hidden


def test_native_importer_gives_up_at_its_first_printed_error(capfd):
    """Printing its errors made the native importer quadratic: 10,000 `measure ... -> ...`
    lines (valid OpenQASM 3 it does not parse) took 12 s before the fallback; a 40 kB line
    of stray `$` 11 s."""
    import time

    arrows = HEADER + "qubit[1] q;\nbit[1] c;\n" + "measure q[0] -> c[0];\n" * 10_000
    started = time.monotonic()
    assert qasm3._native_import(arrows) is None
    assert time.monotonic() - started < 3
    started = time.monotonic()
    with pytest.raises(SourceError, match="token recognition error"):
        make_program("qasm3", (HEADER + "qubit q;\n" + "$ " * 20_000).encode(), "d.qasm")
    assert time.monotonic() - started < 3
    assert capfd.readouterr() == ("", "")


def test_rust_output_is_refused_while_python_output_goes_on(capfd):
    import os
    import threading

    with _rust.output_hidden():
        with pytest.raises(OSError):
            os.write(1, b"what a Rust parser prints")
        thread = threading.Thread(target=print, args=("a progress line",))
        thread.start()
        thread.join()
        print("python output")
    assert capfd.readouterr().out == "a progress line\npython output\n"


# ---------------------------------------------------------------- directives

@pytest.mark.parametrize("body, line, message", [
    ("#pragma braket noise bit_flip(0.1) q[0]\nx q[0];\n", 5,
     "pragma '#pragma braket noise bit_flip(0.1) q[0]' cannot be honoured: qrun reads "
     "OpenQASM 3 with Qiskit, which takes no pragmas, so its noise channel would be left "
     "out; remove it"),
    ("x q[0];\n  pragma braket verbatim\nbox { x q[0]; }\n#pragma braket result probability\n", 6,
     "pragma 'pragma braket verbatim' cannot be honoured: qrun reads OpenQASM 3 with "
     "Qiskit, which takes no pragmas, so its box would not run verbatim (qrun compiles each "
     "program for its backend); remove it (1 more directive follows, from line 8)"),
    ("x q[0]; pragma vendor.setting 3\n", 5,
     "pragma 'pragma vendor.setting 3' cannot be honoured: qrun reads OpenQASM 3 with "
     "Qiskit, which takes no pragmas, so dropping it may change what runs; remove it"),
    ("@vendor.noswap\nx q[0]; @a.b c\nx q[0];\n", 5,
     "annotation '@vendor.noswap' cannot be honoured: qrun reads OpenQASM 3 with Qiskit, "
     "which would drop it, and dropping a directive may change what runs; remove it (1 more "
     "directive follows, from line 6)"),
])
def test_directives_are_refused_with_their_line_and_text(body, line, message):
    text = HEADER + "qubit[2] q;\nbit[2] c;\n" + body + "c = measure q;\n"
    with pytest.raises(SourceError) as refused:
        make_program("qasm3", text.encode(), "circuits/p.qasm")
    assert str(refused.value) == f"circuits/p.qasm:{line}: {message}"


def test_sizes_and_control_counts_written_as_expressions_are_read():
    text = HEADER + ("qubit[2*2] q;\nbit[(4)] c;\nctrl(1+1) @ x q[0], q[1], q[2];\n"
                     "negctrl(1) @ ctrl @ x q[1], q[2], q[3];\nc = measure q;\n")
    assert make_program("qasm3", text.encode(), "ok.qasm").facts.width == 4


def test_what_only_looks_like_a_directive_is_read():
    text = HEADER + ("qubit[2] q;\nbit[2] c;\n// #pragma braket noise\n/* @annotation\n"
                     "pragma x */ x q[0];\nctrl @ x q[0], q[1];\nnegctrl @ x q[0], q[1];\n"
                     "c = measure q;\n")
    assert make_program("qasm3", text.encode(), "ok.qasm").facts.width == 2


def test_directive_refusal_reaches_the_cli_with_the_manifest_line(tmp_path):
    write(tmp_path, "circuits/p.qasm", HEADER + "qubit[1] q;\nbit[1] c;\n"
                                                "#pragma braket noise depolarizing(0.1) q[0]\n"
                                                "c[0] = measure q[0];\n")
    manifest = campaign(tmp_path, "pragma", ["{name: p, source: circuits/p.qasm}"])
    result = qrun("validate", manifest, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{manifest}:8: spec.circuits[0].source: circuits/p.qasm:5: pragma '#pragma braket "
        "noise depolarizing(0.1) q[0]' cannot be honoured: qrun reads OpenQASM 3 with Qiskit, "
        "which takes no pragmas, so its noise channel would be left out; remove it")


# ---------------------------------------------------------------- other refusals before parsing

@pytest.mark.parametrize("fmt, text, message", [
    ("qasm3", HEADER + "qubit[100000000] q;\n", "declares 100,000,000 qubits"),
    ("qasm3", HEADER + "bit[0x10_0000] c;\n", "declares 1,048,576 bits"),
    ("qasm3", HEADER + "h $500000;\n", "declares 500,001 qubits"),
    ("qasm3", HEADER + f"qubit[{'9' * 5000}] q;\n", "size or qubit index of 5000 digits"),
    ("qasm3", HEADER + "qubit[100000*100000] q;\n", "declares 10,000,000,000 qubits"),
    ("qasm3", HEADER + "qubit[3] q;\nctrl(2147483648) @ x q[0], q[1], q[2];\n",
     "big.qasm:4: ctrl(2147483648) asks for 2,147,483,648 controls, but the statement lists 3 "
     "operands"),
    ("qasm3", HEADER + "qubit q;\nfor int i in [0:18446744073709551616] { x q; }\n",
     "big.qasm:4: a for loop's range reaches 18,446,744,073,709,551,616, past what Qiskit can "
     "hold (2^62)"),
    ("qasm2", 'OPENQASM 2.0;\ninclude "qelib1.inc";\n' + "qreg q[60000];\nqreg r[60000];\n",
     "declares 120,000 qubits"),
    ("qasm2", 'OPENQASM 2.0;\ninclude "stdgates.inc";\nqreg q[1];\n',
     "includes 'stdgates.inc', OpenQASM 3's gate library, but is read as OpenQASM 2, whose "
     "library is 'qelib1.inc'"),
    ("qasm2", HEADER, "declares OPENQASM 3.0 but is read as OpenQASM 2 (format: qasm2); set "
                      "format: qasm3, or leave format out"),
])
def test_refused_before_any_parser_builds_it(fmt, text, message):
    with pytest.raises(SourceError, match=re.escape(message)):
        make_program(fmt, text.encode(), "big.qasm")


def test_a_qpy_file_declaring_a_huge_circuit_is_refused_unread():
    import io
    import struct

    import qiskit
    import qiskit.qpy

    circuit = qiskit.QuantumCircuit(2, 2)
    circuit.measure([0, 1], [0, 1])
    buffer = io.BytesIO()
    qiskit.qpy.dump(circuit, buffer)
    damaged = bytearray(buffer.getvalue())
    damaged[33] = 20  # the first byte of the qubit count: 2 becomes 335,544,322
    assert struct.unpack_from("!I", damaged, 33)[0] == 335_544_322
    with pytest.raises(SourceError, match="declares a circuit of 335,544,322 qubits"):
        make_program("qpy", bytes(damaged), "big.qpy")


# ---------------------------------------------------------------- format guessing

# OpenQASM 2 has line comments only; OpenQASM 3 block comments too.
LICENCE = "".join(f"// line {i} of a licence header, which mentions OPENQASM 3.0; here\n"
                  for i in range(200)) + "\n  \t\n"


@pytest.mark.parametrize("suffix", [".qasm", ".txt", ""])
def test_openqasm2_after_a_long_comment_header_is_read_as_openqasm2(tmp_path, suffix):
    path = tmp_path / f"ghz{suffix}"
    path.write_text(LICENCE + GHZ2)
    assert len(LICENCE) > 4096 * 2
    program = load_file(path, path.name)
    assert program.format == "qasm2" and program.facts.width == 3


def test_openqasm3_after_a_long_header_of_block_comments_is_read_as_openqasm3(tmp_path):
    path = tmp_path / "flip.txt"
    path.write_text("/* OPENQASM 2.0; */\n" * 500 + LICENCE + HEADER +
                    "qubit[1] q;\nbit[1] c;\nx q[0];\nc[0] = measure q[0];\n")
    assert load_file(path, path.name).format == "qasm3"


def test_version_is_found_past_any_amount_of_comments_quickly():
    import time

    header = b"// a comment line\n" * 500_000 + b"/*" + b" " * 5_000_000 + b"*/\n\t \r\n"
    started = time.monotonic()
    assert guess_format(Path("big.qasm"), header + b"OPENQASM 2.0;") == "qasm2"
    assert guess_format(Path("big.qasm"), header + b"OPENQASM 3;") == "qasm3"
    assert guess_format(Path("big.txt"), header + b"qreg q[1];") is None
    assert guess_format(Path("big.qasm"), b"/* never closed OPENQASM 2.0;") == "qasm3"
    assert guess_format(Path("a.qasm"), b"\xef\xbb\xbf  OPENQASM 2.0;") == "qasm2"
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- Perceval components

COMPONENTS = '''
import perceval as pcvl


def beam_splitter():
    return pcvl.BS()


def hadamard_splitter():
    return pcvl.BS.H()


def swap():
    return pcvl.PERM([1, 0])


def phase_shifter():
    return pcvl.PS(0.3)
'''


def test_perceval_components_run_as_circuits(tmp_path, _state_dir):
    import perceval as pcvl
    from perceval.serialization import serialize

    write(tmp_path, "components.py", COMPONENTS)
    (tmp_path / "bs.pcvl").write_text(serialize(pcvl.BS.Ry()))  # another 50:50 splitter
    manifest = write(tmp_path, "photons.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: photons}
        spec:
          shots: 2000
          seed: 7
          circuits:
            - {name: hom, source: {python: "components:beam_splitter"}, input: "|1,1>"}
            - {name: hom-file, source: bs.pcvl, input: "|1,1>"}
            - {name: split, source: {python: "components:hadamard_splitter"}, input: "|1,0>"}
            - {name: swap, source: {python: "components:swap"}, input: "|1,0>"}
            - {name: phase, source: {python: "components:phase_shifter"}, input: "|1>"}
          backends:
            - {name: slos, provider: perceval.local}
    """)
    assert qrun("apply", manifest, "--no-progress", cwd=tmp_path).returncode == 0
    exported = qrun("export", manifest, "-o", "-", "-f", "jsonl", cwd=tmp_path)
    counts = {row["circuit"]: row["counts"] for row in map(json.loads, exported.stdout.splitlines())}
    # Exact: two photons on a 50:50 beam splitter leave together (Hong-Ou-Mandel), each way
    # with probability 1/2; one photon leaves either way with 1/2. 2000 shots: sd 22, so
    # 5 sd is 112.
    for name in ("hom", "hom-file"):
        assert set(counts[name]) == {"|2,0>", "|0,2>"}, counts[name]
        assert abs(counts[name]["|2,0>"] - 1000) <= 112
    assert set(counts["split"]) == {"|1,0>", "|0,1>"}
    assert abs(counts["split"]["|1,0>"] - 1000) <= 112
    assert counts["swap"] == {"|0,1>": 2000}
    assert counts["phase"] == {"|1>": 2000}


# ---------------------------------------------------------------- validate --state-dir

def test_validate_takes_state_dir_and_says_where_the_state_lives(project, tmp_path, _state_dir):
    write(project, "m.yaml", "apiVersion: qrun/v1\nkind: Campaign\nmetadata: {name: where}\n"
                             "spec:\n  circuits: [{name: g, source: circuits/ghz.qasm}]\n"
                             "  backends: [{name: aer, provider: qiskit.aer}]\n")
    chosen = tmp_path / "elsewhere"
    given = qrun("validate", project / "m.yaml", "--state-dir", chosen)
    assert given.returncode == 0, given.stderr
    assert given.stdout.rstrip().endswith(f"; state in {chosen / 'where.sqlite'}")
    default = qrun("validate", project / "m.yaml")  # conftest's QRUN_STATE_DIR
    assert default.stdout.rstrip().endswith(f"; state in {_state_dir / 'where.sqlite'}")
    assert not chosen.exists() and not _state_dir.exists(), "validate writes no state"


# ---------------------------------------------------------------- where paths may lead

LAYOUT = """
    apiVersion: qrun/v1
    kind: Campaign
    metadata: {name: layout}
    spec:
      circuits: [{name: g, source: SOURCE}]
      backends: [{name: aer, provider: qiskit.aer}]
"""


@pytest.fixture
def layout(tmp_path) -> Path:
    """manifests/a.yaml beside circuits/, outside any git repository."""
    project = tmp_path / "project"
    write(project, "circuits/ghz.qasm", GHZ2)
    write(project, "manifests/a.yaml", LAYOUT.replace("SOURCE", "../circuits/ghz.qasm"))
    (tmp_path / "elsewhere").mkdir()
    return project


def refusal(result) -> str:
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()[0].split("spec.circuits[0].source: ", 1)[1]


WIDEN = "; --root DIR (or QRUN_ROOT) allows another folder"


def test_outside_git_the_current_folder_is_the_root_when_it_holds_the_manifest(layout):
    assert qrun("validate", "manifests/a.yaml", cwd=layout).returncode == 0
    result = qrun("validate", layout / "manifests/a.yaml", cwd=layout.parent / "elsewhere")
    assert refusal(result) == (
        f"'../circuits/ghz.qasm' points outside {layout / 'manifests'}; paths must stay inside "
        "the manifest's folder, as no git repository holds the manifest and the current "
        f"folder does not{WIDEN}")


def test_root_option_and_variable_widen_it(layout):
    elsewhere = layout.parent / "elsewhere"
    manifest = layout / "manifests/a.yaml"
    assert qrun("validate", manifest, "--root", layout, cwd=elsewhere).returncode == 0
    assert qrun("validate", manifest, cwd=elsewhere, env={"QRUN_ROOT": str(layout)}).returncode == 0
    for command in ("plan", "status"):
        assert qrun(command, manifest, "--root", layout, cwd=elsewhere).returncode == 0
    assert manifests.load(manifest, root=layout).circuits["g"].program.facts.width == 3
    missing = qrun("validate", manifest, "--root", layout / "nope", cwd=elsewhere)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    with pytest.raises(QrunError, match="no such folder"):
        manifests.load(manifest, root=layout / "nope")


@pytest.mark.parametrize("source", ["/etc/hostname", "../../elsewhere/ghz.qasm", "link.qasm"])
def test_escapes_stay_refused_and_name_the_rule(layout, source):
    (layout.parent / "elsewhere" / "ghz.qasm").write_text(GHZ2)
    (layout / "manifests" / "link.qasm").symlink_to(layout.parent / "elsewhere" / "ghz.qasm")
    write(layout, "manifests/a.yaml", LAYOUT.replace("SOURCE", source))
    assert refusal(qrun("validate", "manifests/a.yaml", cwd=layout)) == (
        f"{source!r} points outside {layout}; paths must stay inside the current folder, as "
        f"no git repository holds the manifest{WIDEN}")
    narrow = qrun("validate", "manifests/a.yaml", "--root", layout / "manifests", cwd=layout)
    assert refusal(narrow) == (f"{source!r} points outside {layout / 'manifests'}; paths must "
                               "stay inside the folder --root (or QRUN_ROOT) gives")


def test_home_folder_is_no_root(_private_home):
    project = _private_home / "project"
    write(project, "circuits/ghz.qasm", GHZ2)
    write(project, "manifests/a.yaml", LAYOUT.replace("SOURCE", "../circuits/ghz.qasm"))
    assert refusal(qrun("validate", "project/manifests/a.yaml", cwd=_private_home)) == (
        f"'../circuits/ghz.qasm' points outside {(project / 'manifests').resolve()}; paths must "
        "stay inside the manifest's folder, as no git repository holds the manifest and the "
        f"current folder is the home folder{WIDEN}")
    assert qrun("validate", "manifests/a.yaml", cwd=project).returncode == 0


def test_inside_git_the_repository_is_the_root(layout):
    subprocess.run(["git", "init", "-q"], cwd=layout, check=True)
    elsewhere = layout.parent / "elsewhere"
    assert qrun("validate", layout / "manifests/a.yaml", cwd=elsewhere).returncode == 0
    write(layout, "manifests/a.yaml", LAYOUT.replace("SOURCE", "../../elsewhere/x.qasm"))
    assert refusal(qrun("validate", layout / "manifests/a.yaml", cwd=elsewhere)) == (
        f"'../../elsewhere/x.qasm' points outside {layout}; paths must stay inside the "
        f"manifest's git repository{WIDEN}")


def test_path_root_rules_in_process(tmp_path, _private_home):
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    assert manifests.path_root(folder, cwd=tmp_path / "a").folder == tmp_path / "a"
    assert manifests.path_root(folder, cwd=tmp_path / "a" / "b").folder == folder
    assert manifests.path_root(folder, cwd=tmp_path / "elsewhere").folder == folder
    assert manifests.path_root(folder, cwd=Path("/")).folder == folder
    assert manifests.path_root(folder, tmp_path, cwd=Path("/")).folder == tmp_path


# ---------------------------------------------------------------- schema patterns

def test_schema_patterns_end_where_the_text_ends():
    pattern = manifests._ecma_regex
    assert pattern("^[a-z]+$").search("abc") and not pattern("^[a-z]+$").search("abc\n")
    assert pattern(r"^a\$$").search("a$") and not pattern(r"^a\$$").search("a$\n")
    assert pattern("^[$]+$").search("$$") and not pattern("^[$]+$").search("$\n")
    assert not pattern(r"^\d$").search("\u0663")  # ECMA's \d is ASCII, as the schema means


def test_a_zipped_perceval_serialization_is_inflated_within_a_cap():
    import base64
    import zlib

    from qrun.sources import perceval, wrap_photonic

    bomb = zlib.compress(b":PCVL:Circuit:" + b"A" * (perceval.MAX_INFLATED_BYTES + 1), 9)
    text = ":PCVL:zip:" + base64.b64encode(bomb).decode()
    assert len(text) < 200_000  # a small file...
    with pytest.raises(SourceError, match="inflates to more than 67108864 bytes"):
        make_program("perceval", wrap_photonic(text.encode(), "|1,1>"), "bomb.pcvl")
