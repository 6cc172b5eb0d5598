"""Broken manifests: every problem reported, each as `file:line: key.path: what is wrong`.

The corpus in tests/data/bad holds one broken manifest per kind of mistake. Each file starts
with a comment saying what is wrong, then one `# expect: <line>: <key.path>: <message>` line
per problem the loader must report (`# expect: <line>: <message>` for a problem of the whole
file); `{root}` stands for the folder manifest paths must stay inside (the repository),
`{providers}` for the registered provider ids (the built-ins, then any installed plugin's).
The set of problems must match exactly: none missing, none extra, lines included.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrun import cli, manifest, sweep, yamlpos
from qrun.errors import EXIT_BAD_INPUT, EXIT_FAILED, ManifestError
from qrun.providers import PROVIDERS
from qrun.sources import MAX_SOURCE_BYTES

from .conftest import EXAMPLES, qrun, write

BAD = Path(__file__).resolve().parent / "data" / "bad"
CORPUS = sorted(BAD.glob("*.yaml"))
EXPECT = "# expect: "
# The key path of an expectation: what comes before the first ": " when it is one
# ("spec.circuits[0].source", or spec['shоts'] for a key shown quoted); "invalid YAML: ..."
# and the like are whole-file messages.
KEY_PATH = re.compile(r"""^(?:[A-Za-z0-9_.-]+|\[\d+\]|\['(?:[^'\\]|\\.)*'\]|\["(?:[^"\\]|\\.)*"\])+$""")


def expectations(path: Path) -> set[tuple[int, str, str]]:
    """The (line, key path, message) triples a corpus file's comments expect."""
    root = str(manifest.path_root(path.parent.resolve()).folder)
    expected = set()
    for text in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not text.startswith(EXPECT):
            continue
        text = text.replace("{root}", root).replace("{providers}", ", ".join(PROVIDERS))
        line, rest = text[len(EXPECT):].split(": ", 1)
        key_path, sep, message = rest.partition(": ")
        if not sep or not KEY_PATH.match(key_path):
            key_path, message = "", rest
        expected.add((int(line), key_path, message))
    return expected


def problems_of(path: Path) -> set[tuple[int, str, str]]:
    with pytest.raises(ManifestError) as caught:
        manifest.load(path)
    assert {p.file for p in caught.value.problems} == {str(path)}
    return {(p.line, p.path, p.message) for p in caught.value.problems}


def test_corpus_is_large_and_every_file_expects_something():
    assert len(CORPUS) >= 60
    for path in CORPUS:
        expected = expectations(path)
        assert expected, f"{path.name} has no '# expect:' line"
        lines = path.read_bytes().count(b"\n") + 1
        assert all(1 <= line <= lines for line, _, _ in expected), path.name


def test_the_provider_list_in_messages_starts_with_the_builtins_in_order():
    builtins = ["qiskit.aer", "qiskit.ibm-local", "braket.local", "pulser.local",
                "perceval.local", "qiskit.ibm", "braket.aws", "pasqal.cloud", "quandela.cloud"]
    assert list(PROVIDERS)[:len(builtins)] == builtins


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_broken_manifest_reports_exactly_the_expected_problems(path):
    started = time.monotonic()
    actual = problems_of(path)
    elapsed = time.monotonic() - started
    expected = expectations(path)
    missing = "\n".join(f"  {p}" for p in sorted(expected - actual))
    extra = "\n".join(f"  {p}" for p in sorted(actual - expected))
    assert actual == expected, f"missing:\n{missing}\nunexpected:\n{extra}"
    # Bombs, huge sweeps and deep nesting are refused quickly, not after expanding them.
    assert elapsed < 10, f"{path.name} took {elapsed:.1f} s"


def test_error_text_is_one_line_per_problem_in_file_order():
    path = BAD / "many-schema-problems.yaml"
    with pytest.raises(ManifestError) as caught:
        manifest.load(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.problems) == len(expectations(path))
    assert all(re.match(rf"{re.escape(str(path))}:\d+: \S", line) for line in lines)
    numbers = [int(line.split(":")[1]) for line in lines]
    assert numbers == sorted(numbers)


# ---------------------------------------------------------------- files that cannot carry comments

def write_bytes(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def single_problem(path) -> tuple[int, str, str]:
    actual = problems_of(Path(path))
    assert len(actual) == 1, actual
    return actual.pop()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    assert single_problem(path) == (
        1, "", "the manifest is empty; it needs apiVersion, kind, metadata and spec")


def test_missing_file_and_folder(tmp_path):
    assert single_problem(tmp_path / "nope.yaml") == (0, "", "no such file")
    assert single_problem(tmp_path) == (0, "", "is a folder, not a manifest file")


def test_oversized_manifest_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (manifest.MAX_MANIFEST_BYTES // 10 + 1))
    assert single_problem(path) == (
        1, "", f"manifest larger than {manifest.MAX_MANIFEST_BYTES} bytes")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_is_refused_not_read_forever():
    # stat() says 0 bytes; reading it whole would never end.
    assert single_problem("/dev/zero")[2] == f"manifest larger than {manifest.MAX_MANIFEST_BYTES} bytes"


@pytest.mark.parametrize("encoding, name", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"),
                                            ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_manifests_are_named_as_such(tmp_path, encoding, name):
    # With a byte order mark (PowerShell's `>`) or without one: not "byte 0 is not UTF-8",
    # nor "unprintable character U+0000".
    path = tmp_path / "wide.yaml"
    path.write_bytes(GOOD.encode(encoding))
    assert single_problem(path) == (
        1, "", f"{name} text, but manifests are UTF-8: convert it (iconv -f {name} -t UTF-8)")


# ---------------------------------------------------------------- what must keep working

GOOD = """\
apiVersion: qrun/v1
kind: Campaign
metadata:
  name: fuzz
  labels: {team: qa, started: 2024-05-01}
spec:
  shots: 100
  seed: 1
  circuits:
    - {name: ghz, source: circuits/ghz.qasm}
    - name: rot
      source: circuits/rot.qasm
      sweep: {theta: {linspace: [0, 1, 3]}}
    - name: ramsey
      source: circuits/ramsey.qasm
      sweep_mode: zip
      sweep: {theta: [0.5, 1.0], phi: {range: [0, 1, 0.5]}}
  backends:
    - &aer {name: aer, provider: qiskit.aer, options: {precision: single},
            limits: {max_shots_per_job: 50, submit_rate: 5/s}}
    - {<<: *aer, name: aer-double, options: {precision: double}}
    - {name: sv, provider: braket.local, device: braket_sv}
  targets:
    - {circuits: [ghz, rot], backends: [aer, sv], shots: 200}
    - {circuits: [ramsey], backends: [aer, aer-double]}
  split: {max_experiments_per_job: 10}
  retry: {max_attempts: 2, backoff: {initial: 500ms, max: 2s}}
  export: [{path: results/out.csv}]
"""


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> Path:
    """A folder outside any git repository with the corpus's circuits, for generated manifests."""
    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(BAD / "circuits", folder / "circuits")
    return folder


def test_valid_manifest_loads_with_merges_and_dates(fuzz_folder):
    loaded = manifest.load(write(fuzz_folder, "good.yaml", GOOD))
    assert loaded.labels == {"team": "qa", "started": "2024-05-01"}  # a date stays text
    double = loaded.backends["aer-double"]
    assert (double.provider, double.options) == ("qiskit.aer", {"precision": "double"})
    assert double.limits.max_shots_per_job == 50  # merged from the anchor
    assert len(loaded.circuits["ramsey"].sweep["phi"]) == 2


@pytest.mark.parametrize("variant", ["crlf", "bom", "bom+crlf", "cr"])
def test_windows_line_endings_and_byte_order_mark_are_accepted(fuzz_folder, variant):
    text = GOOD.replace("\n", "\r\n") if "crlf" in variant else \
        GOOD.replace("\n", "\r") if variant == "cr" else GOOD
    data = ("\ufeff" if "bom" in variant else "") + text
    loaded = manifest.load(write_bytes(fuzz_folder, f"{variant}.yaml", data.encode()))
    plain = manifest.load(write(fuzz_folder, "plain.yaml", GOOD))
    assert (loaded.labels, loaded.circuits.keys(), loaded.backends) == \
        (plain.labels, plain.circuits.keys(), plain.backends)
    assert loaded.circuits["rot"].sweep == plain.circuits["rot"].sweep


def test_exponents_without_a_dot_are_numbers(fuzz_folder):
    # YAML 1.1 reads 1e-1 as text; qrun reads it as JSON and YAML 1.2 do.
    text = GOOD.replace("{linspace: [0, 1, 3]}", "[1e-1, 2E0, -3e+0, 1_0e-1]")
    loaded = manifest.load(write(fuzz_folder, "exp.yaml", text))
    assert loaded.circuits["rot"].sweep == {"theta": [0.1, 2.0, -3.0, 1.0]}


def test_standard_includes_and_commented_ones_are_fine(fuzz_folder):
    (fuzz_folder / "circuits" / "commented.qasm").write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\n// include "gates.inc";\n'
        '/* include "/dev/zero"; */\nqubit[1] q;\nbit[1] c;\nh q[0];\nc[0] = measure q[0];\n')
    text = GOOD.replace("source: circuits/ghz.qasm", "source: circuits/commented.qasm")
    assert manifest.load(write(fuzz_folder, "inc.yaml", text)).circuits["ghz"]


def test_examples_still_load():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        manifest.load(path)


def test_merge_order_own_keys_then_first_listed(fuzz_folder):
    text = GOOD.replace("    - {<<: *aer, name: aer-double, options: {precision: double}}",
                        "    - {<<: [{device: statevector}, *aer, {device: stabilizer}], "
                        "name: aer-double}")
    loaded = manifest.load(write(fuzz_folder, "merged.yaml", text))
    assert loaded.backends["aer-double"].device == "statevector"
    assert loaded.backends["aer-double"].options == {"precision": "single"}


# ---------------------------------------------------------------- big and hostile inputs made at test time

def within(seconds: float, action):
    """Run ``action`` in a thread; fail if it has not returned (blocked, looping) in time."""
    outcome: list = []

    def run():
        try:
            outcome.append(action())
        except BaseException as exc:  # handed to the test below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return outcome[0], time.monotonic() - started


def problems_in(path: Path, seconds: float = 5) -> tuple[set, float]:
    """The (line, key path, message) of each problem, and the time it took to find them."""
    error, elapsed = within(seconds, lambda: manifest.load(path))
    assert isinstance(error, ManifestError), error
    return {(p.line, p.path, p.message) for p in error.problems}, elapsed


# Loading a big or hostile manifest should take well under a second; the bound is looser for
# a machine busy with other work.
QUICK = 3.0


def test_long_list_is_refused_at_the_value_past_the_limit(tmp_path):
    # 4 MB of sweep values: refused before it is composed whole, at the line reached.
    values = "".join(f"        - {i}.5\n" for i in range(manifest.MAX_MANIFEST_BYTES // 20))
    path = write(tmp_path, "long.yaml", GOOD.replace("sweep: {theta: {linspace: [0, 1, 3]}}",
                                                     "sweep:\n        theta:\n" + values))
    problems, elapsed = problems_in(path)
    first = GOOD.count("\n", 0, GOOD.index("sweep: {theta")) + 3
    count = yamlpos.MAX_NODES
    assert len(problems) == 1 and elapsed < QUICK, (problems, elapsed)
    (line, key, message), = problems
    assert first < line < first + count and key == ""
    assert message == f"more than {count} values; refused (a long sweep is better written " \
                      "as linspace or range)"


def test_hundred_thousand_keys_are_refused_quickly(tmp_path):
    labels = "".join(f"    k{i}: {i}\n" for i in range(100_000))
    path = write(tmp_path, "keys.yaml", GOOD.replace("  labels: {team: qa, started: 2024-05-01}\n",
                                                     "  labels:\n" + labels))
    problems, elapsed = problems_in(path)
    assert elapsed < QUICK and len(problems) == 1, (problems, elapsed)
    assert next(iter(problems))[2].startswith(f"more than {yamlpos.MAX_NODES} values")


def test_megabyte_key_is_refused_quickly(tmp_path):
    path = write(tmp_path, "key.yaml", GOOD.replace("  seed: 1\n", "  " + "k" * 2**20 + ": 1\n"))
    problems, elapsed = problems_in(path)
    assert elapsed < QUICK
    assert problems == {(8, "", "invalid YAML: a key may be at most 1024 characters long; "
                                "this one has 1048576")}


def test_long_value_line_loads_quickly(fuzz_folder):
    text = GOOD.replace("labels: {team: qa,", "labels: {long: " + "x" * 3_000_000 + ", team: qa,")
    path = write(fuzz_folder, "line.yaml", text)
    loaded, elapsed = within(10, lambda: manifest.load(path))
    assert isinstance(loaded, manifest.Manifest), loaded
    assert len(loaded.labels["long"]) == 3_000_000 and elapsed < QUICK


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}"), ("- ", "")])
def test_hundred_thousand_levels_of_nesting_do_not_crash(tmp_path, opening, closing):
    # libyaml's own composer recurses in C and kills the interpreter here (SIGSEGV).
    nested = opening * 100_000 + "x" + closing * 100_000
    # A flow collection may follow its key on the line; a block sequence starts on the next.
    text = f"apiVersion: qrun/v1\nnested:{chr(10) if opening == '- ' else ' '}{nested}\n"
    path = write_bytes(tmp_path, "deep.yaml", text.encode())
    problems, elapsed = problems_in(path)
    assert elapsed < QUICK and len(problems) == 1, problems
    line, _, message = next(iter(problems))
    assert message.startswith(("invalid YAML: nested too deeply", "nested more than")), message


def test_late_syntax_error_in_a_big_file_is_found_quickly(tmp_path):
    # Too far in to parse again in pure Python: libyaml's message, at the right line.
    lines = "".join(f"    k{i}: {'x' * 150}\n" for i in range(20_000))
    path = write(tmp_path, "late.yaml", "metadata:\n  labels:\n" + lines + "  oops: [\n")
    problems, elapsed = problems_in(path)
    assert elapsed < QUICK and len(problems) == 1
    line, key, message = next(iter(problems))
    assert line == 20_004 and key == "" and message.startswith("invalid YAML: "), problems


# ---------------------------------------------------------------- sources outside, endless, huge

@pytest.fixture
def project(tmp_path) -> Path:
    """A folder outside git holding the corpus's circuits, beside a folder outside it."""
    folder = tmp_path / "project"
    shutil.copytree(BAD / "circuits", folder / "circuits")
    (tmp_path / "outside").mkdir()
    shutil.copy(BAD / "circuits" / "ghz.qasm", tmp_path / "outside" / "ghz.qasm")
    return folder


def manifest_with(source: str, export: str = "results/out.csv") -> str:
    return GOOD.replace("source: circuits/ghz.qasm", f"source: '{source}'").replace(
        "path: results/out.csv", f"path: '{export}'")


SOURCE_LINE = GOOD.splitlines().index("    - {name: ghz, source: circuits/ghz.qasm}") + 1
EXPORT_LINE = GOOD.count("\n")


def test_symlinks_out_of_the_folder_are_refused(project):
    (project / "circuits" / "link.qasm").symlink_to(project.parent / "outside" / "ghz.qasm")
    (project / "results").symlink_to(project.parent / "outside")
    path = write(project, "m.yaml", manifest_with("circuits/link.qasm", "results/out.csv"))
    problems, _ = problems_in(path)
    outside = (f"points outside {project}; paths must stay inside the manifest's folder, as "
               "no git repository holds the manifest and the current folder does not; "
               "--root DIR (or QRUN_ROOT) allows another folder")
    assert problems == {
        (SOURCE_LINE, "spec.circuits[0].source", f"'circuits/link.qasm' {outside}"),
        (EXPORT_LINE, "spec.export[0].path", f"'results/out.csv' {outside}")}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipe_source_is_refused_without_blocking(project):
    os.mkfifo(project / "circuits" / "pipe.qasm")  # opening it to read would wait for a writer
    path = write(project, "m.yaml", manifest_with("circuits/pipe.qasm"))
    problems, elapsed = problems_in(path)
    assert problems == {(SOURCE_LINE, "spec.circuits[0].source",
                         "source 'circuits/pipe.qasm' is not a regular file")}


def test_huge_source_is_refused_by_its_size_unread(project):
    with open(project / "circuits" / "huge.qasm", "wb") as sparse:
        sparse.truncate(50 * 2**20)  # 50 MB of holes: nothing written, nothing to read
    path = write(project, "m.yaml", manifest_with("circuits/huge.qasm"))
    problems, elapsed = problems_in(path)
    assert elapsed < QUICK
    assert problems == {(SOURCE_LINE, "spec.circuits[0].source",
                         f"'circuits/huge.qasm' is {50 * 2**20} bytes; circuit files are limited "
                         f"to {MAX_SOURCE_BYTES} bytes")}


def test_export_into_dot_git_is_refused(project):
    (project / ".git").mkdir()  # the project is now a repository: its root is allowed
    path = write(project, "m.yaml", manifest_with("circuits/ghz.qasm", ".git/hooks/out.csv"))
    problems, _ = problems_in(path)
    assert problems == {(EXPORT_LINE, "spec.export[0].path",
                         "'.git/hooks/out.csv' is inside the repository's .git folder")}


# ---------------------------------------------------------------- the CLI

def assert_reported(result, path: Path, state_dir: Path, cwd: Path) -> list[str]:
    """Exit 2, one `file:line: ...` line per problem and a count, no traceback, no state."""
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    *problems, summary = lines
    assert problems
    assert all(re.match(rf"{re.escape(str(path))}:\d+: \S", line) for line in problems), lines
    assert summary == f"{len(problems)} problem{'s' if len(problems) > 1 else ''} found; " \
                      "nothing was run."
    assert not state_dir.exists() or not any(state_dir.iterdir())
    assert not (cwd / "runs").exists()
    return problems


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_cli_reports_every_problem_and_touches_no_state(command, _state_dir, tmp_path):
    path = BAD / "many-semantic-problems.yaml"
    result = qrun(command, path, cwd=tmp_path)
    problems = assert_reported(result, path, _state_dir, tmp_path)
    expected = {f"{path}:{line}: {key}: {message}" if key else f"{path}:{line}: {message}"
                for line, key, message in expectations(path)}
    assert set(problems) == expected


@pytest.mark.parametrize("name", ["yaml-unclosed-brace", "many-schema-problems", "alias-bomb",
                                  "merge-key-bomb", "not-utf8", "sweep-huge", "qasm3-broken",
                                  "unicode-names", "path-escape-more"])
def test_cli_validate_exits_2_with_line_numbers(name, _state_dir, tmp_path):
    path = BAD / f"{name}.yaml"
    problems = assert_reported(qrun("validate", path, cwd=tmp_path, timeout=60), path,
                               _state_dir, tmp_path)
    assert len(problems) == len(expectations(path))


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_cli_validate_reports_every_corpus_file_cleanly(path, capfd):
    """`qrun validate` in this process (a subprocess each would take a minute): exit 2, one
    `file:line: ` line per problem, no traceback. capfd sees file descriptors 1 and 2, so a
    parser printing past sys.stderr (Qiskit's native OpenQASM 3 importer does) shows up."""
    with pytest.raises(SystemExit) as exited:
        cli.main.main(["validate", str(path)], prog_name="qrun")
    out, err = capfd.readouterr()
    assert exited.value.code == EXIT_BAD_INPUT, err
    assert out == "" and "Traceback" not in err and "internal error" not in err
    *problems, summary = err.splitlines()
    assert summary.endswith("found; nothing was run.")
    assert len(problems) == len(expectations(path)), err
    assert all(re.match(rf"{re.escape(str(path))}:\d+: \S", line) for line in problems), err


def test_cli_relative_path_is_shown_as_given(_state_dir):
    # Run from the corpus folder: lines start with the path exactly as typed.
    result = qrun("validate", "wrong-types.yaml", cwd=BAD)
    assert_reported(result, Path("wrong-types.yaml"), _state_dir, BAD)


def test_cli_missing_manifest(_state_dir, tmp_path):
    result = qrun("validate", "absent.yaml", cwd=tmp_path)
    assert_reported(result, Path("absent.yaml"), _state_dir, tmp_path)
    assert result.stderr.startswith("absent.yaml:0: no such file")


def test_cli_plan_detailed_exitcode_is_1_on_a_bad_manifest(_state_dir, tmp_path):
    # With --detailed-exitcode, 2 means "there is work to do", so a bad manifest exits 1.
    path = BAD / "duplicate-names.yaml"
    result = qrun("plan", "--detailed-exitcode", path, cwd=tmp_path)
    assert result.returncode == EXIT_FAILED
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:")
    assert not _state_dir.exists()


# ---------------------------------------------------------------- fuzzing: only ManifestError

def load_text(folder: Path, text: str | bytes) -> None:
    """Load a manifest of this content; fail on anything but success or a ManifestError."""
    path = folder / "fuzzed.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        manifest.load(path)
    except ManifestError as exc:
        # YAML also breaks lines at \r, \x85, \u2028...; splitlines() counts those and more.
        lines = len(path.read_bytes().decode("utf-8", errors="replace").splitlines()) + 1
        for problem in exc.problems:
            assert problem.file == str(path)
            assert 1 <= problem.line <= lines, problem
            assert problem.message and "\n" not in problem.message, problem


YAML_TOKENS = [
    "apiVersion: qrun/v1\n", "kind: Campaign\n", "metadata:\n", "  name: x\n", "spec:\n",
    "  circuits:\n", "    - {name: g, source: circuits/ghz.qasm}\n", "  backends:\n",
    "    - {name: a, provider: qiskit.aer}\n", "  sweep: {theta: ", "{range: [", "{linspace: [",
    "&a ", "*a", "<<: *a", "<<: [", "!!int ", "!!binary ", "!!python/name:os.system ", "!!set ",
    "!!timestamp ", "---\n", "...\n", "? ", ": ", "- ", "[", "]", "{", "}", ", ", "'", '"', "|\n",
    ">\n", "#", "\n", "  ", "\t", "1", "0", "-5", "1.0", ".inf", ".nan", "1e308", "null", "yes",
    "2024-01-01", "x", "\\x00", "\x00", "\ufeff", "é", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "!x ",
    # Unicode that looks like nothing or like something else, other line breaks, numbers
    # YAML 1.1 and 1.2 read differently, and hostile paths.
    "\u200b", "\u202e", "\u043e", "e\u0301", "\U0001F680", "\ud800", "\r\n", "\r", "\x85",
    "\u2028", "1e3", "1e-12", "1e400", "10" * 30, "0x1F", "0o7", "1:30", "~/", "../", "/dev/zero",
    "on", "<<: 5", "? ", "k" * 1100 + ": ",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join))
def test_fuzz_yamlish_text_raises_only_manifest_errors(fuzz_folder, text):
    load_text(fuzz_folder, text)


def json_values():
    scalars = (st.none() | st.booleans() | st.integers(-10, 10**7)
               | st.sampled_from([10**400, -(2**64), 2**63])
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
               | st.sampled_from(["circuits/ghz.qasm", "circuits/rot.qasm", "../../etc/passwd",
                                  "qiskit.aer", "braket.local", "theta", "5/s", "1s", "zip",
                                  "qasm2", "qpy", "results/x.csv"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def places(doc, path=()):
    """Every (container path, key) of the document, the spots a mutation can hit."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield path, key
            yield from places(value, path + (key,))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield path, index
            yield from places(value, path + (index,))


@st.composite
def mutated_manifests(draw):
    doc = yaml.safe_load(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        spots = list(places(doc))
        container_path, key = draw(st.sampled_from(spots))
        container = doc
        for part in container_path:
            container = container[part]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "replace":
            container[key] = draw(json_values())
        elif action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.text(min_size=1, max_size=8))] = draw(json_values())
        elif action == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(container[key]))
        if not isinstance(doc, dict) or not doc:
            break
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_manifests())
def test_fuzz_mutated_manifest_raises_only_manifest_errors(fuzz_folder, text):
    load_text(fuzz_folder, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_text_edits_of_a_valid_manifest(fuzz_folder, data):
    text = GOOD
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 12)))
        text = text[:start] + data.draw(st.sampled_from(YAML_TOKENS + [""])) + text[end:]
    load_text(fuzz_folder, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: GOOD.encode()[:200] + b))
def test_fuzz_random_bytes_raise_only_manifest_errors(fuzz_folder, data):
    load_text(fuzz_folder, data)


# Characters a careless copy and paste brings in: look-alikes, invisible ones, other scripts.
tricky_text = st.text(st.sampled_from("abcxyz_-.:/ 0123456789"
                                      "\u0430\u043e\u0441\u200b\u200d\u202e\ufeff\u00e9\u0301"
                                      "\U0001F680\x00\t\u2028\u00a0"), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_unicode_keys_and_values_raise_only_manifest_errors(fuzz_folder, data):
    doc = yaml.safe_load(GOOD)
    for _ in range(data.draw(st.integers(1, 3))):
        container_path, key = data.draw(st.sampled_from(list(places(doc))))
        container = doc
        for part in container_path:
            container = container[part]
        if isinstance(container, dict) and data.draw(st.booleans()):
            container[data.draw(tricky_text)] = container.pop(key)  # rename the key
        else:
            container[key] = data.draw(tricky_text)
    load_text(fuzz_folder, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


def test_fuzz_base_is_valid(fuzz_folder):
    load_text(fuzz_folder, GOOD)
    manifest.load(fuzz_folder / "fuzzed.yaml")  # no error at all


def test_invalid_bytes_in_fuzz_are_located(fuzz_folder):
    # The line of the first byte that is not UTF-8, not just its offset.
    load_text(fuzz_folder, GOOD.encode() + b"# \xff\n")
    with pytest.raises(ManifestError) as caught:
        manifest.load(fuzz_folder / "fuzzed.yaml")
    assert caught.value.problems[0].line == GOOD.count("\n") + 1


numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**7, 10**7)
           | st.booleans() | st.sampled_from([10**400, -(10**400), 2**1024, 10**12]))


@settings(max_examples=200, deadline=None)
@given(numbers | st.lists(numbers, max_size=4)
       | st.dictionaries(st.sampled_from(["values", "linspace", "range", "steps"]),
                         st.lists(numbers, max_size=4) | numbers, min_size=1, max_size=2))
def test_fuzz_sweep_values_are_finite_or_refused(spec):
    try:
        values = sweep.values_of("x", spec)
    except sweep.SweepError:
        return
    assert 1 <= len(values) <= sweep.MAX_VALUES
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values)
