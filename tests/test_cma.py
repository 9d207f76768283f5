"""CmaTrainer and the cma_train launcher: genome <-> vector mapping, population fitness in one
call, non-finite candidates and flag errors (the trainer contract:
tests/test_trainer_contract.py)."""

import numpy as np
import pytest

from blur_tf import CmaTrainer, Genome, Rule
from blur_tf.meta import (
    GenomeVector,
    InnerProblem,
    PopulationFitness,
    Validator,
    cma_trainer,
    parse_schedule,
    rule_fields,
)
from blur_tf.tasks import get_task
from tests.test_meta import launch

HIDDEN = [8]


def _problem(rule=None):
    return InnerProblem(
        [get_task("toy.and"), get_task("toy.xor")],
        HIDDEN,
        rule or Rule(),
        batch_size=16,
        eval_batch_size=32,
    )


def _trainer(tmp_path=None, population=4, validation=True, **kwargs):
    rule = Rule()
    validator = (
        Validator([get_task("toy.nxor")], HIDDEN, rule, batch_size=16, networks=2, eval_examples=64)
        if validation
        else None
    )
    dirs = {}
    if tmp_path is not None:
        dirs = dict(checkpoint_dir=str(tmp_path / "ckpt"), summary_dir=str(tmp_path / "tb"))
    options = dict(
        sigma0=0.2,
        seed=1,
        networks=2,
        eval_batches=2,
        validator=validator,
        validate_every=2,
        checkpoint_every=0,
        log_every=0,
    )
    options.update(kwargs)
    return CmaTrainer(
        _problem(rule), parse_schedule("constant:4"), population=population, **dirs, **options
    )


# ------------------------------------------------------------------------------ mapping
def test_genome_vector_round_trips_with_a_fixed_documented_layout():
    base = Genome.random(3, seed=2)
    mapping = GenomeVector(base, Genome._fields)
    assert mapping.size == 4 * 9 + 4 + 2 * 3 + 2  # 4 K×K, 6 gates/scalars, 2 per-state
    genomes = Genome.random(3, seed=5, population=4)
    vectors = mapping.encode(genomes)
    assert vectors.shape == (4, mapping.size) and vectors.dtype == np.float64
    # The first entries are ν row-major, as the module docstring says.
    np.testing.assert_array_equal(vectors[:, :9], genomes.numpy().forward_transform.reshape(4, 9))
    decoded = mapping.decode(vectors)
    for name, a, b in zip(Genome._fields, decoded, genomes.numpy()):
        assert a.dtype == np.float32, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(mapping.encode(decoded), vectors)
    # A subset, given in any order, is laid out in Genome._fields order; the rest is the base.
    subset = GenomeVector(base, ["synapse_update", "forward_transform"])
    assert subset.fields == ("forward_transform", "synapse_update") and subset.size == 10
    x = np.arange(20, dtype=np.float64).reshape(2, 10)
    genome = subset.decode(x)
    np.testing.assert_array_equal(genome.forward_transform[1], x[1, :9].reshape(3, 3))
    np.testing.assert_array_equal(genome.synapse_update, [9.0, 19.0])
    np.testing.assert_array_equal(genome.synapse_post, np.repeat(base.numpy().synapse_post, 2, 0))
    np.testing.assert_array_equal(subset.initial(), subset.encode(base)[0])
    with pytest.raises(ValueError, match="unknown genome field.*synapse_rate"):
        GenomeVector(base, ["synapse_rate"])
    with pytest.raises(ValueError, match=r"shape \[P, 10\]"):
        subset.decode(np.zeros((2, 11)))


def test_default_fields_are_those_the_rule_reads():
    assert len(rule_fields(Rule())) == 10
    assert GenomeVector(Genome.random(2), rule_fields(Rule())).size == 24
    plain = Rule(normalize_forward=False, normalize_backward=False, oja=True, saturation=True)
    fields = rule_fields(plain)
    assert "norm_gain" not in fields and {"oja_multiplier", "saturation"} <= set(fields)


# ------------------------------------------------------------------------------ fitness
def test_population_fitness_equals_each_candidate_alone():
    problem = _problem()
    fitness = PopulationFitness(problem, networks=2, average_steps=2, eval_batches=2)
    genomes = Genome.random(2, seed=3, population=3, transform_std=1.0)
    synapses = problem.init_synapses(2, seed=4)
    seed = np.array([7, 8], np.int64)
    together, finite = fitness(genomes, synapses, seed, 5)
    assert finite.all() and len(set(together.tolist())) > 1  # distinct candidates
    alone = [fitness(genomes.take([i]), synapses, seed, 5)[0][0] for i in range(3)]
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert fitness.trace_count == 2  # λ=3, then relaxed to any λ: no loop over candidates
    fitness(Genome.concat([genomes, genomes]), synapses, seed, 5)
    assert fitness.trace_count == 2
    with pytest.raises(ValueError, match="shorter than the 2 final steps"):
        fitness(genomes, synapses, seed, 1)


def _blow_up(mapping, vector):
    """`vector` with a synapse keep gate of 1e30: synapses overflow to Inf/NaN."""
    vector = vector.copy()
    vector[mapping.slices["synapse_keep"][0]] = 1e30
    return vector


def test_non_finite_candidate_gets_the_worst_fitness_and_is_counted():
    trainer = _trainer(validation=False)
    ask = trainer.es.ask

    def ask_with_a_bad_candidate():
        candidates = ask()
        candidates[2] = _blow_up(trainer.mapping, candidates[2])
        return candidates

    trainer.es.ask = ask_with_a_bad_candidate
    result = trainer.step()
    np.testing.assert_array_equal(result.finite, [True, True, False, True])
    assert np.isnan(result.fitness[2]) and np.isfinite(result.fitness[[0, 1, 3]]).all()
    assert trainer.non_finite == 1 and result.stats()["non_finite"] == 1
    assert trainer.es.fit.fit[-1] == cma_trainer.NON_FINITE_LOSS  # told the worst loss
    assert np.isfinite(trainer.best_score)  # the best is a finite candidate
    trainer.step()
    assert trainer.non_finite == 2 and trainer.generation == 2


# ------------------------------------------------------------------------------ trainer
# ------------------------------------------------------------------------------ launcher
LAUNCHER_ARGS = [
    "--tasks=toy.and;toy.xor",
    "--validation_tasks=toy.nxor",
    "--layer_sizes=8",
    "--population=6",
    "--batch_size=16",
    "--eval_batch_size=32",
    "--eval_batches=2",
    "--unroll=constant:4",
    "--validate_every=25",
    "--checkpoint_every=10",
    "--log_every=50",
    "--validation_networks=2",
    "--validation_examples=64",
    "--print_table=false",
    "--seed=3",
]


def _launch(out_dir, *extra, wait=True):
    return launch("cma_train", out_dir, [*LAUNCHER_ARGS, *extra], wait)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--population=1", "--population (CMA-ES λ) must be >= 2, got 1"),
        ("--sigma0=0", "--sigma0 must be a finite number > 0, got 0.0"),
        (
            "--fields=forward_transform,synapse_rate",
            "--fields: unknown genome field(s) synapse_rate",
        ),
        ("--learning_rate=0.1", "--learning_rate belong(s) to gradient meta-training"),
        ("--init_genome=backprop:0", "--init_genome=backprop:LR needs a learning rate > 0"),
    ],
)
def test_bad_flags_exit_nonzero_with_one_line_before_any_work(tmp_path, flag, message):
    out_dir = tmp_path / "out"
    result = _launch(out_dir, "--generations=5", flag)
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("cma_train:")]
    assert len(ours) == 1 and ours[0].startswith(f"cma_train: error: {message}"), ours
    assert "Traceback" not in result.stderr
    assert not out_dir.exists()


def test_flagfiles_of_the_card_parse_to_their_documented_settings(monkeypatch):
    """cma_mnist14.cfg: the scale-free rule from backprop:0.15, keep gate not searched;
    cma_mnist14_paper_rule.cfg (which includes it): exactly Rule(), from a random genome."""
    from absl import flags  # pylint: disable=g-import-not-at-top

    from launchers import cma_train  # pylint: disable=g-import-not-at-top
    from tests.test_meta import REPO  # pylint: disable=g-import-not-at-top

    monkeypatch.chdir(REPO)  # the paper-rule flagfile names cma_mnist14.cfg relative to the repo

    def settings(name):
        flags.FLAGS(["cma_train", f"--flagfile=launchers/configs/{name}", "--out_dir=unused"])
        try:
            values = cma_train.flag_values()
            config = cma_train.build_config(values)
            rule, fields = config.rule, config.fields
        finally:
            flags.FLAGS.unparse_flags()
        return values, rule, fields

    values, rule, fields = settings("cma_mnist14.cfg")
    assert values["init_genome"] == "backprop:0.15" and values["sigma0"] == 0.05
    assert not rule.normalize_output and rule.feedback == "error" and rule.symmetric
    assert "synapse_keep" not in fields and set(fields) < set(rule_fields(rule))
    values, rule, fields = settings("cma_mnist14_paper_rule.cfg")
    assert rule == Rule() and not values["init_genome"] and values["sigma0"] == 0.1
    assert values["population"] == 80 and values["generations"] == 400 and fields is None
