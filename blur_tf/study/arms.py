"""Running the arms of an experiment, each in its own folder OUT/arms/<name>, resumably.

A launcher arm is `python -m launchers.<launcher> FLAGS --out_dir=… [--tfds_manual_dir=…]` in a
subprocess (the launcher's own code path: its checks, checkpoints and resume), its output in
`log.txt`. A genome arm writes `genome.json` (the genome, its rule in the metadata). Either ends
by writing `arm.json` = {status: ok | failed, returncode, error, command, wall_seconds}:

* an arm whose arm.json records the same command is reused (`ok`, or `failed` unless
  `retry_failed`): a failing arm (bad flags: status 2; diverged: status 1) is recorded, not
  fatal;
* an arm stopped by a signal (status 128 + signal) writes no arm.json: the next run resumes it
  from its checkpoint. Up to `parallel` launcher arms run at once;
* an arm whose flags read another arm's folder (`{arms}/NAME`, `Arm.needs`) starts once NAME is
  `ok`, and is recorded as failed if NAME failed or is neither done nor run in this call;
* a failed arm whose command changed starts afresh: its folder is moved to `<name>.failed`
  (replacing an older one), so the launcher does not refuse the old run's flags. A finished
  (`ok`) arm keeps its folder: the launcher resumes it where only resumable flags changed
  (e.g. more meta-steps) and refuses the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

from blur_tf.files import write_json_atomic
from blur_tf.study.spec import Arm

ARM_FILE = "arm.json"
# The folder holding blur_tf/ and launchers/: the arms find `launchers` from any working folder.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def arm_dir(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, "arms", name)


def command(arm: Arm, out_dir: str, tfds_manual_dir: str | None) -> list[str]:
    """The launcher command of a launcher arm ('python': this interpreter), or a description of
    a genome arm."""
    if arm.genome is not None:
        return ["genome", arm.genome, *(["rule", arm.rule] if arm.rule else [])]
    data = [f"--tfds_manual_dir={tfds_manual_dir}"] if tfds_manual_dir else []
    arms = os.path.join(out_dir, "arms")
    return [
        "python",
        "-m",
        f"launchers.{arm.launcher}",
        *(t.replace("{arms}", arms) for t in arm.flags),
        f"--out_dir={arm_dir(out_dir, arm.name)}",
        *data,
    ]


def read_record(out_dir: str, name: str) -> dict | None:
    """The arm.json of an arm (None if there is none)."""
    try:
        with open(os.path.join(arm_dir(out_dir, name), ARM_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_done(record: dict | None, cmd: list[str], retry_failed: bool) -> bool:
    if record is None or record.get("command") != cmd:
        return False
    return record["status"] == "ok" or not retry_failed


def write_genome_arm(arm: Arm, folder: str) -> None:
    """genome.json of a genome arm: backprop:LR (Rule.backprop), random:SEED (Rule()) or a
    genome file (its metadata rule); `arm.rule` overrides on top. ValueError if bad."""
    from blur_tf.config import parse_rule_overrides  # pylint: disable=g-import-not-at-top
    from blur_tf.evaluation import load_learner  # pylint: disable=g-import-not-at-top
    from blur_tf.genome import Genome, resolve_genome_path  # pylint: disable=g-import-not-at-top
    from blur_tf.rule import Rule  # pylint: disable=g-import-not-at-top
    from blur_tf.training import backprop_init_lr  # pylint: disable=g-import-not-at-top

    overrides = parse_rule_overrides(arm.rule) if arm.rule else {}
    if arm.genome.startswith("random:"):
        try:
            seed = int(arm.genome.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"genome={arm.genome!r}: random:SEED needs an integer") from None
        rule = dataclasses.replace(Rule(), **overrides)
        genome = Genome.random(rule.num_states, seed=seed)
    elif arm.genome.startswith("backprop:"):
        rule = dataclasses.replace(Rule.backprop(), **overrides)
        genome = Genome.backprop(backprop_init_lr(arm.genome))
    else:
        try:
            resolve_genome_path(arm.genome)
        except ValueError as e:
            raise ValueError(f"genome={arm.genome!r}: {e}") from None
        learner = load_learner(arm.genome, overrides)
        genome, rule = learner.genome, learner.rule
    genome.save(
        os.path.join(folder, "genome.json"),
        metadata={"rule": rule.to_dict(), "source": arm.genome, "rule_overrides": arm.rule},
    )


def run_arms(
    arms,
    out_dir: str,
    tfds_manual_dir: str | None,
    parallel: int = 1,
    retry_failed: bool = False,
    log=print,
) -> dict:
    """Runs the arms not done yet (module doc); {name: record} of the arms run in this call."""
    pending = []
    for arm in arms:
        cmd = command(arm, out_dir, tfds_manual_dir)
        record = read_record(out_dir, arm.name)
        if is_done(record, cmd, retry_failed):
            log(f"arm {arm.name}: reused ({record['status']})")
            continue
        if record and record["status"] == "failed" and record.get("command") != cmd:
            moved = set_aside(out_dir, arm.name)
            log(f"arm {arm.name}: its command changed; the failed run moved to {moved}")
        pending.append((arm, cmd))
    records = {}
    for arm, cmd in [p for p in pending if p[0].genome is not None]:
        records[arm.name] = _genome_arm(arm, cmd, out_dir)
        log(f"arm {arm.name}: {records[arm.name]['status']}")
    queue = [p for p in pending if p[0].genome is None]
    running = {}
    try:
        while queue or running:
            for arm, cmd in list(queue):
                status = _needs_status(arm, out_dir, queue, running)
                if status == "ready" and len(running) < parallel:
                    queue.remove((arm, cmd))
                    running[arm.name] = _start(arm, cmd, out_dir)
                    log(f"arm {arm.name}: started ({' '.join(cmd[1:])})")
                elif status not in ("ready", "waiting"):
                    queue.remove((arm, cmd))
                    records[arm.name] = _record(arm.name, "failed", 2, status, cmd, 0.0, out_dir)
                    log(f"arm {arm.name}: failed ({status})")
            time.sleep(0.5)
            for name, (process, cmd, start, log_file) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                log_file.close()
                record = _finish(name, process.returncode, cmd, start, out_dir)
                if record is not None:
                    records[name] = record
                log(
                    f"arm {name}: "
                    + (
                        record["status"]
                        if record
                        else f"stopped (status {process.returncode}); rerun resumes it"
                    )
                    + (f" ({record['wall_seconds']:.0f} s)" if record else "")
                )
    finally:
        for process, _, _, log_file in running.values():  # stopped: let the arms checkpoint
            process.terminate()
            process.wait()
            log_file.close()
    return records


def set_aside(out_dir: str, name: str) -> str:
    """Moves an arm's folder to `<name>.failed` (replacing an older one); the new path."""
    folder = arm_dir(out_dir, name)
    target = folder + ".failed"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(folder, target)
    return target


def _needs_status(arm: Arm, out_dir: str, queue, running) -> str:
    """'ready' when every arm of `arm.needs` is ok, 'waiting' while one is queued or running,
    else the reason the arm cannot run."""
    for name in arm.needs:
        if name in running or any(a.name == name for a, _ in queue):
            return "waiting"
        record = read_record(out_dir, name)
        if record is None:
            return f"needs arm {name}, which has not run (run it first, or without --arms)"
        if record["status"] != "ok":
            return f"needs arm {name}, which failed"
    return "ready"


def _record(name, status, returncode, error, cmd, seconds, out_dir) -> dict:
    """Writes and returns the arm.json record of a finished arm."""
    os.makedirs(arm_dir(out_dir, name), exist_ok=True)
    record = {
        "status": status,
        "returncode": returncode,
        "error": error,
        "command": cmd,
        "wall_seconds": seconds,
    }
    write_json_atomic(os.path.join(arm_dir(out_dir, name), ARM_FILE), record)
    return record


def _genome_arm(arm: Arm, cmd, out_dir: str) -> dict:
    folder = arm_dir(out_dir, arm.name)
    os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    try:
        write_genome_arm(arm, folder)
        status, error = "ok", None
    except ValueError as e:
        status, error = "failed", str(e)
    return _record(
        arm.name,
        status,
        0 if status == "ok" else 2,
        error,
        cmd,
        time.perf_counter() - start,
        out_dir,
    )


def _start(arm: Arm, cmd, out_dir: str):
    folder = arm_dir(out_dir, arm.name)
    os.makedirs(folder, exist_ok=True)
    log_file = open(os.path.join(folder, "log.txt"), "a")
    path = os.pathsep.join(p for p in (REPOSITORY, os.environ.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, *cmd[1:]],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=path),
    )
    return process, cmd, time.perf_counter(), log_file


def _finish(name: str, returncode: int, cmd, start: float, out_dir: str) -> dict | None:
    if returncode >= 128 or returncode < 0:  # a signal: resumable, not a result
        return None
    folder = arm_dir(out_dir, name)
    error = None
    if returncode:
        with open(os.path.join(folder, "log.txt")) as f:
            lines = [l.strip() for l in f if l.strip()]
        error = lines[-1] if lines else f"exit status {returncode}"
    status = "ok" if returncode == 0 else "failed"
    return _record(name, status, returncode, error, cmd, time.perf_counter() - start, out_dir)
