"""Genome sources: what `--genome` names, loaded as a `Learner` (genome, rule, configurations).

* `backprop`: `Genome.backprop(lr)` with `Rule.backprop(activation)`; with no fixed lr, the
  lr is swept over the baselines' grid like SGD (each lr one population member, selected per
  horizon), so its curve reproduces SGD with that activation (a fairness check).
* a `genome.json` path: the rule is `metadata.rule` from the file when present (written by
  the meta-trainer), else `Rule(num_states=K)`; explicit overrides (`parse_rule_overrides`,
  from blur_tf.config) are applied on top. Of a genome with population P > 1, one member is
  evaluated (`member`, default 0), or with `member=None` every member as a configuration
  (best per horizon).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from blur_tf import baselines
from blur_tf.config import parse_rule_overrides  # noqa: F401  re-exported: evaluate/export --rule
from blur_tf.genome import Genome
from blur_tf.rule import Rule

BACKPROP = "backprop"


@dataclasses.dataclass(frozen=True)
class Learner:
    """A genome to evaluate: G configurations (population members) sharing one rule.

    Attributes:
      name: 'backprop' or the genome file path.
      genome: Genome with population G.
      rule: the static rule every member runs with.
      configs: G dicts describing each member (e.g. {'learning_rate': 0.1}).
    """

    name: str
    genome: Genome
    rule: Rule
    configs: tuple


def read_genome_file(path: str) -> tuple[Genome, dict | None]:
    """(genome, metadata rule dict or None) from a genome.json; ValueError if malformed."""
    genome, metadata = Genome.load_with_metadata(path)
    rule = metadata.get("rule")
    if rule is not None and not isinstance(rule, dict):
        raise ValueError(f"genome file {path}: metadata.rule must be a dict, got {rule!r}")
    return genome, rule


def load_learner(
    source: str,
    rule_overrides: dict | None = None,
    member: int | None = 0,
    backprop_learning_rates: Sequence[float] = baselines.DEFAULT_LEARNING_RATES,
    backprop_activation: str = "tanh",
) -> Learner:
    """The learner named by `source` ('backprop' or a genome.json path); see module docstring."""
    overrides = dict(rule_overrides or {})
    if source == BACKPROP:
        rates = baselines.check_learning_rates(backprop_learning_rates)
        rule = dataclasses.replace(Rule.backprop(backprop_activation), **overrides)
        genome = Genome.concat([Genome.backprop(lr) for lr in rates])
        configs = tuple({"learning_rate": lr, "activation": backprop_activation} for lr in rates)
        learner = Learner(BACKPROP, genome, rule, configs)
    else:
        genome, rule_dict = read_genome_file(source)
        try:
            base = Rule.from_dict(rule_dict) if rule_dict else Rule(num_states=genome.num_states)
            rule = dataclasses.replace(base, **overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"genome file {source}: bad rule: {e}") from None
        if member is not None:
            if not 0 <= member < genome.population:
                raise ValueError(
                    f"genome member {member} out of range: {source} holds "
                    f"{genome.population} genome(s)"
                )
            members = [member]
        else:
            members = list(range(genome.population))
        genome = genome.take(members)
        learner = Learner(source, genome, rule, tuple({"member": m} for m in members))
    learner.rule.check_genome(learner.genome)
    return learner
