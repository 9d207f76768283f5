"""Configuration from one source: the `Rule` dataclass's fields give its flags and overrides.

* `rule_parsers()`: one text parser per `Rule` field, typed by the field's default (bool:
  true/false/1/0; int; str, with 'none' → None where the default is None). Both the rule
  flags of the training launchers (`define_rule_flags`) and the `--rule key=value,…`
  overrides of evaluate / export (`parse_rule_overrides`) use them, so a new `Rule` field
  is a new flag and a new override key with no other change.
* `FlagGroup`: flags defined together; its `names` are derived from the definitions (e.g.
  the flags a resumed run may change), never kept by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from absl import flags

from blur_tf.rule import Rule


def _parse_bool(text: str) -> bool:
    if text.strip().lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.strip().lower() in ("true", "1")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_text(text: str) -> str | None:
    return None if text.strip().lower() in ("none", "") else text.strip()


def rule_parsers() -> dict[str, Callable[[str], object]]:
    """{Rule field: parser of its text value}, typed by the field's default."""
    parsers = {}
    for field in dataclasses.fields(Rule):
        default = field.default
        parsers[field.name] = (
            _parse_bool
            if isinstance(default, bool)
            else _parse_int
            if isinstance(default, int)
            else _parse_text
        )
    return parsers


def parse_rule_overrides(text: str | None) -> dict:
    """'key=value,…' → typed Rule fields, e.g. 'activation=relu,symmetric=true,num_states=4'.

    ValueError naming the problem for unknown keys or bad values.
    """
    if not text or not text.strip():
        return {}
    parsers = rule_parsers()
    overrides = {}
    for piece in text.split(","):
        key, sep, value = piece.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in parsers:
            raise ValueError(
                f"rule override {piece!r}: expected key=value with key one of {sorted(parsers)}"
            )
        try:
            overrides[key] = parsers[key](value)
        except ValueError as e:
            raise ValueError(f"rule override {key}={value!r}: {e}") from None
    return overrides


class FlagGroup:
    """Flags defined together on one `FlagValues`; `names` lists them in definition order.

    run = FlagGroup(flags.FLAGS, __name__)
    run.define(flags.DEFINE_integer, "log_every", 20, "Log every N steps.", lower_bound=0)
    """

    def __init__(self, fv: flags.FlagValues, module_name: str | None = None):
        self.fv, self.module_name, self.names = fv, module_name, []

    def define(self, define, name: str, default, help_text: str, **kwargs) -> None:
        """`define(name, default, help_text, …)` on the group's FlagValues (and module)."""
        define(
            name,
            default,
            help=help_text,
            flag_values=self.fv,
            module_name=self.module_name,
            **kwargs,
        )
        self.names.append(name)


def define_rule_flags(group: FlagGroup) -> None:
    """One flag per `Rule` field, with the field's default (bools as --[no]name)."""
    defines = {
        _parse_bool: flags.DEFINE_bool,
        _parse_int: flags.DEFINE_integer,
        _parse_text: flags.DEFINE_string,
    }
    for field in dataclasses.fields(Rule):
        parser = rule_parsers()[field.name]
        extra = {"lower_bound": 2} if field.name == "num_states" else {}
        group.define(
            defines[parser],
            field.name,
            field.default,
            f"Rule.{field.name} (blur_tf/rule.py).",
            **extra,
        )


def rule_from_values(values: dict) -> Rule:
    """The `Rule` of the rule flags in `values` (an empty string is None); ValueError if bad."""
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(Rule)}
    kwargs = {k: (None if v == "" else v) for k, v in kwargs.items()}
    return Rule(**kwargs)
