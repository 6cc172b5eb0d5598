"""Safe YAML loading that remembers the line of every key, so errors can point at it.

PyYAML's safe loader forgets where values came from; we walk its node tree ourselves,
building plain Python values and a map from key path (a tuple of keys and indices) to
line number. The walk also refuses what a plain load would silently accept: duplicate
keys, non-string keys, and alias bombs ("billion laughs") that expand to huge documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from .errors import Problem

# A manifest with more values than this after expanding aliases is refused: real
# manifests have hundreds, an alias bomb has billions.
MAX_NODES = 200_000

Path = tuple  # of str (mapping keys) and int (sequence indices)


def format_path(path: Path) -> str:
    """('spec', 'circuits', 2, 'name') -> 'spec.circuits[2].name'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


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
        return Problem(self.file, self.line_of(path), format_path(path), message)


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
        raise YamlError(Problem(file, line, "", f"invalid YAML: {exc.problem or exc}")) from None
    except yaml.YAMLError as exc:  # e.g. several documents in one file
        raise YamlError(Problem(file, 1, "", f"invalid YAML: {exc}")) from None
    located = Located(data=None, file=file)
    if node is None:
        located.data = None
        return located
    builder = _Builder(located)
    located.data = builder.build(node, ())
    return located


class _Builder:
    def __init__(self, located: Located):
        self.located = located
        self.nodes_seen = 0
        self.constructor = yaml.SafeLoader("")  # only used to convert scalars

    def build(self, node: yaml.Node, path: Path):
        self.nodes_seen += 1
        if self.nodes_seen > MAX_NODES:
            raise YamlError(Problem(self.located.file, node.start_mark.line + 1, format_path(path),
                                    f"document expands to more than {MAX_NODES} values "
                                    "(alias bomb?); refused"))
        self.located.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path):
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlError(Problem(self.located.file, node.start_mark.line + 1, format_path(path),
                                    f"invalid value: {exc.problem}")) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        self._refuse_duplicate_keys(node, path)
        try:
            # Resolves `<<: *anchor` merge keys; the mapping's own keys come last and win.
            self.constructor.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            raise YamlError(Problem(self.located.file, node.start_mark.line + 1, format_path(path),
                                    f"invalid merge: {exc.problem}")) from None
        result: dict = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            result[key] = self.build(value_node, path + (key,))
            self.located.lines[path + (key,)] = key_node.start_mark.line + 1
        return result

    def _key(self, key_node: yaml.Node, path: Path) -> str:
        key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            raise YamlError(Problem(self.located.file, key_node.start_mark.line + 1,
                                    format_path(path),
                                    f"keys must be strings, not {getattr(key_node, 'value', '?')!r}"))
        return key

    def _refuse_duplicate_keys(self, node: yaml.MappingNode, path: Path) -> None:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node, path)
            if key in seen:
                raise YamlError(Problem(self.located.file, key_node.start_mark.line + 1,
                                        format_path(path + (key,)), "duplicate key"))
            seen.add(key)
