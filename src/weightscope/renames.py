"""Renaming tensors on the way out of ``convert``: a prefix stripped, rules, and a key map.

``--names`` takes names to a framework's convention (``cnn/conv1/kernel`` → ``cnn.conv1.weight``);
what a model's own code calls them is the user's to say, in three ways applied after it, in
this order:

- ``strip_prefix``: a prefix removed from the names that start with it (Keras's model name,
  ``cnn.``; ``model.`` of a wrapped module);
- ``rules``, each ``FROM=TO``, applied in turn, each to what the one before gave, renaming a name
  it matches whole: a glob whose ``*`` match any run of characters, given back in order by the
  ``*`` of ``TO`` (``layer1.*=0.*``), or ``re:PATTERN=REPLACEMENT``, a Python regular expression
  and its replacement (``\\1``, ``\\g<name>``). ``FROM=TO`` splits at the last ``=``, as names
  hold none and a pattern may (``(?=``);
- ``key_map``: exact names to new names, from a JSON object (``--key-map FILE.json``).

A key-map file is hostile input like any other: at most ``MAX_KEY_MAP_BYTES``, UTF-8 JSON of one
object whose keys and values are non-empty strings, no key given twice, no two keys given the
same new name; anything else is a ``UsageError`` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightscope.errors import UsageError

MAX_KEY_MAP_BYTES = 16 << 20  # some 150,000 pairs of 50-character names: more than any model has tensors
REGEX_PREFIX = "re:"


@dataclass(frozen=True)
class Rule:
    """One ``FROM=TO``: the compiled pattern of ``FROM`` (a glob's or a regex's), and the replacement template."""

    text: str
    pattern: re.Pattern[str]
    replacement: str

    def apply(self, name: str) -> str:
        match = self.pattern.fullmatch(name)
        if match is None:
            return name
        try:
            return match.expand(self.replacement)
        except (re.error, IndexError) as error:
            raise UsageError(f"--rename {self.text!r}: {error}") from None


def parse_rule(text: str) -> Rule:
    """``FROM=TO`` as a ``Rule``: a glob (``*``: any characters, given back in order by ``TO``'s ``*``), or a
    regular expression after ``re:``."""
    source, equals, target = text.rpartition("=")
    if not equals or not source or source == REGEX_PREFIX:
        raise UsageError(f"--rename takes FROM=TO (a glob, or re:PATTERN), not {text!r}")
    if source.startswith(REGEX_PREFIX):
        try:
            pattern = re.compile(source.removeprefix(REGEX_PREFIX))
        except re.error as error:
            raise UsageError(f"--rename {text!r}: not a regular expression: {error}") from None
        return Rule(text, pattern, target)
    stars = source.count("*")
    if target.count("*") > stars:
        raise UsageError(f"--rename {text!r}: TO has more '*' than FROM has to give")
    pattern = re.compile("(.*)".join(re.escape(part) for part in source.split("*")), re.DOTALL)
    pieces = target.split("*")
    replacement = "".join(
        piece.replace("\\", "\\\\") + (f"\\g<{number + 1}>" if number < len(pieces) - 1 else "")
        for number, piece in enumerate(pieces)
    )
    return Rule(text, pattern, replacement)


def _pairs_without_duplicates(path: str, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise UsageError(f"{path}: key map gives {key!r} twice")
        mapping[key] = value
    return mapping


def load_key_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """The JSON object of old name → new name in ``path``; a ``UsageError`` for anything but such an object of
    non-empty strings, at most ``MAX_KEY_MAP_BYTES``, with no key twice and no new name twice."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_KEY_MAP_BYTES + 1)
    except OSError as error:
        raise UsageError(f"{where}: cannot read the key map: {error.strerror or error}") from None
    if len(data) > MAX_KEY_MAP_BYTES:
        raise UsageError(f"{where}: a key map of over {MAX_KEY_MAP_BYTES >> 20} MiB; refused")
    try:
        text = data.decode("utf-8")
        mapping = json.loads(text, object_pairs_hook=lambda pairs: _pairs_without_duplicates(where, pairs))
    except UnicodeDecodeError as error:
        raise UsageError(f"{where}: a key map is UTF-8 JSON; byte {error.start} is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{where}: not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deep for a key map (an object of names)") from None
    if not isinstance(mapping, dict):
        raise UsageError(f"{where}: a key map is a JSON object of old name to new name, not {type(mapping).__name__}")
    check_key_map(mapping, where)
    return mapping


def check_key_map(mapping: Mapping[Any, Any], where: str = "key map") -> None:
    """Refuse a key map that is not strings to non-empty strings, or gives two names the same new name."""
    given: dict[str, str] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"{where}: names are strings; {key!r}: {value!r} is not a pair of them")
        if not key or not value:
            raise UsageError(f"{where}: an empty name in {key!r}: {value!r}")
        if value in given:
            raise UsageError(f"{where}: {given[value]!r} and {key!r} would both be named {value!r}")
        given[value] = key


@dataclass(frozen=True)
class Renames:
    """What the user asked names to become after ``--names``: a prefix stripped, rules, a key map."""

    strip_prefix: str = ""
    rules: tuple[Rule, ...] = ()
    key_map: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, strip_prefix: str | None = None, rename: Iterable[str] = (), key_map: Mapping[str, str] | None = None
    ) -> Renames:
        mapping = dict(key_map or {})
        check_key_map(mapping)
        return cls(strip_prefix or "", tuple(parse_rule(text) for text in rename), mapping)

    def __bool__(self) -> bool:
        return bool(self.strip_prefix or self.rules or self.key_map)

    def rewritten(self, name: str) -> str:
        """``name`` with the prefix stripped and the rules applied: what the key map is looked up by."""
        name = name.removeprefix(self.strip_prefix)
        for rule in self.rules:
            name = rule.apply(name)
        return name

    def apply(self, name: str) -> str:
        rewritten = self.rewritten(name)
        new_name = self.key_map.get(rewritten, rewritten)
        if not new_name:
            raise UsageError(f"'{name}' would be renamed to an empty name")
        return new_name

    def unused(self, names: Iterable[str]) -> list[str]:
        """The key map's names that none of ``names`` comes to before the key map is applied."""
        seen = {self.rewritten(name) for name in names}
        return [name for name in self.key_map if name not in seen]
