"""Safe YAML loading that remembers the line of every key, so errors can point at it.

PyYAML's safe loader forgets where values came from; we walk its node tree ourselves,
building plain Python values and a map from key path (a tuple of keys and indices) to
line number. The walk also refuses what a plain load would silently accept: duplicate
keys, non-string keys, alias bombs ("billion laughs", also through `<<` merge keys) that
expand to huge documents, aliases that contain themselves, and values JSON has no type for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from .errors import Problem

# A manifest with more values than this, as written or after expanding aliases, is refused:
# real manifests have hundreds, an alias bomb has billions. The bound also keeps loading
# under a second: 50,000 values take about 0.5 s to parse, build and validate.
MAX_NODES = 50_000
# Nor may aliases expand the text of its values past this many characters (twice the
# largest manifest): an anchored 1 MB string aliased a thousand times is a few thousand
# values, but a gigabyte for every later stage that serializes it.
MAX_TEXT = 8_000_000
# A syntax error found by libyaml is parsed again by PyYAML's pure-Python parser, whose
# messages are clearer (they name the offending character) and the same on every machine,
# but only when it lies this early in the text: the pure-Python parser reads about 300 kB
# a second, and stops at the error.
REPARSE_CHARS = 200_000
# YAML's limit on a key written without `? `; past it, PyYAML and libyaml only say
# "mapping values are not allowed here" or "could not find expected ':'".
MAX_KEY_CHARS = 1024
_LONG_KEY_SYMPTOMS = ("mapping values are not allowed", "could not find expected ':'")
# Real manifests nest fewer than ten levels; far deeper nesting would only exhaust Python's
# stack in the recursive walks (ours, PyYAML's composer, jsonschema's validator).
MAX_DEPTH = 64

MERGE_TAG = "tag:yaml.org,2002:merge"
# Lists and mappings may carry no other tag: we would build a plain list or dict whatever
# the tag says (!!set, !!omap, !!python/object/apply:...), silently changing its meaning.
PLAIN_COLLECTION_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
# Scalars kept as the text written: a date such as 2024-05-01 (JSON has no dates), and `=`
# (YAML 1.1's "default value" key, which PyYAML's flatten_mapping also turns into text).
TEXT_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
# What a manifest may hold: JSON's scalars, which the schema and the state database expect.
JSON_SCALARS = (str, int, float, bool, type(None))

Path = tuple  # of str (mapping keys) and int (sequence indices)

# Keys shown bare in a key path; any other key (a dot, a space, a line break, nothing at all)
# is shown quoted, ['like this'], so that the path stays readable and on one line.
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# What str.splitlines() breaks at: a problem must stay one line of output.
LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


def format_path(path: Path) -> str:
    """('spec', 'circuits', 2, 'name') -> 'spec.circuits[2].name'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not BARE_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


def one_line(message: str) -> str:
    """The message with line breaks written as escapes (a file name may hold one)."""
    return LINE_BREAKS.sub(lambda match: repr(match.group())[1:-1], message)


@dataclass
class Located:
    """A loaded YAML document and where each of its values was written."""

    data: object
    lines: dict = field(default_factory=dict)
    file: str = "<manifest>"

    def line_of(self, path: Path) -> int:
        """Line of the value at ``path``, or of its nearest enclosing value."""
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: Path, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), one_line(message))


class YamlError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.1's implicit types, plus floats written without a dot (1e3, 1e-9).

    YAML 1.1 reads `1e3` as the text "1e3" (a float needs a dot and a signed exponent:
    1.0e+3); JSON and YAML 1.2 read a number, and so does everyone writing `shots: 1e3` or a
    sweep step of 1e-9. Reading text there only led to "expected a number, got a string".
    """


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


class _Refused(Exception):
    """A document too big or too deep to compose, at this line."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _CountingComposer(yaml.composer.Composer):
    """PyYAML's composer, stopped after MAX_NODES values: a 4 MB list of numbers would
    otherwise be composed whole (seconds) before the builder counts anything."""

    def __init__(self):
        yaml.composer.Composer.__init__(self)
        self.nodes_composed = 0

    def compose_node(self, parent, index):
        self.nodes_composed += 1
        if self.nodes_composed > MAX_NODES:
            raise _Refused(self.peek_event().start_mark.line + 1,
                           f"more than {MAX_NODES} values; refused (a long sweep is better "
                           "written as linspace or range)")
        try:
            return super().compose_node(parent, index)
        except RecursionError:  # it recurses once per nesting level
            raise _Refused(self.peek_event().start_mark.line + 1, "invalid YAML: nested too "
                                                                  f"deeply (at most {MAX_DEPTH} "
                                                                  "levels)") from None


class _PyLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                _CountingComposer, _Resolver):
    """Pure-Python parsing: slow, but messages that name the offending character."""

    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _CountingComposer.__init__(self)
        _Resolver.__init__(self)


try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None

if CParser is not None:
    class _FastLoader(_CountingComposer, _Resolver, CParser):
        """libyaml's parser (5 times faster) under PyYAML's composer.

        Not libyaml's composer: it recurses in C once per nesting level, and a few thousand
        `[` crash the interpreter (segmentation fault) where Python raises RecursionError.
        """

        def __init__(self, stream):
            CParser.__init__(self, stream)
            _CountingComposer.__init__(self)
            _Resolver.__init__(self)
else:  # pragma: no cover
    _FastLoader = _PyLoader  # type: ignore[misc]  # one name for either loader


def _compose(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_FastLoader)
    except (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.reader.ReaderError) as exc:
        if _FastLoader is _PyLoader or _offset(exc) > REPARSE_CHARS:
            raise
    return yaml.compose(text, Loader=_PyLoader)  # raises the same error, in PyYAML's words


def _offset(exc: yaml.YAMLError) -> int:
    """How far into the text the parser got before ``exc``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.index if mark else getattr(exc, "position", 0)


def load(text: str, file: str) -> Located:
    """Parse one YAML document; raise :class:`YamlError` with a located message."""
    try:
        node = _compose(text)
    except _Refused as exc:
        raise YamlError(Problem(file, exc.line, "", exc.message)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(Problem(file, line, "", f"invalid YAML: {_syntax_message(exc, text)}")
                        ) from None
    except yaml.reader.ReaderError as exc:  # a control character: its str() has no line
        raise YamlError(_reader_problem(exc, text, file)) from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())  # one problem, one line
        raise YamlError(Problem(file, 1, "", f"invalid YAML: {message}")) from None
    except RecursionError:  # the scanner or parser, should one ever recurse
        raise YamlError(Problem(file, 1, "", "invalid YAML: nested too deeply "
                                             f"(at most {MAX_DEPTH} levels)")) from None
    located = Located(data=None, file=file)
    if node is None:
        located.data = None
        return located
    builder = _Builder(located)
    located.data = builder.build(node, ())
    return located


def _reader_problem(exc: yaml.reader.ReaderError, text: str, file: str) -> Problem:
    if isinstance(exc.character, int):  # PyYAML: the character, at a character offset
        line = text.count("\n", 0, exc.position) + 1
        return Problem(file, line, "", f"invalid YAML: unprintable character "
                                       f"U+{exc.character:04X} is not allowed")
    # libyaml (only in a text too long to parse again): its reason, at a byte offset.
    line = text.encode("utf-8", "surrogatepass").count(b"\n", 0, exc.position) + 1
    return Problem(file, line, "", f"invalid YAML: {one_line(exc.reason)}")


def _syntax_message(exc: yaml.MarkedYAMLError, text: str) -> str:
    """PyYAML's problem, with its context when that helps find the mistake."""
    long_key = _long_key(exc, text)
    if long_key:
        return f"a key may be at most {MAX_KEY_CHARS} characters long; this one has {long_key}"
    problem = one_line(exc.problem or " ".join(str(exc).split()))
    if exc.context and problem.startswith("but "):  # one sentence split in two halves
        return f"{exc.context}, {problem}"
    mark, context_mark = exc.problem_mark, exc.context_mark
    if exc.context and context_mark and (mark is None or context_mark.line != mark.line):
        # e.g. an unclosed '{': the problem shows where parsing failed, the context where
        # the '{' was opened, which is where the fix goes.
        return f"{problem} ({exc.context} on line {context_mark.line + 1})"
    return problem


def _long_key(exc: yaml.MarkedYAMLError, text: str) -> int:
    """The length of the key before the colon that ``exc`` complains about, if too long."""
    mark = exc.problem_mark
    if mark is None or not (exc.problem or "").startswith(_LONG_KEY_SYMPTOMS):
        return 0
    lines = re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)
    before = lines[mark.line][:mark.column] if mark.line < len(lines) else ""
    key = before.lstrip(" -?")
    if len(key) <= MAX_KEY_CHARS or ": " in key:  # too long, not a second colon
        return 0
    return len(key.strip())


_KEY_TYPES = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}


def _short_tag(tag: str) -> str:
    """'tag:yaml.org,2002:int' -> '!!int', as it is written in YAML."""
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


class _Builder:
    def __init__(self, located: Located):
        self.located = located
        self.nodes_seen = 0
        self.text_seen = 0  # characters of scalars, aliases expanded
        self.open_nodes: set = set()  # ids of the collections being built (ancestors)
        self.merged: dict = {}  # id of a mapping node -> its pairs with merge keys resolved
        self.constructor = yaml.SafeLoader("")  # only used to convert scalars

    def fail(self, node: yaml.Node, path: Path, message: str, line: int | None = None
             ) -> YamlError:
        line = line or node.start_mark.line + 1
        return YamlError(Problem(self.located.file, line, format_path(path), one_line(message)))

    def key_line(self, path: Path) -> int:
        """Line of the innermost key on ``path``.

        Reached through an alias, a node's own line is where its anchor is, possibly far from
        the alias that made the value too big or recursive.
        """
        while path and not isinstance(path[-1], str):
            path = path[:-1]
        return self.located.line_of(path)

    def build(self, node: yaml.Node, path: Path):
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES:
            raise self.fail(node, path, f"document expands to more than {MAX_NODES} values "
                                        "(alias bomb?); refused", self.key_line(path))
        if len(path) > MAX_DEPTH:
            raise self.fail(node, path, f"nested more than {MAX_DEPTH} levels deep; refused",
                            self.key_line(path))
        self.located.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag not in PLAIN_COLLECTION_TAGS:
            raise self.fail(node, path, f"invalid value: {_short_tag(node.tag)} values are not "
                                        "allowed; use a plain list or mapping")
        # An alias inside the collection it names (`&a [*a]`) would expand forever.
        if id(node) in self.open_nodes:
            raise self.fail(node, path, "an alias refers to a value that contains it; refused",
                            self.key_line(path))
        self.open_nodes.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        finally:
            self.open_nodes.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Path):
        self.text_seen += len(node.value)
        if self.text_seen > MAX_TEXT:
            raise self.fail(node, path, f"document expands to more than {MAX_TEXT:,} characters "
                                        "of text (alias bomb?); refused", self.key_line(path))
        if node.tag in TEXT_TAGS:
            return node.value
        if node.tag not in self.constructor.yaml_constructors:  # `!foo`, `!!python/name:...`
            raise self.fail(node, path, f"invalid value: {_short_tag(node.tag)} values are not "
                                        "allowed; use a string, number, boolean or null")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise self.fail(node, path, f"invalid value: {exc.problem}") from None
        except Exception:
            # On text contradicting an explicit tag (`!!int abc`, `!!int ''`, `!!bool maybe`)
            # PyYAML's scalar constructors raise whatever int(), indexing or a dict lookup
            # raise, unwrapped; the one scalar is all that can be wrong here.
            raise self.fail(node, path, f"invalid value: {node.value!r} is not a valid "
                                        f"{_short_tag(node.tag)}") from None
        if not isinstance(value, JSON_SCALARS):  # e.g. bytes from !!binary
            raise self.fail(node, path, f"invalid value: {_short_tag(node.tag)} values are not "
                                        "allowed; use a string, number, boolean or null")
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        self._refuse_duplicate_keys(node, path)
        result: dict = {}
        for key_node, value_node in self._pairs(node, path):
            key = self._key(key_node, path)
            # The key's line, set before building the value so that key_line() can use it.
            self.located.lines[path + (key,)] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, path + (key,))
        return result

    def _pairs(self, node: yaml.MappingNode, path: Path) -> list:
        """The mapping's (key, value) nodes with `<<: *anchor` merge keys resolved.

        Its own keys win, then the merged mappings in the order listed, as PyYAML does; but
        each key is kept once and each mapping resolved once. PyYAML's flatten_mapping copies
        every merged pair, so mappings merging mappings that merge mappings grow
        exponentially before the MAX_NODES count in ``build`` sees a single value.
        """
        if id(node) in self.merged:
            return self.merged[id(node)]
        self.merged[id(node)] = []  # a mapping merged into itself adds nothing
        own, inherited = [], []
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                own.append((key_node, value_node))
                continue
            is_list = isinstance(value_node, yaml.SequenceNode)
            sources = value_node.value if is_list else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.fail(source, path, "invalid merge: `<<` takes a mapping or a list "
                                                  "of mappings")
                # Written inline under `<<`, this mapping is built nowhere else: check it here.
                self._refuse_duplicate_keys(source, path)
                inherited.extend(self._pairs(source, path))
        pairs, seen = [], set()
        for key_node, value_node in own + inherited:
            identity = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) \
                else id(key_node)
            if identity not in seen:
                seen.add(identity)
                pairs.append((key_node, value_node))
        self.merged[id(node)] = pairs
        return pairs

    def _key(self, key_node: yaml.Node, path: Path) -> str:
        if not isinstance(key_node, yaml.ScalarNode):
            shown = {"mapping": "a mapping", "sequence": "a list"}.get(key_node.id, key_node.id)
            raise self.fail(key_node, path, f"keys must be strings, not {shown}")
        key = self._scalar(key_node, path)
        if not isinstance(key, str):
            # `yes:`, `on:`, `1e3:` or `null:` are not text to YAML; say so, and how to fix it.
            raise self.fail(key_node, path, f"keys must be strings; YAML reads "
                                            f"{key_node.value!r} as {_KEY_TYPES.get(type(key), 'no text')}: "
                                            "quote it to mean the text")
        return key

    def _refuse_duplicate_keys(self, node: yaml.MappingNode, path: Path) -> None:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self._key(key_node, path)
            if key in seen:
                raise self.fail(key_node, path + (key,), "duplicate key")
            seen.add(key)
