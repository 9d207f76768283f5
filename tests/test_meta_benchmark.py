"""launchers.meta_benchmark: one fresh subprocess per configuration, its figures in one table."""

import subprocess
import sys

import pytest

from launchers import meta_benchmark


@pytest.mark.slow  # end to end: the benchmark and one subprocess per configuration
def test_each_configuration_is_measured_in_its_own_fresh_process():
    command = [
        sys.executable,
        "-m",
        "launchers.meta_benchmark",
        "--tasks=toy.and",
        "--layer_sizes=4",
        "--num_states=2",
        "--population=2",
        "--meta_batch=1",
        "--batch_size=8",
        "--lengths=2",
        "--estimators=full",
        "--seconds=0.01",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [
        line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| full ")
    ]
    assert [int(r[2]) for r in rows] == [2]
    for row in rows:
        cells = [c.strip() for c in row]
        assert float(cells[6]) > 0 and float(cells[7]) > 0  # meta-step and inner GFLOP/s
        ratio = float(cells[6]) / float(cells[7])
        assert abs(float(cells[8].rstrip("%")) / 100 - ratio) <= 0.01 * ratio + 0.01
        assert 100 < float(cells[9]) < 20000  # a whole process's peak RSS, in MiB
    assert "of its own fresh process" in result.stdout  # what the peak column means


def test_rows_survive_the_subprocess_round_trip():
    config = meta_benchmark.Config("segmented", True, 50)
    row = meta_benchmark.Row(config, 2.0, 10.0, 900.0, 3.0, 5e9, 20.0)
    assert meta_benchmark.Row.from_json(row.to_json()) == row
    assert row.gflops == 10.0
