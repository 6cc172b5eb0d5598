"""Fuzzing the source parsers: whatever a circuit file holds, qrun raises SourceError only.

OpenQASM 2 and 3 text (edits of valid programs that use the odd but valid corners of both
specifications, and random token soups), QPY bytes, Pulser JSON and Perceval serializations
go through `make_program` and `load_file` (which guesses the format and reads the file);
each may be accepted or refused with a one-line SourceError, and nothing else: no other
exception, no output on stdout or stderr, no example slower than a few seconds. A manifest
of fuzzed sources then goes through `qrun validate`: exit 0 or 2, one line per problem.

The default run takes about 20 s; each fuzz test has a `_long` variant, marked slow, with
ten times the examples.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrun.sources import SourceError, load_file, make_program

from .conftest import EXAMPLES, qrun, write

SLOW_FACTOR = 10  # examples of the `slow` variant of each fuzz test, against the default


def fuzz_settings(examples: int):
    # A generous deadline: an example a thousand times slower than the rest (a parser
    # building a huge register) fails; a loaded CI machine does not.
    return settings(max_examples=examples, deadline=timedelta(seconds=10),
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def fuzz(examples: int, *strategies):
    """A property as two tests: ``examples`` examples by default, ten times more under
    `-m slow`."""
    def both(check):
        fast = fuzz_settings(examples)(given(*strategies)(check))
        slow = pytest.mark.slow(fuzz_settings(examples * SLOW_FACTOR)(given(*strategies)(check)))
        return fast, slow
    return both


# ---------------------------------------------------------------- valid programs to start from

QASM2 = [
    # Comments, the builtins U and CX, opaque gates, gates with and without parameters,
    # broadcasting, conditionals on a register, expressions with every function.
    """// a comment
OPENQASM 2.0;
include "qelib1.inc";
opaque magic(a) q;
gate g(theta, phi) a, b { U(theta, phi, 0) a; CX a, b; }
gate empty a { }
qreg q[3];
creg c[3];
creg d[1];
h q;
g(pi/2, -1e-3) q[0], q[1];
u3(sin(pi/2)^2, cos(0), sqrt(2)*exp(1)/ln(3)) q[2];
empty q[0];
barrier q;
measure q -> c;
if (c == 5) x q[0];
reset q[1];
measure q[0] -> d[0];
""",
    """OPENQASM 2.0;
include "qelib1.inc";
qreg a[1]; qreg b[2]; creg r[3];
x a[0]; cx a[0], b[1]; ccx a[0], b[0], b[1]; u1(0.5) b[0]; rzz(tan(0.3)) a[0], b[0];
measure a[0] -> r[0]; measure b[0] -> r[1]; measure b[1] -> r[2];
""",
]

QASM3 = [
    """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input angle[32] phi;
qubit[3] q;
bit[3] c;
/* a block
   comment */
gate g(t) a, b { ctrl @ rz(t) a, b; inv @ s a; pow(0.5) @ x b; negctrl @ x a, b; }
U(π, 0, τ / 2) q[0];
gphase(euler);
g(theta) q[0], q[1];
rx(phi) q[2];
ctrl(2) @ x q[0], q[1], q[2];
let pair = q[0:1];
x pair[1];
c = measure q;
if (c[0]) { x q[1]; } else { h q[2]; }
if (c == 3) { reset q[0]; }
if (!c[1]) { z q[0]; }
c[2] = measure q[2];
""",
    """OPENQASM 3;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
box { h q[0]; cx q[0], q[1]; }
delay[100ns] q[0];
barrier q;
for int i in [0:2] { x q[0]; }
while (c[0] == false) { c[0] = measure q[0]; x q[0]; break; }
c[0] = measure q[0];
reset q[0];
c[1] = measure q[0];
if (c == "10") { x q[1]; }
measure q -> c;
""",
    # OpenQASM 2 spellings that OpenQASM 3 keeps, physical qubits, number literals.
    """OPENQASM 3.0;
include "stdgates.inc";
qreg q[2];
creg c[2];
rz(1_000.5e-3) q[0x1];
cp(0.25) q[0], q[1];
measure q -> c;
""",
    """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
h $0;
cx $0, $1;
c[0] = measure $0;
c[1] = measure $1;
""",
]

TOKENS = [
    "OPENQASM", "2.0", "3.0", "3", ";", "include", '"stdgates.inc"', '"qelib1.inc"', "qubit",
    "bit", "qreg", "creg", "[", "]", "q", "c", "h", "x", "cx", "rx", "U", "CX", "(", ")", "pi",
    "π", "τ", "euler", ",", "measure", "->", "=", "{", "}", "if", "else", "while", "for", "in",
    "int", "uint", "float", "angle", "bool", "complex", "duration", "stretch", "input",
    "output", "const", "let", "gate", "opaque", "def", "return", "box", "barrier", "reset",
    "delay", "100ns", "10dt", "ctrl", "negctrl", "inv", "pow", "@", "$0", "$7", "0", "1", "2",
    "65535", "4294967296", "9" * 5000, "1e-3", "0x1f", "1_000", "true", "false", "==", "!=", "&&", "||",
    "!", "~", "^", "&", "|", "<<", ">>", "+", "-", "*", "/", "%", "**", "//", "/*", "*/",
    "#pragma", "pragma", "@ann", "defcal", "defcalgrammar", '"openpulse"', "cal", "extern",
    "switch", "case", "default", "break", "continue", "end", "gphase", "sizeof", "array",
    "mutable", "readonly", "durationof", ":", ".", "?", "\n", " ", "\t", "\r\n", "\x00",
    "\ufeff", "é", "\u202e", '"', "'",
]


def qpy_programs() -> list[bytes]:
    """QPY files Qiskit writes: measurements, parameters, control flow, a custom gate, two
    circuits in one file, a classical variable."""
    import qiskit.qpy
    from qiskit import QuantumCircuit
    from qiskit.circuit import Gate, Parameter
    from qiskit.circuit.classical import expr, types

    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    rotation = QuantumCircuit(1, 1)
    rotation.rx(Parameter("theta"), 0)
    rotation.measure(0, 0)
    dynamic = QuantumCircuit(2, 2)
    dynamic.h(0)
    dynamic.measure(0, 0)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.x(1)
    dynamic.measure(1, 1)
    custom = QuantumCircuit(2, 2)
    definition = QuantumCircuit(2)
    definition.cx(0, 1)
    gate = Gate("mine", 2, [])
    gate.definition = definition
    custom.append(gate, [0, 1])
    custom.measure_all(add_bits=False)
    variable = QuantumCircuit(1, 1)
    flag = variable.add_var("flag", expr.lift(True, types.Bool()))
    with variable.if_test(flag):
        variable.x(0)
    variable.measure(0, 0)
    files = []
    for circuits in ([bell], [rotation], [dynamic], [custom], [variable], [bell, rotation]):
        buffer = io.BytesIO()
        qiskit.qpy.dump(circuits, buffer)
        files.append(buffer.getvalue())
    return files


def perceval_serializations() -> list[tuple[str, str | None]]:
    """(serialization, input state): circuits, components, an experiment with its input."""
    import perceval as pcvl
    from perceval.serialization import serialize

    experiment = pcvl.Experiment(pcvl.Circuit(2) // pcvl.BS())
    experiment.with_input(pcvl.BasicState("|1,1>"))
    return [((EXAMPLES / "circuits" / "hom.pcvl").read_text(), "|1,1>"),
            ((EXAMPLES / "circuits" / "mach-zehnder.pcvl").read_text(), "|1,0>"),
            (serialize(pcvl.BS()), "|1,1>"), (serialize(pcvl.PS(pcvl.P("phi"))), "|1>"),
            (serialize(experiment), None)]


@pytest.fixture(scope="module")
def qpy_files():
    return qpy_programs()


@pytest.fixture(scope="module")
def pcvl_texts():
    return perceval_serializations()


PULSER = (EXAMPLES / "circuits" / "rabi.json").read_text()


# ---------------------------------------------------------------- what every example must do

def assert_source_error_only(capfd, fmt: str, content: bytes, index=None, photonic=None):
    """Parse ``content``; accepted, or refused with a one-line SourceError, and silent."""
    from qrun.sources import wrap_photonic

    try:
        if fmt == "perceval":
            content = wrap_photonic(content, photonic)
        program = make_program(fmt, content, "fuzzed", index)
    except SourceError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000, message
    else:
        assert program.facts.width >= 0
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def assert_file_loads_or_refuses(capfd, folder: Path, name: str, content: bytes):
    """The same through load_file: the format guessed from the name and the bytes."""
    path = folder / name
    path.write_bytes(content)
    try:
        load_file(path, name)
    except SourceError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


ALL_EDITS = ("replace", "insert", "line", "number", "cut")
STATEMENT_EDITS = ("line", "number")  # programs that mostly parse, to reach the converters


@st.composite
def text_edits(draw, bases: list[str], tokens: list[str], actions=ALL_EDITS) -> str:
    """A valid program with 1 to 6 edits: a span deleted or replaced by a token, a line
    doubled or dropped, a number changed, the text cut short."""
    text = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(actions))
        at = draw(st.integers(0, len(text)))
        if action in ("replace", "insert"):
            end = at + (draw(st.integers(0, 8)) if action == "replace" else 0)
            text = text[:at] + draw(st.sampled_from(tokens)) + text[end:]
        elif action == "line":
            lines = text.splitlines(keepends=True) or [""]
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [lines[i]] * draw(st.integers(0, 2))
            text = "".join(lines)
        elif action == "number":
            numbers = list(re.finditer(r"\d+", text))
            if numbers:
                hit = draw(st.sampled_from(numbers))
                value = draw(st.sampled_from(["0", "1", "2", "7", "99", "65536", str(10**6),
                                              str(2**31), str(2**64), str(10**30), "9" * 5000,
                                              "0" * 30 + "1", "0x" + "f" * 40]))
                text = text[:hit.start()] + value + text[hit.end():]
        else:
            text = text[:at]
    return text


def byte_edits(data: st.DataObject, content: bytes) -> bytes:
    edited = bytearray(content)
    for _ in range(data.draw(st.integers(1, 4))):
        if not edited:
            break
        at = data.draw(st.integers(0, len(edited) - 1))
        action = data.draw(st.sampled_from(["set", "max", "zero", "cut", "insert"]))
        if action == "set":
            edited[at] = data.draw(st.integers(0, 255))
        elif action == "max":
            edited[at:at + 4] = b"\xff\xff\xff\x7f"
        elif action == "zero":
            edited[at:at + data.draw(st.integers(1, 8))] = b"\x00" * 8
        elif action == "cut":
            del edited[at:]
        else:
            edited[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(edited)


# ---------------------------------------------------------------- OpenQASM

def test_fuzz_bases_are_valid(capfd, qpy_files, pcvl_texts):
    """Edits start from programs every parser accepts (else the fuzz proves little)."""
    from qrun.sources import wrap_photonic

    for text in QASM2:
        assert make_program("qasm2", text.encode(), "base").facts.width >= 3
    for text in QASM3:
        assert make_program("qasm3", text.encode(), "base").facts.width >= 2
    for i, content in enumerate(qpy_files):
        assert make_program("qpy", content, "base", 0 if i == len(qpy_files) - 1 else None)
    for text, photonic in pcvl_texts:
        assert make_program("perceval", wrap_photonic(text.encode(), photonic), "base")
    assert make_program("pulser", PULSER.encode(), "base").facts.parameters == ("duration",)
    capfd.readouterr()


def qasm3_edit(capfd, text):
    assert_source_error_only(capfd, "qasm3", text.encode("utf-8", "surrogatepass"))


test_fuzz_qasm3_edits, test_fuzz_qasm3_edits_long = fuzz(
    150, text_edits(QASM3, TOKENS))(qasm3_edit)
test_fuzz_qasm3_statement_edits, test_fuzz_qasm3_statement_edits_long = fuzz(
    100, text_edits(QASM3, TOKENS, STATEMENT_EDITS))(qasm3_edit)


def qasm2_edit(capfd, text):
    assert_source_error_only(capfd, "qasm2", text.encode("utf-8", "surrogatepass"))


test_fuzz_qasm2_edits, test_fuzz_qasm2_edits_long = fuzz(
    100, text_edits(QASM2, TOKENS))(qasm2_edit)
test_fuzz_qasm2_statement_edits, test_fuzz_qasm2_statement_edits_long = fuzz(
    60, text_edits(QASM2, TOKENS, STATEMENT_EDITS))(qasm2_edit)


def token_soup(capfd, header, body, fmt):
    assert_source_error_only(capfd, fmt, (header + body).encode("utf-8", "surrogatepass"))


test_fuzz_qasm_token_soup, test_fuzz_qasm_token_soup_long = fuzz(
    100, st.sampled_from(["OPENQASM 3.0;\n", "OPENQASM 2.0;\n", ""]),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join),
    st.sampled_from(["qasm2", "qasm3"]))(token_soup)


def qasm_file(capfd, tmp_path_factory, text, suffix):
    folder = tmp_path_factory.mktemp("qasm")
    assert_file_loads_or_refuses(capfd, folder, f"fuzzed{suffix}",
                                 text.encode("utf-8", "surrogatepass"))


test_fuzz_qasm_files_with_guessed_format, test_fuzz_qasm_files_with_guessed_format_long = fuzz(
    50, text_edits(QASM2 + QASM3, TOKENS),
    st.sampled_from([".qasm", ".qasm2", ".qasm3", ".txt", ".inc", ""]))(qasm_file)


# ---------------------------------------------------------------- QPY, Pulser, Perceval

def qpy_edit(capfd, qpy_files, data):
    content = byte_edits(data, data.draw(st.sampled_from(qpy_files)))
    assert_source_error_only(capfd, "qpy", content, data.draw(st.sampled_from([None, 0, 1, 9])))


test_fuzz_qpy_bytes, test_fuzz_qpy_bytes_long = fuzz(150, st.data())(qpy_edit)



def json_values():
    scalars = (st.none() | st.booleans() | st.integers(-10, 10**6)
               | st.sampled_from([10**30, -(2**63), 2**64, 0])
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
               | st.sampled_from(["rydberg_global", "drive", "q0", "duration", "constant",
                                  "pulse", "int", "float", "AnalogDevice", "index"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)


def places(doc, path=()):
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield path, key
            yield from places(value, path + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield path, index
            yield from places(value, path + (index,))


def pulser_edit(capfd, data):
    doc = json.loads(PULSER)
    for _ in range(data.draw(st.integers(1, 3))):
        spots = list(places(doc))
        if not spots:
            break
        path, key = data.draw(st.sampled_from(spots))
        container = doc
        for part in path:
            container = container[part]
        if data.draw(st.booleans()):
            container[key] = data.draw(json_values())
        else:
            del container[key]
    text = json.dumps(doc, allow_nan=True)
    if data.draw(st.booleans()):
        text = byte_edits(data, text.encode()).decode("utf-8", "replace")
    assert_source_error_only(capfd, "pulser", text.encode())


test_fuzz_pulser_json, test_fuzz_pulser_json_long = fuzz(60, st.data())(pulser_edit)


def protobuf_edit(data: st.DataObject, serialization: str) -> str:
    """Edit the protobuf inside `:PCVL:zip:<base64 of zlib>`, so that edits reach Perceval's
    reader rather than stop at zlib's checksum."""
    prefix = ":PCVL:zip:"
    if not serialization.startswith(prefix):
        return serialization
    raw = zlib.decompress(base64.b64decode(serialization[len(prefix):]))
    edited = byte_edits(data, raw)
    return prefix + base64.b64encode(zlib.compress(edited)).decode()


def perceval_edit(capfd, pcvl_texts, data):
    text, _ = data.draw(st.sampled_from(pcvl_texts))
    how = data.draw(st.sampled_from(["protobuf", "text", "both"]))
    if how in ("protobuf", "both"):
        text = protobuf_edit(data, text)
    content = text.encode()
    if how in ("text", "both"):
        content = byte_edits(data, content)
    photonic = data.draw(st.sampled_from([None, "|1,1>", "|1,0>", "|0>", "|1,0,1>", "|x>",
                                          "|99999,1>", "|1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1>"]))
    assert_source_error_only(capfd, "perceval", content, photonic=photonic)


test_fuzz_perceval_serializations, test_fuzz_perceval_serializations_long = fuzz(
    100, st.data())(perceval_edit)


# ---------------------------------------------------------------- through the CLI

def fuzzed_sources(seed: int, count: int, qpy_files, pcvl_texts) -> list[tuple[str, bytes]]:
    """``count`` (file name, bytes) pairs of every format, edited at random."""
    rng = random.Random(seed)

    def edit_text(text: str) -> str:
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(TOKENS) + text[at + rng.randint(0, 6):]
        return text

    def edit_bytes(content: bytes) -> bytes:
        edited = bytearray(content)
        for _ in range(rng.randint(1, 3)):
            edited[rng.randrange(len(edited))] = rng.randrange(256)
        return bytes(edited)

    makers = [
        lambda: ("qasm", edit_text(rng.choice(QASM3)).encode()),
        lambda: ("qasm", edit_text(rng.choice(QASM2)).encode()),
        lambda: ("qpy", edit_bytes(rng.choice(qpy_files))),
        lambda: ("json", edit_text(PULSER).encode()),
        lambda: ("pcvl", edit_text(rng.choice(pcvl_texts)[0]).encode()),
    ]
    return [(f"f{i}.{suffix}", content)
            for i, (suffix, content) in enumerate(rng.choice(makers)() for _ in range(count))]


PROBLEM_LINE = re.compile(r"^\S.*:\d+: ")


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_sources_through_qrun_validate(tmp_path, qpy_files, pcvl_texts, seed):
    for name, content in fuzzed_sources(seed, 25, qpy_files, pcvl_texts):
        (tmp_path / "circuits").mkdir(exist_ok=True)
        (tmp_path / "circuits" / name).write_bytes(content)
    circuits = "\n".join(f"    - {{name: c{i}, source: circuits/{p.name}, input: \"|1,1>\"}}"
                         if p.suffix == ".pcvl" else f"    - {{name: c{i}, source: circuits/{p.name}}}"
                         for i, p in enumerate(sorted((tmp_path / "circuits").iterdir())))
    manifest = write(tmp_path, "fuzz.yaml", "apiVersion: qrun/v1\nkind: Campaign\n"
                     "metadata: {name: fuzz}\nspec:\n  circuits:\n" + circuits + "\n"
                     "  backends:\n    - {name: aer, provider: qiskit.aer}\n"
                     "    - {name: atoms, provider: pulser.local}\n"
                     "    - {name: photons, provider: perceval.local}\n")
    result = qrun("validate", manifest, cwd=tmp_path)
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr
    lines = result.stderr.splitlines()
    if result.returncode == 2:
        assert lines[-1].endswith("found; nothing was run.")
        assert all(PROBLEM_LINE.match(line) for line in lines[:-1]), result.stderr
        assert result.stdout == ""


# ---------------------------------------------------------------- longer runs

@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 13))
def test_fuzzed_sources_through_qrun_validate_long(tmp_path, qpy_files, pcvl_texts, seed):
    test_fuzzed_sources_through_qrun_validate(tmp_path, qpy_files, pcvl_texts, seed)
