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

# A manifest with more values than this after expanding aliases is refused: real
# manifests have hundreds, an alias bomb has billions.
MAX_NODES = 200_000
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


def load(text: str, file: str) -> Located:
    """Parse one YAML document; raise :class:`YamlError` with a located message."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(Problem(file, line, "", f"invalid YAML: {_syntax_message(exc)}")) from None
    except yaml.reader.ReaderError as exc:  # a control character: its str() has no line
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError(Problem(file, line, "", f"invalid YAML: unprintable character "
                                                f"U+{exc.character:04X} is not allowed")) from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())  # one problem, one line
        raise YamlError(Problem(file, 1, "", f"invalid YAML: {message}")) from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise YamlError(Problem(file, 1, "", "invalid YAML: nested too deeply "
                                             f"(at most {MAX_DEPTH} levels)")) from None
    located = Located(data=None, file=file)
    if node is None:
        located.data = None
        return located
    builder = _Builder(located)
    located.data = builder.build(node, ())
    return located


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context when that helps find the mistake."""
    problem = one_line(exc.problem or " ".join(str(exc).split()))
    if exc.context and problem.startswith("but "):  # one sentence split in two halves
        return f"{exc.context}, {problem}"
    mark, context_mark = exc.problem_mark, exc.context_mark
    if exc.context and context_mark and (mark is None or context_mark.line != mark.line):
        # e.g. an unclosed '{': the problem shows where parsing failed, the context where
        # the '{' was opened, which is where the fix goes.
        return f"{problem} ({exc.context} on line {context_mark.line + 1})"
    return problem


def _short_tag(tag: str) -> str:
    """'tag:yaml.org,2002:int' -> '!!int', as it is written in YAML."""
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag


class _Builder:
    def __init__(self, located: Located):
        self.located = located
        self.nodes_seen = 0
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
        if node.tag in TEXT_TAGS:
            return node.value
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
        key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            shown = repr(key_node.value) if isinstance(key_node, yaml.ScalarNode) else \
                {"mapping": "a mapping", "sequence": "a list"}.get(key_node.id, key_node.id)
            raise self.fail(key_node, path, f"keys must be strings, not {shown}")
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
