"""Task spec strings: ``NAME[:key=value[,key=value...]]``.

A spec names a task and its options in one string, so launchers, configs and logs can
carry tasks around as plain text::

    mnist
    mnist:crop=20,size=10
    mnist:crop=20,size=10,classes=5-9
    mnist:classes=1,3,7            # a value may itself contain commas
    fashion_mnist:size=14,split=train[:50%]
    toy.xor
    toy.circles:seed=3

Parsing rule: the name is everything before the first ``:``; the rest is split on ``,``
and every piece that is not of the form ``key=...`` continues the previous value (so
``classes=1,3,7`` is one option). Which keys a task accepts is decided by the task
(see :mod:`blur_tf.tasks.images` and :mod:`blur_tf.tasks.toy`); this module only parses.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A parsed spec: a task name and its options (``key -> raw string value``)."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def option_dict(self) -> dict[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options)


def parse_spec(spec: str) -> TaskSpec:
    """Parses ``NAME[:key=value,...]`` into a :class:`TaskSpec` (options keep their order).

    Raises:
      ValueError: empty name, a piece before the first ``key=``, or a repeated key.
    """
    if not isinstance(spec, str):
        raise ValueError(f"A task spec must be a string, got {type(spec).__name__}: {spec!r}")
    text = spec.strip()
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"Task spec {spec!r} has an empty task name.")
    options: list[list[str]] = []
    if sep and rest.strip():
        for piece in rest.split(","):
            match = _KEY_RE.match(piece.strip())
            if match:
                key = match.group(1)
                if any(k == key for k, _ in options):
                    raise ValueError(f"Task spec {spec!r} sets option {key!r} twice.")
                options.append([key, match.group(2).strip()])
            elif options:
                options[-1][1] += "," + piece.strip()
            else:
                raise ValueError(
                    f"Task spec {spec!r}: expected 'key=value' after ':', got {piece!r}."
                )
    elif sep:
        raise ValueError(f"Task spec {spec!r} ends with ':' but gives no options.")
    return TaskSpec(name, tuple((k, v) for k, v in options))


def check_keys(spec: TaskSpec, allowed: Iterable[str]) -> None:
    """Raises ValueError if ``spec`` uses an option that is not in ``allowed``."""
    allowed = tuple(allowed)
    unknown = [k for k, _ in spec.options if k not in allowed]
    if unknown:
        listed = ", ".join(allowed) if allowed else "(none)"
        raise ValueError(
            f"Task spec {str(spec)!r}: unknown option(s) {', '.join(unknown)}; "
            f"task {spec.name!r} accepts: {listed}."
        )


def parse_int(spec: TaskSpec, key: str, value: str, minimum: int = 1) -> int:
    """Parses an integer option value, at least ``minimum``."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(
            f"Task spec {str(spec)!r}: option {key}={value!r} is not an integer."
        ) from None
    if number < minimum:
        raise ValueError(f"Task spec {str(spec)!r}: option {key}={number} must be >= {minimum}.")
    return number


def parse_classes(value: str) -> tuple[int, ...]:
    """Parses a class subset: ``"0-4"``, ``"1,3,7"`` or a mix (``"0-2,7"``).

    Returns the sorted, de-duplicated class ids. Raises ValueError for an empty or malformed
    subset (``""``, ``"4-2"``, ``"a"``).
    """
    classes: set[int] = set()
    text = value.strip()
    if not text:
        raise ValueError("Empty class subset 'classes=': give e.g. classes=0-4 or classes=1,3,7.")
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ValueError(f"Empty class range {part!r} in classes={value!r}.")
            classes.update(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            classes.add(int(part))
        else:
            raise ValueError(
                f"Malformed class subset classes={value!r}: {part!r} is neither an id nor a "
                "range like 0-4."
            )
    return tuple(sorted(classes))
