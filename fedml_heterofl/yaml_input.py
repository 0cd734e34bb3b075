"""Reading a user's YAML with bounds: run configs, grid files and their bases, ``--set`` values, the GPU
mapping file and the ``config.yaml`` of run folders.

PyYAML's ``safe_load`` runs no code, but it expands aliases: a 1 KB file of nested anchors becomes
gigabytes (an "alias bomb"), and a repeated key silently keeps the last value. :func:`read_yaml` and
:func:`parse_yaml` refuse, each with one line:

* a file larger than :data:`MAX_YAML_BYTES` (checked before it is read);
* any anchor or alias (``&name``, ``*name``, ``<<: *name``): a config never needs one, and refusing
  them is what keeps the parse linear in the file's size;
* a mapping that repeats a key (the line names the key and where it repeats).

Nothing here knows about settings: errors are :class:`YamlInputError` (a ``ValueError``), which the
callers turn into their own one-line errors.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Hashable, Union

import yaml

#: the largest YAML file read (the shipped configs are under 4 KB, the largest grid file under 8 KB)
MAX_YAML_BYTES = 1 << 20


class YamlInputError(ValueError):
    """A YAML file or text that is refused (unreadable, too large, not YAML, aliases, duplicate keys)."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases and repeated mapping keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise YamlInputError(f"YAML anchors and aliases (&{event.anchor}, *{event.anchor}) are not allowed "
                                 f"{_where(event.start_mark)}; write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise YamlInputError(f"duplicate key {key!r} {_where(key_node.start_mark)}; each key may "
                                         "appear once in a mapping")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _where(mark: Any) -> str:
    return f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """``text`` parsed as YAML under the bounds of the module doc; :class:`YamlInputError` names ``source``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise YamlInputError(f"{source}: larger than {MAX_YAML_BYTES} bytes, the most a YAML input may hold")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlInputError as exc:
        raise YamlInputError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:  # one line: what is wrong and where
        what = " ".join(filter(None, (exc.context, exc.problem)))
        raise YamlInputError(f"{source}: not valid YAML: {what} {_where(exc.problem_mark)}".rstrip()) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise YamlInputError(f"{source}: nested too deeply to be a configuration") from None


def read_yaml(path: Union[str, os.PathLike], what: str = "configuration") -> Any:
    """The YAML file ``path`` parsed by :func:`parse_yaml` (``None`` when empty); :class:`YamlInputError`
    names the file when it is missing, unreadable, larger than :data:`MAX_YAML_BYTES` or not UTF-8 text.
    ``what`` names the file's role in the messages."""
    try:
        size = os.stat(path).st_size
        if size > MAX_YAML_BYTES:
            raise YamlInputError(f"{path}: {size} bytes; a {what} file may hold at most {MAX_YAML_BYTES} bytes")
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise YamlInputError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise YamlInputError(f"{path}: is a folder, not a {what} file") from None
    except OSError as exc:
        raise YamlInputError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise YamlInputError(f"{path}: not a text file (a {what} file is UTF-8 YAML)") from None
    return parse_yaml(text, str(path))


def number_hint(value: Any) -> str:
    """For text that Python reads as a number: how to write it as a YAML number (PyYAML follows YAML
    1.1, which reads ``1e-3`` as text: ``1.0e-3`` is the number); else ``""``. Appended to messages
    that expected a number."""
    if not isinstance(value, str):
        return ""
    try:
        if not math.isfinite(float(value)):
            return ""
    except ValueError:
        return ""
    exponent = re.fullmatch(r"\s*([-+]?\d+)([eE][-+]?\d+)\s*", value)
    if exponent:
        return f" (YAML reads {value.strip()} as text: write {exponent.group(1)}.0{exponent.group(2)})"
    return f" (a number in quotes is text: write {value.strip()} without quotes)"


class _PlainDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that writes a value referenced twice out twice (no anchor, no alias)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(value: Any) -> str:
    """``value`` as YAML text that :func:`parse_yaml` reads back (``yaml.safe_dump`` would write an
    object referenced twice as an anchor and an alias), keys in their order."""
    return yaml.dump(value, Dumper=_PlainDumper, sort_keys=False)
