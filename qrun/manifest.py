"""Manifest stage: YAML file -> validated :class:`Manifest`, or every problem with its line.

Three passes, each reporting all it finds: safe YAML (``yamlpos``), the JSON Schema in
``schemas/qrun-v1.schema.json``, then checks the schema cannot express (names that must
exist or be unique, source files that must parse, sweeps that must match the circuit).
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import importlib.util
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from . import sweep as sweeps
from . import yamlpos
from .costs import CURRENCY, Budget, Price, price_of
from .errors import BackendUnavailable, ManifestError, Problem, QrunError
from .providers import PROVIDERS, Limits, check_cache
from .sources import Program, SourceError, facts_cache, load_file
from .sources.factory import load_factory

DEFAULT_SHOTS = 1000
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Above this many experiments a campaign is refused: see sweep.MAX_POINTS for why.
MAX_EXPERIMENTS = sweeps.MAX_POINTS


@dataclass(frozen=True)
class CircuitSpec:
    name: str
    program: Program
    sweep: dict  # variable -> list of values
    sweep_mode: str
    line: int


@dataclass(frozen=True)
class BackendSpec:
    name: str
    provider: str
    device: str
    options: dict
    limits: Limits  # the device's, overridden by the manifest's
    credentials: dict
    line: int
    timeout: float | None = None  # seconds a remote job may take before it is cancelled
    chosen_limits: Limits = Limits()  # the limits the manifest itself gives this backend
    pricing: Price | None = None  # the manifest's own price for it (costs.price_of)

    @property
    def identity(self) -> dict:
        """What makes two backends the same for experiment keys (names are only labels)."""
        tuning = PROVIDERS[self.provider].tuning_options
        return {"provider": self.provider, "device": self.device,
                "options": {k: v for k, v in self.options.items() if k not in tuning}}

    @property
    def config(self) -> dict:
        """Everything an adapter needs to run this backend's jobs (stored with each job)."""
        return {"provider": self.provider, "device": self.device, "options": self.options,
                "credentials": self.credentials}


@dataclass(frozen=True)
class TargetSpec:
    circuits: tuple
    backends: tuple
    shots: int


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial: float = 1.0  # seconds
    backoff_max: float = 60.0


@dataclass(frozen=True)
class ExportSpec:
    format: str
    path: Path
    layout: str = "wide"


@dataclass(frozen=True)
class Manifest:
    path: Path
    sha256: str
    name: str
    labels: dict
    seed: int | None
    circuits: dict  # name -> CircuitSpec
    backends: dict  # name -> BackendSpec
    targets: tuple
    split: Limits
    retry: RetryPolicy
    exports: tuple
    raw: dict = field(repr=False, default_factory=dict)
    budget: Budget | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent


@lru_cache(maxsize=1)
@lru_cache(maxsize=1)
def _checked_in_schema() -> str:
    """The schema's text, shipped inside the package (and in schemas/ of the repo)."""
    packaged = resources.files("qrun") / "schemas" / "qrun-v1.schema.json"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    repo_copy = Path(__file__).resolve().parent.parent / "schemas" / "qrun-v1.schema.json"
    return repo_copy.read_text(encoding="utf-8")


def schema(provider_ids: list[str] | None = None) -> dict:
    """The manifest's JSON Schema, listing ``provider_ids`` (default: every registered
    provider, plugins included). The checked-in file lists qrun's own providers; a test
    keeps it equal to ``schema([spec.id for spec in PROVIDERS.builtin()])``."""
    document = json.loads(_checked_in_schema())
    provider = document["$defs"]["backend"]["properties"]["provider"]
    provider["enum"] = list(PROVIDERS) if provider_ids is None else list(provider_ids)
    return document


def schema_text(provider_ids: list[str] | None = None) -> str:
    """The schema as the checked-in file writes it (``qrun schema``)."""
    return json.dumps(schema(provider_ids), indent=2, ensure_ascii=False) + "\n"


def load(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Load and validate a manifest; raise :class:`ManifestError` listing every problem.

    ``root`` is the folder every path of the manifest must stay inside (else $QRUN_ROOT,
    else the rule of :func:`path_root`).
    """
    path = Path(path)
    shown = str(path)
    allowed = path_root(path.resolve().parent, root or os.environ.get("QRUN_ROOT") or None)
    raw_bytes = _read(path, shown)
    wide = _wide_encoding(raw_bytes)
    if wide:
        raise ManifestError([Problem(shown, 1, "", f"{wide} text, but manifests are UTF-8: "
                                                   f"convert it (iconv -f {wide} -t UTF-8)")])
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes.count(b"\n", 0, exc.start) + 1  # the line to fix, not just the offset
        raise ManifestError([Problem(shown, line, "", f"not UTF-8 text (byte {exc.start})")]
                            ) from None
    try:
        doc = yamlpos.load(text, shown)
    except yamlpos.YamlError as exc:
        raise ManifestError([exc.problem]) from None
    problems = _schema_problems(doc)
    if problems:  # semantic checks assume the shapes the schema guarantees
        raise ManifestError(problems)
    checker = _Checker(doc, path.resolve(), allowed)
    manifest = checker.build(hashlib.sha256(raw_bytes).hexdigest())
    facts_cache.save()  # what the parses and checks learned, for the next command
    check_cache.save()
    if checker.problems:
        raise ManifestError(checker.problems)
    return manifest


def _read(path: Path, shown: str) -> bytes:
    try:
        # Read at most one byte past the limit rather than trusting stat(): a pipe or a
        # device (/dev/zero) reports size 0 and may never end.
        with path.open("rb") as stream:
            content = stream.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError([Problem(shown, 0, "", "no such file")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(shown, 0, "", "is a folder, not a manifest file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(shown, 0, "", f"cannot read: {exc.strerror}")]) from None
    if len(content) > MAX_MANIFEST_BYTES:
        raise ManifestError([Problem(shown, 1, "", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")])
    return content


# Byte order marks of the encodings an editor (or PowerShell's `>`) may save a manifest in;
# UTF-32's come first, as UTF-32-LE's starts with UTF-16-LE's.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _wide_encoding(raw: bytes) -> str | None:
    """UTF-16 or UTF-32, if the manifest is saved so: it would otherwise be reported as
    "not UTF-8 (byte 0)" or, without a byte order mark, as a NUL character."""
    for bom, name in _WIDE_BOMS:
        if raw.startswith(bom):
            return name
    head = raw[:4]
    if len(head) == 4 and all(head[i] == 0 and head[i ^ 1] != 0 for i in (0, 2)):
        return "UTF-16"  # ASCII as big-endian UTF-16: \0a\0p
    if len(head) == 4 and all(head[i] == 0 and head[i ^ 1] != 0 for i in (1, 3)):
        return "UTF-16"  # little-endian: a\0p\0
    return None


# ---------------------------------------------------------------- schema pass

@lru_cache(maxsize=1)
def _validator_class():
    """Draft 2020-12, except that an integer must be written as one.

    The draft counts 1000.0 as an integer; it would reach qrun as a float, and a float
    `shots` gives other experiment keys than the same integer (keys hash the JSON text).
    """
    from jsonschema import Draft202012Validator, validators

    def is_integer(_checker, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    return validators.extend(Draft202012Validator, type_checker=checker,
                             validators={"pattern": _ecma_pattern_keyword})


def _ecma_pattern_keyword(validator, pattern: str, instance, schema):
    """JSON Schema's `pattern`, matched as the schema means it (ECMA-262 regular expressions).

    jsonschema hands the pattern to Python's `re`, whose `$` also matches before a final
    newline: `metadata.name: "abc\\n"` passed `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$` and became a
    campaign name (an editor, which reads the schema with ECMA-262's `$`, refused it).
    """
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=64)
def _ecma_regex(pattern: str) -> re.Pattern:
    """``pattern`` compiled so that `$` matches only at the very end, as in ECMA-262 (without
    the multiline flag), and `\\d`, `\\w` only ASCII, as there; the rest reads the same."""
    translated, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        translated.append(char)
    return re.compile("".join(translated), re.ASCII)


def _schema_problems(doc: yamlpos.Located) -> list[Problem]:
    if doc.data is None:
        return [doc.problem((), "the manifest is empty; it needs apiVersion, kind, metadata "
                                "and spec")]
    if not isinstance(doc.data, dict):
        return [doc.problem((), "a manifest is a mapping with apiVersion, kind, metadata and spec, "
                                f"not {_type_name(doc.data)}")]
    validator = _validator_class()(schema())
    errors = list(validator.iter_errors(doc.data))
    # A value of the wrong type gets that one message: "expected an integer, got a number"
    # says it all about `shots: .inf`, without "inf is greater than the maximum" as well.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    problems = []
    for error in errors:
        if error.validator != "type" and tuple(error.absolute_path) in mistyped:
            continue
        problems.extend(_explain(doc, error))
    return problems


def _plugin_problems(path: tuple) -> str:
    """For an unknown provider: the installed plugins that failed to register one."""
    if not path or path[-1] != "provider" or not PROVIDERS.problems:
        return ""
    return " (providers left out: " + "; ".join(PROVIDERS.problems) + ")"


def _explain(doc: yamlpos.Located, error) -> list[Problem]:
    """Turn one jsonschema error into messages a manifest author understands."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        # Suggestions for the first keys only: beyond, they are noise, and difflib takes
        # 0.1 ms a key (2 s for a file of 25,000 unknown keys).
        return [doc.problem(path + (key,), f"unknown key{_suggest(key, allowed) if i < 100 else ''}"
                                           f"{_unusual(key)}")
                for i, key in enumerate(extra)]
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return [doc.problem(path, f"missing required key '{m}'") for m in missing or [error.message]]
    if error.validator == "const":
        return [doc.problem(path, f"must be {error.validator_value!r}, not {_shown(error.instance)}"
                                  f"{_unusual(error.instance)}")]
    if error.validator in ("minimum", "maximum"):  # jsonschema's words, but 10**400 shortened
        side = "less than the minimum" if error.validator == "minimum" else \
            "greater than the maximum"
        return [doc.problem(path, f"{_shown(error.instance)} is {side} of {error.validator_value}")]
    if error.validator == "enum":
        choices = ", ".join(map(str, error.validator_value))
        return [doc.problem(path, f"{_shown(error.instance)} is not one of: {choices}"
                                  f"{_suggest(str(error.instance), list(map(str, error.validator_value)))}"
                                  f"{_unusual(error.instance)}{_plugin_problems(path)}")]
    if error.validator == "type":
        wanted = error.validator_value
        if wanted == "integer" and isinstance(error.instance, float):
            return [doc.problem(path, _not_integer(error.instance))]
        wanted = _one_of(wanted if isinstance(wanted, list) else [wanted])
        return [doc.problem(path, f"expected {wanted}, got {_type_name(error.instance)}")]
    if error.validator == "pattern" and error.validator_value in _pattern_meanings():
        return [doc.problem(path, f"{_shown(error.instance)} "
                                  f"{_pattern_meanings()[error.validator_value]}"
                                  f"{_unusual(error.instance)}")]
    shape = _sweep_shape(path, error)
    if shape:
        return [doc.problem(path, shape)]
    return [doc.problem(path, error.message)]


def _not_integer(number: float) -> str:
    """For `shots: 1e3` or `1000.0`, "got a number" would puzzle: it is one, and whole."""
    if number.is_integer():
        return f"expected an integer, got {number!r}; write it without a decimal point or " \
               "exponent"
    return f"expected an integer, got {number!r}"


# The schema's types, as YAML calls them ("got a mapping" needs "expected a mapping").
_YAML_TYPES = {"object": "mapping", "array": "list"}


def _one_of(types: list) -> str:
    """['array', 'object', 'number'] -> 'a list, a mapping or a number'."""
    names = [_article(_YAML_TYPES.get(t, t)) for t in types]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@lru_cache(maxsize=1)
def _pattern_meanings() -> dict:
    """What each of the schema's patterns means, to say instead of the regular expression."""
    defs = schema()["$defs"]
    return {
        defs["name"]["pattern"]: "is not a valid name (letters, digits, '.', '_', '-'; "
                                 "starting with a letter or digit; at most 100)",
        defs["duration"]["pattern"]: "is not a duration (use 500ms, 1s, 2m, 1h)",
        defs["limits"]["properties"]["submit_rate"]["pattern"]:
            "is not a rate (use a number per second, minute or hour: 5/s, 10/m, 100/h)",
        defs["backend"]["properties"]["credentials"]["properties"]["env"]["pattern"]:
            "is not an environment variable name (letters, digits, '_'; not starting with a digit)",
        defs["circuit"]["properties"]["input"]["pattern"]:
            "is not an input state (photons per mode, such as |1,0,1,0>)",
        defs["circuit"]["properties"]["source"]["properties"]["python"]["pattern"]:
            "is not a function to call (write package.module:function)",
    }


def _sweep_shape(path: tuple, error) -> str | None:
    """For a sweep value of the wrong shape, the shapes it may have (as sweep.py words them).

    jsonschema would say "{'linspace': [0, 1], 'range': [3]} has too many properties".
    """
    if len(path) < 5 or path[:2] != ("spec", "circuits") or path[3] != "sweep":
        return None
    rest = path[5:]
    if not rest and error.validator in ("minProperties", "maxProperties"):
        return "give exactly one of values, linspace or range"
    if rest == ("linspace",) and error.validator in ("minItems", "maxItems"):
        return "linspace takes [start, stop, count]"
    if rest == ("range",) and error.validator in ("minItems", "maxItems"):
        return "range takes [stop], [start, stop] or [start, stop, step]"
    return None


def _suggest(word: str, choices: list) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _shown(value) -> str:
    """repr() of a value for a message, shortened when it is huge (10**400, a 1 MB name)."""
    text = repr(value)
    if isinstance(value, int) and len(text) > 40:  # as sweep.py shows them
        return f"{text[:12]}... ({len(text)} digits)"
    if isinstance(value, str) and len(text) > 200:
        return f"{repr(value[:40])[:-1]}...' ({len(value)} characters)"
    return text


def _unusual(value) -> str:
    """Name the first character of ``value`` that is not printable ASCII.

    A Cyrillic 'о' in `shоts`, a zero-width space or a right-to-left override looks right
    on screen; "unknown key (did you mean 'shots'?)" alone would leave the author puzzled.
    """
    if not isinstance(value, str):
        return ""
    for char in value:
        if not " " <= char <= "~":
            name = unicodedata.name(char, "")
            return f"; it contains U+{ord(char):04X}{' ' + name if name else ''}"
    return ""


def _article(type_name: str) -> str:
    return ("an " if type_name[:1] in "aeiou" else "a ") + type_name


def _type_name(value) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- semantic pass

class _Checker:
    """Checks what the schema cannot, collecting every problem instead of stopping."""

    def __init__(self, doc: yamlpos.Located, manifest_path: Path, root: PathRoot):
        self.doc = doc
        self.path = manifest_path
        self.folder = manifest_path.parent
        self.root = root.folder
        self.root_rule = root.rule
        self.problems: list[Problem] = []
        self.sources: dict = {}  # resolved source file -> name of its circuit

    def report(self, path: tuple, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def build(self, sha256: str) -> Manifest:
        data = self.doc.data
        assert isinstance(data, dict)  # the schema has passed: the document is a mapping
        spec = data["spec"]
        shots = spec.get("shots", DEFAULT_SHOTS)
        labels = dict(data["metadata"].get("labels", {}))
        self._check_finite(labels, ("metadata", "labels"))
        circuits = self._circuits(spec["circuits"])
        backends = self._backends(spec["backends"])
        targets = self._targets(spec, circuits, backends, shots)
        split = spec.get("split", {})
        split = Limits(max_shots_per_job=split.get("max_shots_per_job"),
                       max_experiments_per_job=split.get("max_experiments_per_job"))
        self._check_formats_and_sizes(spec, targets, circuits, backends)
        self._check_size(targets, circuits, backends, split)
        retry = spec.get("retry", {})
        backoff = retry.get("backoff", {})
        return Manifest(
            path=self.path,
            sha256=sha256,
            name=data["metadata"]["name"],
            labels=labels,
            seed=spec.get("seed"),
            circuits=circuits,
            backends=backends,
            targets=tuple(targets),
            split=split,
            retry=RetryPolicy(
                max_attempts=retry.get("max_attempts", 3),
                backoff_initial=self._duration(backoff.get("initial", 1.0), ("spec", "retry", "backoff", "initial")),
                backoff_max=self._duration(backoff.get("max", 60.0), ("spec", "retry", "backoff", "max")),
            ),
            exports=tuple(self._exports(spec.get("export", []))),
            raw=data,
            budget=self._budget(spec.get("budget"), backends),
        )

    # -- circuits

    def _circuits(self, entries: list) -> dict:
        circuits: dict = {}
        names: dict = {}
        for i, entry in enumerate(entries):
            where = ("spec", "circuits", i)
            name = entry["name"]
            duplicate = _duplicate("circuit", name, names)
            if duplicate:
                self.report(where + ("name",), duplicate)
                continue
            program = self._program(entry, where)
            if program is None:
                continue
            values = self._sweep(entry, program, where)
            if values is not None:
                circuits[name] = CircuitSpec(name=name, program=program, sweep=values,
                                             sweep_mode=entry.get("sweep_mode", "grid"),
                                             line=self.doc.line_of(where))
        return circuits

    def _program(self, entry: dict, where: tuple) -> Program | None:
        source = entry["source"]
        try:
            if isinstance(source, dict):  # {python: "module:function", args: {...}}
                return load_factory(source, self.folder, entry.get("input"))
            file = self._inside_root(source, where + ("source",))
            if file is None:
                return None
            self.sources.setdefault(file, entry["name"])
            return load_file(file, source, entry.get("format"), entry.get("index"),
                             entry.get("input"))
        except (SourceError, BackendUnavailable) as exc:
            self.report(where + ("source",), str(exc))
            return None

    def _inside_root(self, relative: str, where: tuple) -> Path | None:
        """Resolve a manifest path; refuse one that escapes the root (see path_root)."""
        if "\0" in relative:  # no file system accepts it; resolve() would raise ValueError
            self.report(where, f"{relative!r} contains a NUL character")
            return None
        if any("\ud800" <= char <= "\udfff" for char in relative):
            # Half a UTF-16 pair (YAML's "\ud800"): not encodable, resolve() would raise.
            self.report(where, f"{relative!r} contains an unpaired surrogate, which no file "
                               "name can hold")
            return None
        first = relative.replace("\\", "/").split("/", 1)[0]
        if first.startswith("~") and not (self.folder / first).exists():
            self.report(where, f"{relative!r} starts with '~', which qrun does not expand: "
                               "paths are relative to the manifest's folder")
            return None
        candidate = (self.folder / relative).resolve()  # symbolic links followed
        if not candidate.is_relative_to(self.root):
            self.report(where, f"{relative!r} points outside {self.root}; paths must stay "
                               f"inside {self.root_rule}")
            return None
        return candidate

    def _sweep(self, entry: dict, program: Program, where: tuple) -> dict | None:
        declared = set(program.parameters)
        values: dict = {}
        ok = True
        for variable, spec in entry.get("sweep", {}).items():
            var_path = where + ("sweep", variable)
            if variable not in declared:
                hint = f"; it declares: {', '.join(sorted(declared))}" if declared else \
                    "; it declares no parameters"
                self.report(var_path, f"circuit '{entry['name']}' has no parameter {variable!r}"
                                      f"{_suggest(variable, sorted(declared))}{hint}")
                ok = False
                continue
            try:
                values[variable] = sweeps.values_of(variable, spec)
            except sweeps.SweepError as exc:
                self.report(var_path + ((exc.key,) if exc.key else ()), str(exc))
                ok = False
        unbound = set(program.facts.required) - set(entry.get("sweep", {}))
        if unbound:
            self.report(where, f"parameters without values: {', '.join(sorted(unbound))}; "
                               "give them in sweep:")
            ok = False
        if ok and entry.get("sweep_mode") == "zip":
            try:
                sweeps.check_zip(values)
            except sweeps.SweepError as exc:
                self.report(where + ("sweep",), str(exc))
                ok = False
        if ok and sweeps.point_count(values, entry.get("sweep_mode", "grid")) > sweeps.MAX_POINTS:
            count = sweeps.point_count(values, entry.get("sweep_mode", "grid"))
            self.report(where + ("sweep",), f"sweep expands to {count:,} points; at most "
                                            f"{sweeps.MAX_POINTS:,} per circuit")
            ok = False
        return values if ok else None

    # -- backends

    def _backends(self, entries: list) -> dict:
        backends: dict = {}
        names: dict = {}
        for i, entry in enumerate(entries):
            where = ("spec", "backends", i)
            name = entry["name"]
            duplicate = _duplicate("backend", name, names)
            if duplicate:
                self.report(where + ("name",), duplicate)
                continue
            info = PROVIDERS[entry["provider"]]
            device = entry.get("device", info.default_device)
            if device is None:
                self.report(where, f"{info.id} needs a device: name one with device:")
                continue
            try:
                problem = info.device_problem(device)
            except BackendUnavailable as exc:
                self.report(where + ("provider",), str(exc))
                continue
            if problem:
                self.report(where + ("device",), problem + _unusual(device))
                continue
            options = entry.get("options", {})
            for option in options:
                if option not in info.option_names:
                    allowed = ", ".join(sorted(info.option_names)) or "none"
                    self.report(where + ("options", option),
                                f"{info.id} has no option {option!r}"
                                f"{_suggest(option, sorted(info.option_names))} (accepted: {allowed})"
                                f"{_unusual(option)}")
            self._check_finite(options, where + ("options",))
            limits = entry.get("limits", {})
            if "submit_rate" in limits:
                self._check_rate(limits["submit_rate"], where + ("limits", "submit_rate"))
            manifest_limits = Limits(
                max_parallel=limits.get("max_parallel"),
                submit_rate=_rate(limits["submit_rate"]) if "submit_rate" in limits else None,
                max_shots_per_job=limits.get("max_shots_per_job"),
                max_experiments_per_job=limits.get("max_experiments_per_job"),
                max_qubits=limits.get("max_qubits"),
                max_modes=limits.get("max_modes"),
                max_photons=limits.get("max_photons"),
            )
            backends[name] = BackendSpec(
                name=name, provider=info.id, device=device, options=options,
                limits=info.device_limits(device).overridden(manifest_limits),
                chosen_limits=manifest_limits,
                credentials=dict(entry.get("credentials", {})), line=self.doc.line_of(where),
                timeout=self._duration(entry["timeout"], where + ("timeout",))
                if "timeout" in entry else None,
                pricing=Price.from_entry(entry["pricing"], entry["pricing"].get("currency", CURRENCY),
                                         "the manifest's pricing") if "pricing" in entry else None)
        return backends

    # -- cost

    def _budget(self, value, backends: dict) -> Budget | None:
        """spec.budget: a total, or a mapping of a total, per-backend bounds and a currency."""
        if value is None:
            return None
        where = ("spec", "budget")
        if not isinstance(value, dict):
            value = {"total": value}
        budget = Budget(total=value.get("total"), backends=dict(value.get("backends", {})),
                        currency=value.get("currency", CURRENCY))
        for name in budget.backends:
            if name not in backends:
                self.report(where + ("backends", name),
                            f"no backend named {name!r}{_suggest(name, sorted(backends))}")
        for name, backend in backends.items():
            price = price_of(backend)
            if price is not None and price.currency != budget.currency:
                self.report(where, f"the budget is in {budget.currency}, backend {name}'s price "
                                   f"in {price.currency}: give both in one currency")
        return budget

    # -- targets

    def _targets(self, spec: dict, circuits: dict, backends: dict, shots: int) -> list[TargetSpec]:
        if "targets" not in spec:  # every circuit on every backend
            return [TargetSpec(tuple(circuits), tuple(backends), shots)]
        declared_circuits = {c["name"] for c in spec["circuits"]}
        declared_backends = {b["name"] for b in spec["backends"]}
        targets = []
        for i, entry in enumerate(spec["targets"]):
            where = ("spec", "targets", i)
            for j, name in enumerate(entry["circuits"]):
                if name not in declared_circuits:
                    self.report(where + ("circuits", j), f"unknown circuit {name!r}"
                                f"{_suggest(name, sorted(declared_circuits))}{_unusual(name)}")
            for j, name in enumerate(entry["backends"]):
                if name not in declared_backends:
                    self.report(where + ("backends", j), f"unknown backend {name!r}"
                                f"{_suggest(name, sorted(declared_backends))}{_unusual(name)}")
            targets.append(TargetSpec(
                circuits=tuple(n for n in entry["circuits"] if n in circuits),
                backends=tuple(n for n in entry["backends"] if n in backends),
                shots=entry.get("shots", shots)))
        return targets

    def _check_formats_and_sizes(self, spec, targets, circuits, backends) -> None:
        """Every circuit of a target must be runnable on every backend of that target."""
        checked: set = set()
        backend_index = {entry["name"]: i for i, entry in enumerate(spec["backends"])}
        for i, target in enumerate(targets):
            for backend_name in target.backends:
                # Without targets every circuit meets every backend: point at the backend.
                where = ("spec", "targets", i) if "targets" in spec else \
                    ("spec", "backends", backend_index[backend_name])
                for circuit_name in target.circuits:
                    if (circuit_name, backend_name) in checked:
                        continue
                    checked.add((circuit_name, backend_name))
                    problem = self._misfit(circuits[circuit_name], backends[backend_name])
                    if problem:
                        self.report(where, problem)

    def _misfit(self, circuit: CircuitSpec, backend: BackendSpec) -> str | None:
        """Why ``circuit`` cannot run on ``backend``, or None."""
        program, facts, limits = circuit.program, circuit.program.facts, backend.limits
        info = PROVIDERS[backend.provider]
        names = f"circuit '{circuit.name}'", f"backend '{backend.name}'"
        if program.format not in info.formats:
            what = "a Braket circuit" if program.format == "braket" else _FAMILY_WORDS[program.family]
            return (f"{names[0]} ({what}) cannot run on {names[1]} "
                    f"({info.id} runs {_FAMILY_PLURALS[info.family]})")
        unit = {"gate": "qubits", "pulser": "atoms", "photonic": "modes"}[program.family]
        if limits.max_qubits and unit != "modes" and facts.width > limits.max_qubits:
            return f"{names[0]} has {facts.width} {unit}; {names[1]} takes at most {limits.max_qubits}"
        if limits.max_modes and facts.width > limits.max_modes:
            return f"{names[0]} has {facts.width} modes; {names[1]} takes at most {limits.max_modes}"
        if limits.max_photons and (facts.photons or 0) > limits.max_photons:
            return (f"{names[0]} sends {facts.photons} photons; {names[1]} takes at most "
                    f"{limits.max_photons}")
        if facts.clbits == 0:
            return f"{names[0]} measures nothing; add measurements to get counts"
        try:
            return info.check_program(program, backend.device, backend.options)
        except BackendUnavailable as exc:
            return str(exc)

    def _check_size(self, targets, circuits, backends, split: Limits) -> None:
        """Refuse a campaign too big to plan: too many experiments, or too many jobs once
        shots above a job's limit are cut into one job per slice (planner.cut_jobs), as a
        billion shots at max_shots_per_job 1 would be."""
        experiments = jobs = 0
        for t in targets:
            points = sum(sweeps.point_count(circuits[c].sweep, circuits[c].sweep_mode)
                         for c in t.circuits)
            for b in t.backends:
                cap = backends[b].limits.tightened(split).max_shots_per_job
                experiments += points
                jobs += points * (-(-t.shots // cap) if cap and t.shots > cap else 1)
        if experiments > MAX_EXPERIMENTS:
            self.report(("spec",), f"campaign expands to {experiments:,} experiments; at most "
                                   f"{MAX_EXPERIMENTS:,} (split it into several campaigns)")
        elif jobs > MAX_EXPERIMENTS:
            self.report(("spec",), f"campaign's shots are cut into {jobs:,} jobs by "
                                   f"max_shots_per_job; at most {MAX_EXPERIMENTS:,} (raise "
                                   "max_shots_per_job or lower shots)")

    def _check_finite(self, value, where: tuple) -> None:
        """Labels and options are stored and hashed as JSON, which has no NaN or infinity."""
        if isinstance(value, float) and not math.isfinite(value):
            self.report(where, f"{value} is not a finite number; qrun stores this value as "
                               "JSON, which has no NaN or infinity")
        elif isinstance(value, dict):
            for key, item in value.items():
                self._check_finite(item, where + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_finite(item, where + (index,))

    def _check_rate(self, text: str, where: tuple) -> None:
        rate = _rate(text)
        if rate == 0:
            self.report(where, "a rate of 0 would never submit; leave submit_rate out for no limit")
        elif not math.isfinite(rate):
            self.report(where, f"{_shown(text)} is beyond any rate; leave submit_rate out for "
                               "no limit")

    # -- export, durations

    def _exports(self, entries: list):
        written: dict = {}  # resolved path -> index of the export writing it
        for i, entry in enumerate(entries):
            where = ("spec", "export", i)
            fmt = entry.get("format") or Path(entry["path"]).suffix.lstrip(".").lower()
            if fmt not in ("jsonl", "csv", "parquet"):
                self.report(where + ("path",), "cannot tell the export format from the path; "
                                               "set format: jsonl, csv or parquet")
                continue
            if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
                # Found now, not after a campaign that may have run for days.
                self.report(where + ("format",) if "format" in entry else where + ("path",),
                            "a parquet export needs pyarrow: pip install 'qrun[parquet]'")
                continue
            target = self._inside_root(entry["path"], where + ("path",))
            if target is None:
                continue
            problem = self._export_problem(entry["path"], target, written)
            if problem:
                self.report(where + ("path",), problem)
                continue
            written[target] = i
            yield ExportSpec(format=fmt, path=target, layout=entry.get("layout", "wide"))

    def _export_problem(self, relative: str, target: Path, written: dict) -> str | None:
        """Why writing an export to ``target`` would destroy an input or fail at the end of
        a campaign (which may have run for days): found now, it costs nothing."""
        shown = repr(relative)
        if relative.endswith(("/", "\\")) or target.is_dir():
            return f"{shown} is a folder; name a file in it (such as results.csv)"
        if target == self.path:
            return f"{shown} is this manifest; exporting would overwrite it"
        if target in self.sources:
            return f"{shown} is the source of circuit '{self.sources[target]}'; exporting " \
                   "would overwrite it"
        if target in written:
            return f"{shown} is also written by spec.export[{written[target]}]; each export " \
                   "needs its own file"
        inside = target.relative_to(self.root)
        if ".git" in inside.parts:
            return f"{shown} is inside the repository's .git folder"
        if target.exists() and not target.is_file():
            return f"{shown} is not a regular file (a device or a pipe)"
        for folder in reversed(target.parents[:len(inside.parts) - 1]):
            if folder.exists() and not folder.is_dir():
                return f"{shown} cannot be created: {os.path.relpath(folder, self.folder)} is " \
                       "a file, not a folder"
        return None

    def _duration(self, value, where: tuple) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.report(where, str(exc))
            return 0.0


_FAMILY_WORDS = {"gate": "a gate-model circuit", "pulser": "a Pulser sequence",
                 "photonic": "a photonic circuit"}
_FAMILY_PLURALS = {"gate": "gate-model circuits", "pulser": "Pulser sequences",
                   "photonic": "photonic circuits"}


def parse_duration(value) -> float:
    """'500ms', '1s', '2m', '1h' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _float(value)
    else:
        match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?", str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration (use 500ms, 1s, 2m, 1h)")
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if not math.isfinite(seconds):  # .inf and .nan are numbers to the schema; so is 10**400
        raise ValueError(f"{_shown(value)} is not a duration (use a finite number of seconds)")
    return seconds


def _float(number) -> float:
    """The number as a float; infinity for an integer beyond any float, not OverflowError."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _rate(text: str) -> float:
    """'5/s' -> 5.0 submissions per second."""
    count, unit = text.split("/")
    return float(count) / {"s": 1, "m": 60, "h": 3600}[unit]


def _duplicate(kind: str, name: str, seen: dict) -> str | None:
    """Why ``name`` may not be used again, recording it in ``seen`` (casefolded -> name).

    Names differing only in case are refused too: `ghz` and `GHZ` are one circuit to a
    reader, to a case-insensitive file system and to most spreadsheets. (Names are ASCII, so
    Unicode normalization cannot make two different spellings look alike.)
    """
    earlier = seen.get(name.casefold())
    if earlier is None:
        seen[name.casefold()] = name
        return None
    if earlier == name:
        return f"duplicate {kind} name '{name}'"
    return f"{kind} name '{name}' differs from '{earlier}' only in case; names must differ " \
           "in more than case"


@dataclass(frozen=True)
class PathRoot:
    """The folder every path of a manifest must stay inside, and the rule that chose it."""

    folder: Path
    rule: str  # which folder and why, as messages say it


# What the refusal of a path suggests when the root was not given.
_WIDEN = "; --root DIR (or QRUN_ROOT) allows another folder"


def path_root(manifest_folder: Path, chosen: str | Path | None = None,
              cwd: Path | None = None) -> PathRoot:
    """Where a manifest's paths may lead, so that a manifest cannot read or overwrite files
    of another project (an export to `../../.bashrc`), and a campaign's inputs stay in the
    repository whose commit its provenance records:

    - the folder given by --root or QRUN_ROOT, when one is;
    - else the git repository holding the manifest;
    - else (no git) the current folder, when the manifest is inside it: `qrun apply
      manifests/a.yaml` run from a project holding `manifests/` and `circuits/`. Not when
      the current folder is the home folder or the file system's root, which hold far more
      than one project;
    - else the manifest's own folder.
    """
    if chosen is not None:
        folder = Path(chosen).expanduser().resolve()
        if not folder.is_dir():
            raise QrunError(f"--root {chosen}: no such folder (it is the folder every path "
                            "of the manifest must stay inside)")
        return PathRoot(folder, "the folder --root (or QRUN_ROOT) gives")
    repository = _git_root(manifest_folder)
    if repository is not None:
        return PathRoot(repository, f"the manifest's git repository{_WIDEN}")
    cwd = (cwd or Path.cwd()).resolve()
    if not manifest_folder.is_relative_to(cwd):
        return PathRoot(manifest_folder, "the manifest's folder, as no git repository holds "
                                         f"the manifest and the current folder does not{_WIDEN}")
    too_wide = _too_wide_folders().get(cwd)
    if too_wide:
        return PathRoot(manifest_folder, "the manifest's folder, as no git repository holds "
                                         f"the manifest and the current folder is {too_wide}"
                                         f"{_WIDEN}")
    return PathRoot(cwd, f"the current folder, as no git repository holds the manifest{_WIDEN}")


def _too_wide_folders() -> dict:
    folders = {Path(Path.cwd().anchor): "the file system's root"}
    try:
        folders[Path.home().resolve()] = "the home folder"
    except (RuntimeError, KeyError):  # no HOME and no password entry: no home to protect
        pass
    return folders


def _git_root(folder: Path) -> Path | None:
    """The git repository holding ``folder`` (a worktree's .git is a file), or None."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None
