"""Reading validation curves back from a run's TensorBoard events (launchers.validation_report)."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from blur_tf.meta.run_history import read_scalars
from launchers import validation_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(folder, points, tag="validation/score"):
    writer = tf.summary.create_file_writer(str(folder / "tb"))
    with writer.as_default():
        for step, value in points:
            tf.summary.scalar(tag, value, step=step)
            tf.summary.scalar("other", -1.0, step=step)
    writer.close()


def test_read_scalars_sorted_last_write_wins_and_stages_chain(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    _write(first, [(100, 0.5), (50, 0.25), (100, 0.75)])  # step 100 rewritten (a resumed run)
    _write(second, [(10, 0.8), (20, 0.9)])
    assert read_scalars(str(first / "tb"), "validation/score") == [(50, 0.25), (100, 0.75)]
    chained = validation_report.chained_curve(f"{first}+{second}", "validation/score")
    assert [step for step, _ in chained] == [50, 100, 110, 120]
    assert [value for _, value in chained] == pytest.approx([0.25, 0.75, 0.8, 0.9])
    table = validation_report.markdown_table({"run": chained})
    assert "| 110 | 0.8000 |" in table
    with pytest.raises(ValueError, match="no TensorBoard event file"):
        read_scalars(str(tmp_path), "validation/score")


def test_launcher_one_line_error_for_a_folder_without_events(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "launchers.validation_report", f"--runs={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("validation_report: error:")
    assert "no TensorBoard event file" in result.stderr
