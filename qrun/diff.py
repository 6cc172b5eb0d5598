"""Diff stage: two campaigns compared, experiment by experiment and result by result.

    qrun diff campaign.yaml@HEAD~1 campaign.yaml

A side is a manifest as it is on disk, or as it was at a git revision: read with
``git show`` into a temporary folder, with the circuit files (and factory modules) it
names at that revision, so its experiment keys are computed as they were then.

Experiments are matched by circuit name, backend name and sweep point, not by key: the key
changes whenever anything does, and what changed is what a diff is for. The results of a
matched pair are compared by total variation distance, Hellinger fidelity, and a test of
whether the two count vectors could come from one distribution (:func:`homogeneity_test`),
corrected for testing many pairs at once (:func:`holm`).

This module is pure (no store): ``api.diff`` reads the stored results of both sides.
"""

from __future__ import annotations

import posixpath
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import manifest as manifests
from . import planner
from .distances import hellinger_fidelity, total_variation
from .errors import ManifestError, QrunError, RevisionError
from .manifest import Manifest
from .planner import Experiment

FORMAT_VERSION = 1  # of `qrun diff -o json`; bumped when a field changes meaning or goes

# Exit codes of `qrun diff` (errors of any kind are 1, as with `plan --detailed-exitcode`).
EXIT_SAME = 0  # every compared result agrees within shot noise
EXIT_DIFFERS = 2  # at least one matched result differs beyond shot noise
EXIT_NOTHING_COMPARED = 3  # no matched pair has results on both sides: nothing was judged

ALPHA = 0.05  # family-wise significance: the chance that identical campaigns are called different
MIN_EXPECTED = 5.0  # outcomes expected fewer times than this in either sample are pooled
MARKDOWN_ROWS = 100  # rows per markdown table; -o json lists everything


# ---------------------------------------------------------------- naming the two sides

@dataclass(frozen=True)
class Side:
    """One side of a diff as the user named it: a manifest file, at a git revision or not."""

    path: Path
    revision: str | None = None  # None: the file as it is on disk
    bare: bool = False  # B given as a bare revision: it could also have been a missing file

    @property
    def shown(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision is not None else str(self.path)


def parse_sides(first: str, second: str) -> tuple[Side, Side]:
    """The two sides of ``qrun diff A B``.

    Each of A and B is PATH (the file on disk) or PATH@REV (the file at git revision REV,
    split at the first '@', so REV may itself hold one: HEAD@{1}). A name that is an
    existing file is always that file. B may also be @REV or a bare REV (any name that is
    not an existing file and does not end in .yaml/.yml): A's path at that revision.
    """
    a = _parse_one(first, "A")
    if a is None:
        raise QrunError(f"A ({first!r}) must name a manifest: PATH or PATH@REV")
    b = _parse_one(second, "B")
    if b is None:  # @REV or a bare revision: A's manifest at that revision
        revision = second[1:] if second.startswith("@") else second
        b = Side(a.path, _checked_revision(revision, second), bare=not second.startswith("@"))
    return a, b


def _parse_one(text: str, which: str) -> Side | None:
    if not text:
        raise QrunError(f"{which} is empty: name a manifest (PATH or PATH@REV)")
    if Path(text).is_file():
        return Side(Path(text))
    if text.startswith("@"):
        return None
    path, at, revision = text.partition("@")
    if at:
        return Side(Path(path), _checked_revision(revision, text))
    if which == "B" and not text.endswith((".yaml", ".yml")):
        return None
    return Side(Path(text))  # a file that is missing: loading it says so


def _checked_revision(revision: str, text: str) -> str:
    if not revision:
        raise QrunError(f"{text!r}: give a git revision after '@' (PATH@REV, e.g. campaign.yaml@HEAD~1)")
    if revision.startswith("-"):  # git would read it as an option
        raise RevisionError(f"{text!r}: {revision!r} is not a git revision")
    return revision


# ---------------------------------------------------------------- loading a side

@dataclass
class LoadedSide:
    side: Side
    manifest: Manifest
    experiments: list[Experiment]
    commit: str | None = None  # the revision's commit; None for a file on disk


@contextmanager
def loaded(side: Side, root=None) -> Iterator[LoadedSide]:
    """A side's validated manifest and experiments. A revision is read into a temporary
    folder (its copy of the repository, and its root), removed when the block ends."""
    if side.revision is None:
        manifest = manifests.load(side.path, root)
        yield LoadedSide(side, manifest, list(planner.experiments(manifest)))
        return
    with tempfile.TemporaryDirectory(prefix="qrun-diff-") as folder:
        yield _load_at_revision(side, Path(folder))


def _load_at_revision(side: Side, folder: Path) -> LoadedSide:
    assert side.revision is not None
    revision = side.revision
    top = _repository_of(side)
    commit = _commit_of(top, revision, side)
    try:
        relative = side.path.resolve().relative_to(top)
    except ValueError:
        raise RevisionError(f"{side.shown}: {side.path} is outside its git repository {top}") from None
    text = _show(top, commit, relative.as_posix())
    if text is None:
        raise RevisionError(f"{side.shown}: {relative.as_posix()} does not exist at {revision} "
                            f"(commit {commit[:12]}), or is not a file there")
    _write(folder, relative.as_posix(), text)
    for wanted in _referenced_files(text, relative.parent.as_posix(), top, commit):
        content = _show(top, commit, wanted)
        if content is not None:  # a missing one is reported by the manifest's checks
            _write(folder, wanted, content)
    copy = folder / relative
    try:
        manifest = manifests.load(copy, root=folder)
    except ManifestError as exc:
        raise ManifestError([_located(problem, copy, folder, side, revision)
                             for problem in exc.problems]) from None
    return LoadedSide(side, manifest, list(planner.experiments(manifest)), commit)


def _located(problem, copy: Path, folder: Path, side: Side, revision: str):
    """A problem of the revision's copy, named as the user knows it (PATH@REV, REV:file)."""
    file = side.shown if problem.file == str(copy) else problem.file
    message = problem.message
    for shown in {str(folder.resolve()), str(folder)}:
        message = message.replace(shown + "/", f"{revision}:").replace(shown, f"{revision}:")
    return replace(problem, file=file, message=message)


def _repository_of(side: Side) -> Path:
    folder = side.path.absolute().parent
    while not folder.is_dir():  # the manifest's folder may be gone from the working tree
        folder = folder.parent
    done = _git(folder, side, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise RevisionError(f"{side.shown}: {folder} is not in a git repository, so there is "
                            f"no revision {side.revision!r} of {side.path} to read")
    return Path(done.stdout.decode().strip()).resolve()


def _commit_of(top: Path, revision: str, side: Side) -> str:
    done = _git(top, side, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if done.returncode != 0:
        if side.bare:
            raise RevisionError(f"{revision!r} is no file, and no revision of the git repository {top}")
        raise RevisionError(f"{side.shown}: no revision {revision!r} in the git repository {top}")
    return done.stdout.decode().strip()


def _show(top: Path, commit: str, relative: str) -> bytes | None:
    """A file's bytes at a commit, as `git show REV:path` prints them (binary files too:
    QPY), or None if no file is there. `cat-file blob` refuses a folder, which `show` lists."""
    done = _git(top, None, "cat-file", "blob", f"{commit}:{relative}")
    return done.stdout if done.returncode == 0 else None


def _git(folder: Path, side: Side | None, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        what = f"{side.shown}: " if side else ""
        raise RevisionError(f"{what}cannot run git ({exc})") from None


def _write(folder: Path, relative: str, content: bytes) -> None:
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)


def _referenced_files(text: bytes, base: str, top: Path, commit: str) -> list[str]:
    """Repository paths the manifest's circuits name: source files, and for a Python factory
    its top-level module or package (the whole package: a factory imports its siblings)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
        circuits = doc["spec"]["circuits"]
        sources = [entry.get("source") for entry in circuits if isinstance(entry, dict)]
    except Exception:  # not a manifest's shape: the manifest's own checks will say why
        return []
    files, modules = [], []
    for source in sources:
        if isinstance(source, str):
            files.append(posixpath.normpath(posixpath.join(base, source)))
        elif isinstance(source, dict) and isinstance(source.get("python"), str):
            module = source["python"].partition(":")[0].split(".")[0]
            modules += [posixpath.join(base, module + ".py"), posixpath.join(base, module)]
    if modules:
        listed = _git(top, None, "ls-tree", "-r", "--name-only", commit, "--",
                      *(posixpath.normpath(m) for m in modules))
        files += listed.stdout.decode().splitlines() if listed.returncode == 0 else []
    return [f for f in files if f != ".." and not f.startswith(("../", "/"))]


# ---------------------------------------------------------------- distances and the test

@dataclass(frozen=True)
class TestResult:
    statistic: float  # Pearson's X**2 on the pooled 2 x K table
    df: int  # K - 1
    p_value: float  # before any correction for the other pairs
    bins: int  # K: outcomes kept apart after pooling the rare ones


def homogeneity_test(a: dict, b: dict, min_expected: float = MIN_EXPECTED) -> TestResult:
    """Pearson's chi-square test of homogeneity: could counts ``a`` and ``b`` (any shot
    counts) be two samples of one distribution?

    The chi-square approximation needs every expected cell count to be at least about 5
    (Cochran); quantum results have many rare outcomes, so the outcomes whose expected
    count falls below ``min_expected`` in either sample are pooled into one bin, and that
    bin, if still too small, into the smallest other one. Which outcomes are pooled depends
    only on the two samples' totals per outcome, so under the null hypothesis the test
    keeps its level; what it gives up is power on differences confined to outcomes seen
    fewer than about 2 x ``min_expected`` times in all.
    """
    from scipy.special import chdtrc

    n_a, n_b = sum(a.values()), sum(b.values())
    if n_a == 0 or n_b == 0:
        raise ValueError("a sample without shots cannot be compared")
    total = n_a + n_b
    smaller = min(n_a, n_b) / total
    columns = [(a.get(k, 0), b.get(k, 0)) for k in sorted(a.keys() | b.keys())]
    kept = [c for c in columns if (c[0] + c[1]) * smaller >= min_expected]
    rare = [c for c in columns if (c[0] + c[1]) * smaller < min_expected]
    if rare:
        pooled = (sum(c[0] for c in rare), sum(c[1] for c in rare))
        if (pooled[0] + pooled[1]) * smaller < min_expected and kept:
            smallest = min(range(len(kept)), key=lambda i: kept[i][0] + kept[i][1])
            kept[smallest] = (kept[smallest][0] + pooled[0], kept[smallest][1] + pooled[1])
        else:
            kept.append(pooled)
    if len(kept) < 2:  # one bin left: nothing the samples could disagree on
        return TestResult(0.0, 0, 1.0, len(kept))
    statistic = 0.0
    for count_a, count_b in kept:
        column = count_a + count_b
        for observed, row in ((count_a, n_a), (count_b, n_b)):
            expected = column * row / total
            statistic += (observed - expected) ** 2 / expected
    df = len(kept) - 1
    return TestResult(statistic, df, float(chdtrc(df, statistic)), len(kept))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (in the given order): rejecting those below alpha
    keeps the chance of any false alarm among them at most alpha, whatever their dependence."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


# ---------------------------------------------------------------- matching and comparing

@dataclass(frozen=True)
class Change:
    field: str
    a: Any
    b: Any


@dataclass(frozen=True)
class Comparison:
    tvd: float
    hellinger_fidelity: float
    test: TestResult | None  # None: one stored result (same key, same state database)
    p_adjusted: float | None = None
    beyond_noise: bool = False


@dataclass
class Pair:
    """Experiments of A and B on the same circuit, backend and sweep point."""

    a: Experiment
    b: Experiment
    changes: list[Change]
    comparison: Comparison | None = None
    not_compared: str | None = None  # why there is no comparison


@dataclass(frozen=True)
class SideInfo:
    shown: str
    revision: str | None
    commit: str | None
    campaign: str
    state_path: str
    experiments: int
    with_results: int


@dataclass
class DiffReport:
    a: SideInfo
    b: SideInfo
    alpha: float
    removed: list[Experiment]  # only in A
    added: list[Experiment]  # only in B
    pairs: list[Pair]
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[Pair]:
        return [p for p in self.pairs if p.changes]

    @property
    def compared(self) -> list[Pair]:
        return [p for p in self.pairs if p.comparison is not None]

    @property
    def beyond_noise(self) -> list[Pair]:
        return [p for p in self.compared if p.comparison and p.comparison.beyond_noise]

    @property
    def verdict(self) -> str:
        if self.beyond_noise:
            return "differs"
        return "same" if self.compared else "nothing compared"

    @property
    def exit_code(self) -> int:
        return {"differs": EXIT_DIFFERS, "same": EXIT_SAME}.get(self.verdict, EXIT_NOTHING_COMPARED)


def point(experiment: Experiment) -> tuple[str, str, str]:
    """What makes two experiments "the same" for a diff: circuit, backend, sweep point."""
    return experiment.circuit, experiment.backend, experiment.params_json


def match(a: list[Experiment], b: list[Experiment]) -> tuple[list[tuple[Experiment, Experiment]],
                                                             list[Experiment], list[Experiment]]:
    """Pairs of A and B at the same point, and what is only in A and only in B. A point
    listed twice (two targets with different shots) pairs same key first, then same shots,
    then in manifest order."""
    on_b: dict = defaultdict(list)
    for experiment in b:
        on_b[point(experiment)].append(experiment)
    on_a: dict = defaultdict(list)
    for experiment in a:
        on_a[point(experiment)].append(experiment)
    pairs, removed = [], []
    for where, left in on_a.items():
        found, unmatched, rest = _pair_up(left, on_b.get(where, []))
        pairs += found
        removed += unmatched
        on_b[where] = rest
    order = {id(e): i for i, e in enumerate(a)}
    pairs.sort(key=lambda pair: order[id(pair[0])])
    removed.sort(key=lambda e: order[id(e)])
    paired_b = {id(y) for _, y in pairs}
    added = [e for e in b if id(e) not in paired_b]
    return pairs, removed, added


def _pair_up(left: list, right: list) -> tuple[list, list, list]:
    left, right, pairs = list(left), list(right), []
    for fits in (lambda x, y: x.key == y.key, lambda x, y: x.shots == y.shots, lambda x, y: True):
        for x in list(left):
            y = next((y for y in right if fits(x, y)), None)
            if y is not None:
                pairs.append((x, y))
                left.remove(x)
                right.remove(y)
    return pairs, left, right


def changes(x: Experiment, y: Experiment, ma: Manifest, mb: Manifest) -> list[Change]:
    """What differs between two matched experiments (nothing when their keys are equal)."""
    if x.key == y.key:
        return []
    found = []
    if x.program != y.program:
        found.append(Change("source", _source(ma, x), _source(mb, y)))
    if x.shots != y.shots:
        found.append(Change("shots", x.shots, y.shots))
    ida, idb = ma.backends[x.backend].identity, mb.backends[y.backend].identity
    found += [Change(name, ida[name], idb[name]) for name in ("provider", "device", "options")
              if ida[name] != idb[name]]
    if ma.seed != mb.seed:
        found.append(Change("seed", ma.seed, mb.seed))
    return found or [Change("key", x.key, y.key)]  # a change of key scheme: say only that


def _source(manifest: Manifest, experiment: Experiment) -> str:
    program = manifest.circuits[experiment.circuit].program
    return f"{program.origin} (sha256 {experiment.program[:12]})"


def compare_pairs(pairs: list[Pair], rows_a: dict, rows_b: dict, one_store: bool, alpha: float) -> None:
    """Fill in each pair's comparison (or why there is none), then judge them all at once."""
    tested = []
    for pair in pairs:
        row_a, row_b = rows_a.get(pair.a.key), rows_b.get(pair.b.key)
        counts_a, counts_b = row_a and row_a.counts, row_b and row_b.counts
        if not counts_a or not counts_b:
            missing = [f"{name} ({_why_missing(row)})" for name, row, counts in
                       (("A", row_a, counts_a), ("B", row_b, counts_b)) if not counts]
            pair.not_compared = "no stored result in " + " and ".join(missing)
            continue
        same = one_store and pair.a.key == pair.b.key
        test = None if same else homogeneity_test(counts_a, counts_b)
        pair.comparison = Comparison(total_variation(counts_a, counts_b),
                                     hellinger_fidelity(counts_a, counts_b), test)
        if test is not None:
            tested.append(pair)
    adjusted = holm([p.comparison.test.p_value for p in tested])  # type: ignore[union-attr]
    for pair, p_adjusted in zip(tested, adjusted):
        assert pair.comparison is not None
        pair.comparison = replace(pair.comparison, p_adjusted=p_adjusted,
                                  beyond_noise=p_adjusted < alpha)


def _why_missing(row) -> str:
    if row is None:
        return "not in its state database"
    return f"{row.state}: {row.error}" if row.error else row.state


def build_report(a: LoadedSide, b: LoadedSide, rows_a: dict, rows_b: dict, paths: tuple[Path, Path],
                 alpha: float = ALPHA) -> DiffReport:
    """The diff of two loaded sides, given their stored result rows by experiment key."""
    found, removed, added = match(a.experiments, b.experiments)
    pairs = [Pair(x, y, changes(x, y, a.manifest, b.manifest)) for x, y in found]
    compare_pairs(pairs, rows_a, rows_b, paths[0].resolve() == paths[1].resolve(), alpha)
    info = [_side_info(s, rows, path) for s, rows, path in ((a, rows_a, paths[0]), (b, rows_b, paths[1]))]
    report = DiffReport(info[0], info[1], alpha, removed, added, pairs)
    report.notes = _notes(report)
    return report


def _side_info(side: LoadedSide, rows: dict, path: Path) -> SideInfo:
    with_results = sum(1 for e in side.experiments if rows.get(e.key) and rows[e.key].counts)
    return SideInfo(side.side.shown, side.side.revision, side.commit, side.manifest.name,
                    str(path), len(side.experiments), with_results)


def _notes(report: DiffReport) -> list[str]:
    notes = []
    if not report.pairs:
        notes.append("nothing matches: no experiment of A has the circuit, backend and "
                     "parameters of one of B (two unrelated campaigns?)")
    for name, side in (("A", report.a), ("B", report.b)):
        missing = side.experiments - side.with_results
        if side.experiments and missing == side.experiments:
            advice = (f"check out {side.revision} and run qrun apply" if side.revision is not None
                      else "run qrun apply")
            notes.append(f"{name} ({side.shown}): none of its {side.experiments} experiments has "
                         f"a stored result in {side.state_path}: its results are not stored "
                         f"({advice} to compare them)")
        elif missing:
            notes.append(f"{name} ({side.shown}): {missing} of its {side.experiments} experiments "
                         "have no stored result (pending, failed or never applied)")
    if report.pairs and not report.compared:
        notes.append("no matched pair has results on both sides: nothing was compared")
    return notes


# ---------------------------------------------------------------- output

TEST_DESCRIPTION = (f"Pearson chi-square test of homogeneity on the two count vectors (outcomes "
                    f"expected fewer than {MIN_EXPECTED:g} times in either sample pooled), "
                    "Holm-corrected across the compared pairs")


def as_json(report: DiffReport) -> dict:
    """``qrun diff -o json``: everything, with ``format_version``."""
    return {
        "format_version": FORMAT_VERSION, "verdict": report.verdict, "exit_code": report.exit_code,
        "a": report.a.__dict__, "b": report.b.__dict__,
        "test": {"method": "pearson-chi-square-homogeneity", "description": TEST_DESCRIPTION,
                 "min_expected": MIN_EXPECTED, "correction": "holm", "alpha": report.alpha},
        "summary": {"removed": len(report.removed), "added": len(report.added),
                    "matched": len(report.pairs), "changed": len(report.changed),
                    "compared": len(report.compared), "beyond_noise": len(report.beyond_noise),
                    "not_compared": len(report.pairs) - len(report.compared)},
        "removed": [_experiment_json(e) for e in report.removed],
        "added": [_experiment_json(e) for e in report.added],
        "matched": [_pair_json(p) for p in report.pairs],
        "notes": report.notes,
    }


def _experiment_json(e: Experiment) -> dict:
    return {"circuit": e.circuit, "backend": e.backend, "params": e.params, "shots": e.shots,
            "key": e.key}


def _pair_json(pair: Pair) -> dict:
    comparison = None
    if pair.comparison is not None:
        c, t = pair.comparison, pair.comparison.test
        comparison = {"tvd": c.tvd, "hellinger_fidelity": c.hellinger_fidelity,
                      "same_result": t is None, "statistic": t and t.statistic, "df": t and t.df,
                      "p_value": t and t.p_value, "p_adjusted": c.p_adjusted,
                      "beyond_noise": c.beyond_noise}
    return {"circuit": pair.a.circuit, "backend": pair.a.backend, "params": pair.a.params,
            "a": {"key": pair.a.key, "shots": pair.a.shots},
            "b": {"key": pair.b.key, "shots": pair.b.shots},
            "changes": [c.__dict__ for c in pair.changes],
            "comparison": comparison, "not_compared": pair.not_compared}


def as_markdown(report: DiffReport) -> str:
    """``qrun diff -o md``: a summary, then tables (at most MARKDOWN_ROWS rows each)."""
    lines = ["# qrun diff", ""]
    for name, side in (("A", report.a), ("B", report.b)):
        where = f"commit {side.commit[:12]}" if side.commit else "on disk"
        lines.append(f"- **{name}**: `{side.shown}` ({where}), campaign `{side.campaign}`: "
                     f"{side.experiments} experiments, {side.with_results} with results")
    lines += ["", f"**Verdict: {report.verdict}**: {len(report.beyond_noise)} of "
              f"{len(report.compared)} compared results differ beyond shot noise "
              f"({TEST_DESCRIPTION}, family-wise alpha = {report.alpha:g}).", ""]
    lines += _table(f"Removed (only in A): {len(report.removed)}", ["circuit", "backend", "params", "shots"],
                    [[e.circuit, e.backend, _params(e.params), str(e.shots)] for e in report.removed])
    lines += _table(f"Added (only in B): {len(report.added)}", ["circuit", "backend", "params", "shots"],
                    [[e.circuit, e.backend, _params(e.params), str(e.shots)] for e in report.added])
    lines += _table(f"Changed: {len(report.changed)}", ["circuit", "backend", "params", "what changed (A → B)"],
                    [[p.a.circuit, p.a.backend, _params(p.a.params),
                      "; ".join(f"{c.field}: {c.a} → {c.b}" for c in p.changes)] for p in report.changed])
    ranked = sorted(report.pairs, key=lambda p: not (p.comparison and p.comparison.beyond_noise))
    lines += _table(f"Results of matched experiments: {len(report.pairs)}",
                    ["circuit", "backend", "params", "TVD", "Hellinger fidelity", "p", "p (Holm)", "beyond noise"],
                    [_result_cells(p) for p in ranked])
    if report.notes:
        lines += ["## Notes", "", *(f"- {note}" for note in report.notes), ""]
    return "\n".join(lines)


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [f"## {title}", ""]
    if not rows:
        return lines
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows[:MARKDOWN_ROWS]]
    if len(rows) > MARKDOWN_ROWS:
        lines.append(f"\n... and {len(rows) - MARKDOWN_ROWS} more (all of them in -o json)")
    return lines + [""]


def _result_cells(pair: Pair) -> list[str]:
    start = [pair.a.circuit, pair.a.backend, _params(pair.a.params)]
    c = pair.comparison
    if c is None:
        return start + ["", "", "", "", f"not compared: {pair.not_compared}"]
    if c.test is None:
        return start + [f"{c.tvd:.4f}", f"{c.hellinger_fidelity:.4f}", "", "", "no: one stored result (same key)"]
    return start + [f"{c.tvd:.4f}", f"{c.hellinger_fidelity:.4f}", f"{c.test.p_value:.3g}",
                    f"{c.p_adjusted:.3g}", "**yes**" if c.beyond_noise else "no"]


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
