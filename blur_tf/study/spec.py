"""The experiment spec: an INI file of arms and evaluations (parsed and checked, no work done).

    [experiment]
    title = Fig. 8: forward / backward normalization
    figure = fig8_normalization          # OUT/<figure>.png
    correlate = train@10 heldout@10      # optional: Pearson r over the arms, and a scatter
    summarize = omniglot@10              # optional: per arm mean / spreads of an evaluation
    matrix = depth@10                    # optional: arms x panels of one evaluation, a heat map
    bars = mse interference              # optional: arm metrics (flp_train's) as bar charts
    flags = --flagfile=launchers/configs/toy2d.cfg   # shared by every launcher arm
            --meta_steps=300

    [arm both]                           # one sub-folder OUT/arms/both
    launcher = meta_train                # or cma_train: flags as on its command line
    flags = --normalize_forward --normalize_backward

    [arm backprop]
    genome = backprop:0.1                # or random:SEED, or a genome.json path
    rule = symmetric=false               # Rule overrides (k=v,...), as evaluate --rule

    [evaluation mnist]                   # applied to every arm matching `arms` (globs)
    kind = accuracy                      # or asymmetry (blur_tf.study.measures)
    arms = *
    tasks = mnist:split=test

Flag lines are absl flags (`--name=value`, `--noname`, `--flagfile=PATH` expanded in place,
`#` comments). An arm's flags replace the shared flags of the same name (a repeated flag, e.g.
--tasks, is replaced as a whole), so `--tasks` in an arm never appends to a flagfile's.
Every arm runs `python -m launchers.<launcher> FLAGS --out_dir=OUT/arms/<name>`. In flags,
`{arms}` is OUT/arms: `--init_params={arms}/flp2_iid/params.npz` reads another arm's output,
and the arm then starts only after that arm (declared above it) has finished.
"""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import os
import re
import shlex

from blur_tf.rule import Rule
from blur_tf.study.measures import OPTIONS

LAUNCHERS = ("meta_train", "cma_train", "flp_train")
KINDS = tuple(OPTIONS)  # the evaluation kinds of blur_tf.study.measures
_NO_NAMES = tuple(f.name for f in dataclasses.fields(Rule) if f.name.startswith("no"))
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


ARM_REFERENCE = re.compile(r"\{arms\}/([A-Za-z0-9_.-]+)")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: a launcher run (`launcher`, `flags`) or an existing genome (`genome`, `rule`)."""

    name: str
    launcher: str | None = None
    flags: tuple = ()
    genome: str | None = None
    rule: str = ""

    @property
    def needs(self) -> tuple:
        """Arms whose output this arm's flags read (`{arms}/NAME/…`): it starts after them."""
        return tuple(sorted({m for t in self.flags for m in ARM_REFERENCE.findall(t)}))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One evaluation: `kind`, the arm globs it applies to and its options (strings)."""

    name: str
    kind: str
    arms: tuple
    options: tuple  # sorted (key, value) pairs

    def applies_to(self, arm: str) -> bool:
        return any(fnmatch.fnmatchcase(arm, pattern) for pattern in self.arms)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed spec: the table title, the figure's file name, the arms and evaluations."""

    title: str
    figure: str
    arms: tuple
    evaluations: tuple
    correlate: tuple = ()  # (x, y), each '<evaluation>@<T>' (blur_tf.study.runner.correlation)
    summarize: tuple = ()  # '<evaluation>@<T>' columns (blur_tf.study.runner.summarize)
    matrix: str = ""  # '<evaluation>@<T>' (blur_tf.study.runner.matrix)
    bars: tuple = ()  # arm metrics drawn as bar charts (a launcher's own, e.g. flp_train's mse)

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def expand_flags(text: str, where: str, seen: tuple = ()) -> list[str]:
    """absl flag tokens of `text` with --flagfile=PATH expanded in place (module doc)."""
    tokens = []
    for line in text.splitlines():
        for token in shlex.split(line, comments=True):
            if not token.startswith("--"):
                raise ValueError(f"{where}: {token!r} is not a --flag")
            if token.startswith("--flagfile="):
                path = token.split("=", 1)[1]
                if not os.path.isfile(path):
                    raise ValueError(f"{where}: no such flagfile {path}")
                if path in seen:
                    raise ValueError(f"{where}: flagfile {path} includes itself")
                with open(path) as f:
                    tokens += expand_flags(f.read(), path, seen + (path,))
            else:
                tokens.append(token)
    return tokens


def flag_name(token: str) -> str:
    """The flag a token sets: '--tasks=x' → 'tasks', '--nosymmetric' → 'symmetric' (flags whose
    own name begins with 'no', e.g. --normalize_forward, are kept as they are)."""
    name = token[2:].split("=", 1)[0]
    negated = "=" not in token and name.startswith("no") and name not in _NO_NAMES
    return name[2:] if negated else name


def merge_flags(shared: list[str], own: list[str]) -> tuple:
    """`shared` without the flags `own` sets, then `own` (module doc)."""
    names = {flag_name(t) for t in own}
    return tuple([t for t in shared if flag_name(t) not in names] + own)


def _known(section, allowed, where):
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def parse_spec(path: str) -> Spec:
    """The checked Spec of an INI file; ValueError naming the section and key."""
    if not os.path.isfile(path):
        raise ValueError(f"--spec: no such file {path}")
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=("#",), default_section="__none__"
    )
    try:
        parser.read(path)
    except configparser.Error as e:
        raise ValueError(f"{path}: not an INI spec: {e.message.splitlines()[0]}") from None
    if "experiment" not in parser:
        raise ValueError(f"{path}: needs an [experiment] section")
    head = parser["experiment"]
    _known(
        head,
        ("title", "figure", "flags", "correlate", "summarize", "matrix", "bars"),
        f"{path} [experiment]",
    )
    shared = expand_flags(head.get("flags", ""), f"{path} [experiment] flags")
    arms, evaluations = [], []
    for section in parser.sections():
        kind, _, name = section.partition(" ")
        where = f"{path} [{section}]"
        values = parser[section]
        if section == "experiment":
            continue
        if kind not in ("arm", "evaluation") or not _NAME.match(name.strip()):
            raise ValueError(
                f"{where}: sections are [experiment], [arm NAME] and "
                "[evaluation NAME] (NAME: letters, digits, _ . -)"
            )
        name = name.strip()
        if kind == "arm":
            arms.append(_parse_arm(name, values, shared, where))
        else:
            evaluations.append(_parse_evaluation(name, values, where))
    if not arms:
        raise ValueError(f"{path}: no [arm NAME] section")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: arm names repeat: {names}")
    for i, arm in enumerate(arms):
        unknown = [n for n in arm.needs if n not in names[:i]]
        if unknown:
            raise ValueError(
                f"{path} [arm {arm.name}]: flags read {{arms}}/{unknown[0]}, which is not "
                "an arm above this one"
            )
    for evaluation in evaluations:
        if not any(evaluation.applies_to(n) for n in names):
            raise ValueError(
                f"{path} [evaluation {evaluation.name}]: arms={list(evaluation.arms)}"
                f" matches no arm of {names}"
            )
    figure = head.get("figure", os.path.splitext(os.path.basename(path))[0])
    if not _NAME.match(figure):
        raise ValueError(f"{path} [experiment] figure={figure!r}: a file name without folders")
    columns = {
        key: tuple(head.get(key, "").split()) for key in ("correlate", "summarize", "matrix")
    }
    for key, count in (("correlate", 2), ("summarize", None), ("matrix", 1)):
        if columns[key]:
            _check_columns(columns[key], count, evaluations, f"{path} [experiment] {key}")
    return Spec(
        head.get("title", figure),
        figure,
        tuple(arms),
        tuple(evaluations),
        columns["correlate"],
        columns["summarize"],
        " ".join(columns["matrix"]),
        tuple(head.get("bars", "").split()),
    )


def _check_columns(columns: tuple, count: int | None, evaluations, where: str) -> None:
    """Each column is '<evaluation>@<T>' of an accuracy evaluation; `count` of them if given."""
    names = [e.name for e in evaluations if e.kind == "accuracy"]
    if count is not None and len(columns) != count:
        what = "one column" if count == 1 else f"{count} columns"
        raise ValueError(f"{where}: {what} '<evaluation>@<T>', got {list(columns)}")
    for column in columns:
        evaluation, _, horizon = column.rpartition("@")
        if evaluation not in names or not horizon.isdigit():
            raise ValueError(
                f"{where}: {column!r} is not '<evaluation>@<T>' with an accuracy evaluation"
                f" of {names}"
            )


def _parse_arm(name, values, shared, where) -> Arm:
    _known(values, ("launcher", "flags", "genome", "rule"), where)
    if ("launcher" in values) == ("genome" in values):
        raise ValueError(
            f"{where}: give either launcher = {'|'.join(LAUNCHERS)} or genome = "
            "backprop:LR | random:SEED | PATH"
        )
    if "genome" in values:
        if "flags" in values:
            raise ValueError(f"{where}: a genome arm takes no flags (only genome and rule)")
        return Arm(name, genome=values["genome"].strip(), rule=values.get("rule", "").strip())
    if values["launcher"] not in LAUNCHERS:
        raise ValueError(f"{where}: launcher={values['launcher']!r}; one of {LAUNCHERS}")
    if "rule" in values:
        raise ValueError(f"{where}: a launcher arm sets its rule with flags (--activation=…)")
    own = expand_flags(values.get("flags", ""), f"{where} flags")
    flags = merge_flags(shared, own)
    for token in flags:
        if flag_name(token) in ("out_dir", "tfds_manual_dir", "data_dir"):
            raise ValueError(f"{where}: --{flag_name(token)} is set by the experiment runner")
    return Arm(name, launcher=values["launcher"], flags=flags)


def _parse_evaluation(name, values, where) -> Evaluation:
    if values.get("kind") not in KINDS:
        raise ValueError(f"{where}: kind={values.get('kind')!r}; one of {KINDS}")
    arms = tuple(values.get("arms", "*").split())
    options = tuple(sorted((k, v.strip()) for k, v in values.items() if k not in ("kind", "arms")))
    return Evaluation(name, values["kind"], arms, options)
