"""Typed reading of a model's `config.json`: every field's type and range checked in one place.

A config is JSON written by hand or by other tools, so any field can hold anything: a list
for `model_type`, a string for `rope_theta`, a negative layer count, a pad id past the
vocabulary. Every reader of a config — `expc check`'s model shape (`model_shape.py`) and
each architecture's `ModelConfig` (`expc.models`) — goes through `ConfigFields`, whose
readers return a value of the promised type and range or raise a diagnostic at the
config file, on the line of the key when the file can be read, naming the key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from expc.spec.diagnostics import DiagnosticError, Span, fail
from expc.spec.vocabulary import INT_MAX

REQUIRED: Any = object()  # the default of a field the config must hold
CODE = "model-config"
_ID_LIMIT = 2**31  # token ids are int32 in the data
_TEXT_LIMIT = 1 << 20  # bytes of the config read to find a key's line (configs are ~2 kB)


@attrs.frozen(kw_only=True)
class ConfigFields:
    """The fields of one config object (`prefix` names a nested one, e.g. `rope_scaling.`)."""

    raw: Mapping[str, Any]
    source: str  # the config.json path, or `builtin:NAME`, that diagnostics point at
    prefix: str = ""
    # Our (Llama) field name -> the one this config spells it with (GPT-2's `n_embd`):
    # reading `hidden_size` reads, and reports at, `n_embd`.
    aliases: Mapping[str, str] = attrs.field(factory=dict)

    def where(self, key: str) -> Span:
        """The line of `key` in the config file (line 1 when it cannot be found)."""
        return Span(path=self.source, line=_line_of(self.source, self.aliases.get(key, key)))

    def fail(self, key: str, message: str, *, code: str = CODE,
             help: Iterable[str] = ()) -> DiagnosticError:
        """A diagnostic about `key`, at its line in the config file."""
        return fail(self.where(key), message, code=code, help=help)

    def _get(self, key: str, default: Any) -> Any:
        value = self.raw.get(self.aliases.get(key, key))
        if value is not None:
            return value
        if default is REQUIRED:
            raise self.fail(key, f"config is missing `{self.prefix}{self.aliases.get(key, key)}`")
        return default

    def _wrong(self, key: str, expected: str, value: Any) -> DiagnosticError:
        name = self.aliases.get(key, key)
        return self.fail(key, f"`{self.prefix}{name}` must be {expected}, found {describe(value)}")

    def integer(self, key: str, *, default: Any = REQUIRED, minimum: int = 1,
                maximum: int = INT_MAX) -> int:
        """An integer in `[minimum, maximum]` (JSON `true` is no integer)."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, _int_range(minimum, maximum), value)
        if not minimum <= value <= maximum:
            raise self._wrong(key, _int_range(minimum, maximum), value)
        return value

    def optional_integer(self, key: str, *, default: int | None, minimum: int = 1) -> int | None:
        """Like `integer`, but an explicit `null` means None (Mistral's `sliding_window`)."""
        if key in self.raw and self.raw[key] is None:
            return None
        return self.integer(key, default=default, minimum=minimum) if key in self.raw else default

    def number(self, key: str, *, default: Any = REQUIRED, minimum: float = 0.0) -> float:
        """A finite number greater than `minimum` (an integer is a number too)."""
        value = self._get(key, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not value > minimum):
            raise self._wrong(key, f"a finite number greater than {minimum:g}", value)
        return float(value)

    def optional_number(self, key: str, *, default: float | None) -> float | None:
        """Like `number`, but an explicit `null` means None (Gemma 2's soft-capping)."""
        if key in self.raw and self.raw[key] is None:
            return None
        return self.number(key, default=default) if key in self.raw else default

    def flag(self, key: str, *, default: bool = False) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._wrong(key, "`true` or `false`", value)
        return value

    def word(self, key: str, *, default: Any = REQUIRED) -> Any:
        """A non-empty string (or the default, which may be None)."""
        if self.raw.get(key) is None:
            return self._get(key, default)
        value = self.raw[key]
        if not isinstance(value, str) or not value:
            raise self._wrong(key, "a non-empty string", value)
        return value

    def words(self, key: str) -> tuple[str, ...]:
        """A list of strings; `()` when absent."""
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(key, "a list of strings", value)
        return tuple(value)

    def token_id(self, key: str, *, vocab_size: int | None = None) -> int | None:
        """A special token id, or None; with `vocab_size`, one inside the vocabulary (the
        pad id is fed to the embedding). Some configs list several (`eos_token_id: [1, 2]`);
        the first is the canonical one."""
        value = self.raw.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            return None
        top = _ID_LIMIT if vocab_size is None else vocab_size
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
            within = "" if vocab_size is None else " (the vocabulary)"
            raise self._wrong(key, f"a token id in 0..{top - 1}{within}", value)
        return value

    def section(self, key: str) -> ConfigFields | None:
        """A nested object (`rope_scaling`), or None when absent."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(key, "an object", value)
        return attrs.evolve(self, raw=value, prefix=f"{self.prefix}{key}.")


def describe(value: Any) -> str:
    """A JSON value as a message shows it: its type, and the value when short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (int, float)):
        text = json.dumps(value) if math.isfinite(value) else str(value)
        return f"the number {text[:40]}"
    if isinstance(value, str):
        return f'the string "{value[:40]}"'
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object"


def _int_range(minimum: int, maximum: int) -> str:
    if maximum == INT_MAX:
        return "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return f"an integer in {minimum}..{maximum}"


def _line_of(source: str, key: str) -> int:
    """The 1-based line of `"key":` in the config file; 1 when it cannot be found."""
    try:
        with open(source, encoding="utf-8", errors="replace") as handle:
            text = handle.read(_TEXT_LIMIT)
    except (OSError, ValueError):  # a built-in model's name, a NUL byte
        return 1
    found = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    return 1 if found is None else text.count("\n", 0, found.start()) + 1
