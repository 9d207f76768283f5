"""The experiment runner (launchers/experiment.py, blur_tf/study): a tiny two-launcher-arm spec
whose second arm fails, plus a genome arm; the rerun reuses every arm; the spec's flag merging
and its clear errors."""

import json
import os

import numpy as np
import pytest
from absl import flags

from blur_tf.study import runner
from blur_tf.study import spec as spec_lib
from launchers import experiment

TINY = """
[experiment]
title = tiny
flags = --tasks=toy.and --layer_sizes=4 --meta_batch=1 --batch_size=8 --unroll=constant:2
        --log_every=0 --validate_every=0 --checkpoint_every=0 --print_table=false
        --deterministic=false --meta_steps=2
[arm good]
launcher = meta_train
[arm diverges]
launcher = meta_train
flags = --layer_sizes=0   # refused by meta_train: status 2
[arm bp]
genome = backprop:0.1
[evaluation asym]
kind = asymmetry
layer_sizes = 3
examples = 16
"""


def _spec(tmp_path, text=TINY):
    path = tmp_path / "spec.cfg"
    path.write_text(text)
    return spec_lib.parse_spec(str(path))


@pytest.mark.slow  # end to end: launcher processes per arm, run twice
def test_runs_resumes_and_records_a_failing_arm(tmp_path):
    spec, out = _spec(tmp_path), str(tmp_path / "out")
    messages = []
    results = runner.run_experiment(spec, out, parallel=2, log=messages.append)
    arms = results["arms"]
    assert arms["good"]["status"] == "ok" and arms["bp"]["status"] == "ok"
    assert arms["diverges"]["status"] == "failed"
    assert "--layer_sizes must be positive" in arms["diverges"]["error"]
    assert arms["bp"]["metrics"]["asym:asymmetry"] < 1e-5  # backprop: a gradient step
    assert arms["good"]["metrics"]["asym:asymmetry"] > 0.01  # a BLUR genome: not one
    assert arms["good"]["metrics"]["meta_steps"] == 2
    assert "asym:asymmetry" not in arms["diverges"]["metrics"]
    for name in ("results.json", "results.csv", "results.md", "spec.png"):
        assert os.path.exists(os.path.join(out, name)), name
    csv_lines = open(os.path.join(out, "results.csv")).read().splitlines()
    assert csv_lines[0].startswith("arm,status,wall_seconds") and len(csv_lines) == 4
    log_file = os.path.join(out, "arms", "good", "log.txt")
    size = os.path.getsize(log_file)

    messages.clear()
    again = runner.run_experiment(spec, out, log=messages.append)
    assert sorted(messages) == [
        "arm bp: reused (ok)",
        "arm diverges: reused (failed)",
        "arm good: reused (ok)",
    ]  # no arm ran, no evaluation either
    assert os.path.getsize(log_file) == size
    assert again["arms"]["good"]["metrics"] == arms["good"]["metrics"]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["arms"]["diverges"]["status"] == "failed"


def test_an_arm_reading_another_arms_output_waits_for_it(tmp_path):
    """`{arms}/NAME` in flags: the arm needs NAME (declared above), its command reads NAME's
    folder, and it fails without running when NAME failed or has not run."""
    from blur_tf.study import arms as arms_lib  # pylint: disable=g-import-not-at-top

    text = (
        TINY + "[arm child]\nlauncher = meta_train\nflags = --init_genome={arms}/good/genome.json\n"
    )
    parsed = _spec(tmp_path, text)
    child = parsed.arm("child")
    out = str(tmp_path / "out")
    assert child.needs == ("good",) and parsed.arm("good").needs == ()
    assert f"--init_genome={out}/arms/good/genome.json" in arms_lib.command(child, out, None)
    with pytest.raises(ValueError, match="not an arm above"):
        _spec(
            tmp_path,
            text.replace("{arms}/good", "{arms}/later") + "[arm later]\ngenome = random:0\n",
        )
    records = arms_lib.run_arms([child], out, None, log=lambda _: None)
    assert records["child"]["status"] == "failed"
    assert "needs arm good, which has not run" in records["child"]["error"]
    os.makedirs(arms_lib.arm_dir(out, "good"))
    with open(os.path.join(arms_lib.arm_dir(out, "good"), "arm.json"), "w") as f:
        json.dump({"status": "failed", "command": []}, f)
    records = arms_lib.run_arms([child], out, None, retry_failed=True, log=lambda _: None)
    assert "needs arm good, which failed" in records["child"]["error"]
    assert not os.path.exists(os.path.join(arms_lib.arm_dir(out, "child"), "log.txt"))

    # the child failed; with another command it starts afresh, its failed run set aside
    messages = []
    changed = spec_lib.Arm("child", "meta_train", ("--init_genome={arms}/good/other.json",))
    records = arms_lib.run_arms([changed], out, None, log=messages.append)
    assert "command changed" in messages[0] and "child.failed" in messages[0]
    assert os.path.exists(os.path.join(out, "arms", "child.failed", "arm.json"))
    assert "needs arm good, which failed" in records["child"]["error"]  # rerun, same reason


def test_arm_flags_replace_shared_ones(tmp_path):
    spec = _spec(
        tmp_path,
        TINY.replace(
            "[arm good]\nlauncher = meta_train",
            "[arm good]\nlauncher = meta_train\nflags = "
            "--tasks=toy.or --tasks=toy.xor --nonormalize_forward "
            "--normalize_backward",
        ),
    )
    good = spec.arm("good").flags
    assert [t for t in good if t.startswith("--tasks")] == ["--tasks=toy.or", "--tasks=toy.xor"]
    assert spec_lib.flag_name("--nonormalize_forward") == "normalize_forward"
    assert spec_lib.flag_name("--normalize_forward") == "normalize_forward"
    assert spec_lib.flag_name("--noxla") == "xla"
    assert good[-2:] == ("--nonormalize_forward", "--normalize_backward")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[arm a]\ngenome = random:0\n", "needs an \\[experiment\\] section"),
        ("[experiment]\n", "no \\[arm NAME\\] section"),
        ("[experiment]\n[arm a]\nlauncher = meta_train\ngenome = random:0\n", "either launcher"),
        ("[experiment]\n[arm a]\nlauncher = train\n", "launcher='train'"),
        (
            "[experiment]\n[arm a]\nlauncher = meta_train\nflags = --out_dir=x\n",
            "set by the experiment runner",
        ),
        (
            "[experiment]\n[arm a]\nlauncher = meta_train\nflags = --flagfile=nope.cfg\n",
            "no such flagfile",
        ),
        ("[experiment]\n[arm a]\ngenome = random:0\n[evaluation e]\nkind = loss\n", "kind='loss'"),
        (
            "[experiment]\n[arm a]\ngenome = random:0\n[evaluation e]\nkind = asymmetry\n"
            "arms = b*\n",
            "matches no arm",
        ),
        ("[experiment]\n[arms a]\ngenome = random:0\n", "sections are"),
    ],
)
def test_bad_specs_are_refused_with_one_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        _spec(tmp_path, text)


def test_launcher_refuses_bad_flags_before_any_work(tmp_path, capsys):
    fv = flags.FlagValues()
    experiment.define_flags(fv)
    (tmp_path / "spec.cfg").write_text(TINY + "[evaluation acc]\nkind = accuracy\n")
    fv(["experiment", f"--spec={tmp_path / 'spec.cfg'}", f"--out_dir={tmp_path / 'out'}"])
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["experiment"], fv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "experiment: error: [evaluation acc]: kind=accuracy needs ['layer_sizes', 'tasks']"
    )
    assert not (tmp_path / "out" / "arms").exists()


def test_decision_regions_of_the_backprop_genome(tmp_path):
    """Paper Fig. 4's measure: the true map is the task's label_fn on the grid (x0 across, x1
    up), and the backprop genome learns toy.and's quadrant well above chance in 50 steps."""
    from blur_tf.study import arms as arms_lib
    from blur_tf.study import measures

    arms_lib.write_genome_arm(spec_lib.Arm("bp", genome="backprop:0.3"), str(tmp_path))
    options = measures.check_options(
        "decision_regions", {"task": "toy.and", "steps": "50,1", "grid": "16"}, "[evaluation r]"
    )
    assert options["steps"] == [1, 50]
    stem = str(tmp_path / "eval_r")
    result = measures.measure("decision_regions", options, str(tmp_path / "genome.json"), stem, {})
    maps = np.load(result["regions"])
    assert maps.shape == (3, 16, 16) and result["steps"] == [1, 50]
    assert maps[0][-1, -1] == 1 and maps[0][0, -1] == 0 and maps[0][-1, 0] == 0  # quadrant I
    assert maps[0].mean() == pytest.approx(0.25)
    assert result["metrics"]["grid_accuracy@50"] > 0.85
    image = {"kind": "regions", "path": result["regions"], "steps": result["steps"]}
    metrics = {"mean:a@1": 0.5, "mean:b@1": 0.4}
    arm = {"meta_curve": [], "curves": {}, "metrics": metrics, "images": {"r": image}}
    correlation = {"x": "a@1", "y": "b@1", "pearson_r": None, "arms": 1}
    runner.plot({"arms": {"bp": arm}, "correlation": correlation}, str(tmp_path / "f.png"))
    assert os.path.getsize(tmp_path / "f.png") > 1000
    with pytest.raises(ValueError, match="need a toy"):
        measures.check_options("decision_regions", {"task": "mnist"}, "[evaluation r]")


def test_correlation_over_arms(tmp_path):
    rows = {
        name: {
            "metrics": {"tr:a@10": t, "tr:b@10": t + 0.1, "tr:a@50": 0.0, "ho:c@10": h},
            "curves": {"tr:a": {"10": [t, 0.02], "50": [0.0, 0.5]}, "tr:b": {"10": [t, 0.04]}},
        }
        for name, t, h in (("s0", 0.5, 0.4), ("s1", 0.7, 0.6), ("s2", 0.9, 0.8), ("s3", 0.6, None))
    }
    c = runner.correlation(rows, "tr@10", "ho@10")
    assert rows["s0"]["metrics"]["mean:tr@10"] == pytest.approx(0.55)
    assert rows["s0"]["metrics"]["sd:tr@10"] == pytest.approx(0.03)  # over panels a and b
    assert rows["s0"]["metrics"]["sd:ho@10"] is None
    assert rows["s3"]["metrics"]["mean:ho@10"] is None
    assert c["arms"] == 3 and c["pearson_r"] == pytest.approx(1.0)
    text = (TINY + "[evaluation acc]\nkind = accuracy\ntasks = toy.and\nlayer_sizes = 4\n").replace(
        "title = tiny", "title = tiny\ncorrelate = acc@10"
    )
    with pytest.raises(ValueError, match="2 columns"):
        _spec(tmp_path, text)
    with pytest.raises(ValueError, match="is not '<evaluation>@<T>'"):
        _spec(tmp_path, text.replace("acc@10", "acc@10 nope@10"))
    with pytest.raises(ValueError, match="accuracy evaluation"):  # asymmetry has no panels
        _spec(tmp_path, text.replace("acc@10", "acc@10 asym@10"))
    assert _spec(tmp_path, text.replace("acc@10", "acc@10 acc@20")).correlate == (
        "acc@10",
        "acc@20",
    )
    with pytest.raises(ValueError, match="one column"):
        _spec(tmp_path, text.replace("correlate = acc@10", "matrix = acc@10 acc@20"))
    parsed = _spec(
        tmp_path, text.replace("correlate = acc@10", "matrix = acc@10\nsummarize = acc@1 acc@5")
    )
    assert parsed.matrix == "acc@10" and parsed.summarize == ("acc@1", "acc@5")
    parsed = _spec(tmp_path, text.replace("correlate = acc@10", "bars = mse interference"))
    assert parsed.bars == ("mse", "interference")


def test_metric_bars_plot_on_a_log_axis_when_values_span_decades(tmp_path):
    """A `bars` metric (flp_train's own evaluation): one bar per arm, ± <metric>_se."""
    arms = {
        name: {"meta_curve": [], "curves": {}, "metrics": {"mse": v, "mse_se": v and v / 10}}
        for name, v in (("flp", 0.002), ("reuse", 0.05), ("failed", None))
    }
    figure = runner.plotting.pyplot().figure()
    ax = figure.add_subplot()
    runner._metric_bars(ax, arms, "mse")  # pylint: disable=protected-access
    assert ax.get_xscale() == "log" and len(ax.patches) == 2  # no bar for the failed arm
    assert [t.get_text() for t in ax.get_yticklabels()] == ["flp", "reuse"]
    runner.plot({"arms": arms, "bars": ["mse"]}, str(tmp_path / "b.png"))
    assert os.path.getsize(tmp_path / "b.png") > 1000


def test_summarize_and_matrix(tmp_path):
    rows = {
        "deep": {
            "metrics": {"d:mnist/64@10": 0.8, "d:mnist/64,64@10": 0.6, "d:mnist/64@20": 0.9},
            "curves": {"d:mnist/64": {"10": [0.8, 0.01]}, "d:mnist/64,64": {"10": [0.6, 0.03]}},
        },
        "shallow": {
            "metrics": {"d:mnist/64@10": 0.7, "d:mnist/64,64@10": 0.1},
            "curves": {"d:mnist/64": {"10": [0.7, 0.05]}, "d:mnist/64,64": {"10": [0.1, 0.01]}},
        },
        "failed": {"metrics": {}, "curves": {}},
    }
    runner.summarize(rows, ["d@10"])
    assert rows["deep"]["metrics"]["mean:d@10"] == pytest.approx(0.7)
    assert rows["deep"]["metrics"]["sd:d@10"] == pytest.approx(0.02)  # over networks
    assert rows["deep"]["metrics"]["sd_tasks:d@10"] == pytest.approx(0.1)  # over panels
    assert rows["failed"]["metrics"]["mean:d@10"] is None
    m = runner.matrix(rows, "d@10")
    assert m["panels"] == ["mnist/64", "mnist/64,64"]
    assert m["rows"] == {"deep": [0.8, 0.6], "shallow": [0.7, 0.1]}  # no row for 'failed'
    results = {"title": "t", "arms": {}, "matrix": m}
    assert "| shallow | 0.7 | 0.1 |" in runner.markdown_table(results)
    arm = {"meta_curve": [], "curves": {}, "metrics": {}}
    runner.plot({"arms": {"deep": arm}, "matrix": m}, str(tmp_path / "m.png"))
    assert os.path.getsize(tmp_path / "m.png") > 1000


def test_every_shipped_spec_parses_and_meta_trains_on_training_data_only():
    root = os.path.join(os.path.dirname(__file__), "..", "experiments")
    specs = sorted(f for f in os.listdir(root) if f.endswith(".cfg"))
    assert len(specs) >= 8
    for name in specs:
        parsed = spec_lib.parse_spec(os.path.join(root, name))
        for arm in parsed.arms:
            for token in arm.flags:
                if spec_lib.flag_name(token) in ("tasks", "validation_tasks"):
                    assert "split=test" not in token, (name, arm.name, token)
