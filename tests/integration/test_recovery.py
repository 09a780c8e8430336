"""Recovery without a person (`retries`) and the hang watchdog (`hang_timeout`), on 2 torchrun ranks (gloo, CPU).

- Chaos: one of the 2 ranks of SFT, then of RL, is SIGKILLed at a seeded random step; the run completes on its own
  (retries: 2) and its metrics equal an uninterrupted run's. The kill moments and the recovery times (kill -> the
  stage launched again -> training again) are printed.
- Hang: one RL rank is SIGSTOPped; within hang_timeout the runner writes both ranks' Python stacks (a frame of the
  RL loop) to the stage log, kills the processes and resumes the stage: the same metrics again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, ringctl_json, wait_for, write
from tests.integration.sft_data import write_arithmetic
from tests.integration.test_rl_resume_two_ranks import RECIPE as TWO_RANKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HANG_TIMEOUT = 20  # seconds; the slowest RL step here (an eval step) takes a few


def _recipe_text() -> str:
    """test_rl_resume_two_ranks's recipe with SFT on 2 ranks too (a state every 4 steps), retries and a hang timeout."""
    text = TWO_RANKS
    for old, new in (("seed: 0\n", "seed: 0\nresources: {{retries: 2, retry_backoff_s: 1}}\n"),
                     ("    save_every: 100\n", "    launch: {{launcher: torchrun, nproc_per_node: 2}}\n    save_every: 4\n"),
                     ("nproc_per_node: {nproc}}}", "nproc_per_node: 2, hang_timeout: {hang}}}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def _metrics(run_dir: Path, stage: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/")) and k != "train/tokens_per_s"}
            for r in rows]


def _steps_logged(run_dir: Path, stage: str) -> int:
    p = run_dir / stage / "metrics.jsonl"
    return sum('"grad_norm"' in line for line in p.read_text().splitlines()) if p.exists() else 0


def _rank_record(run_dir: Path, stage: str, rank: int) -> dict | None:
    try:
        return json.loads((run_dir / stage / "ranks" / f"rank-{rank}.json").read_text())
    except (OSError, ValueError):
        return None


def _running_pid(run_dir: Path, stage: str, rank: int, not_pid: int | None = None) -> int | None:
    rec = _rank_record(run_dir, stage, rank)
    ok = rec is not None and rec["status"] == "running" and rec["pid"] != not_pid
    return rec["pid"] if ok else None


def _run_dir(workdir: Path) -> Path | None:
    dirs = [d for d in workdir.iterdir() if d.is_dir() and not d.name.startswith(".")] if workdir.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_rl

    root = tmp_path_factory.mktemp("recovery")
    sft = write_arithmetic(root / "sft.jsonl", n=160)
    prompts = root / "prompts.jsonl"
    write_jsonl(prompts, [dict(r) for r in generate_rl(60, 0, domains=["arithmetic"])])
    recipe = write(root / "recipe.yaml", _recipe_text().format(sft=sft, prompts=prompts, hang=HANG_TIMEOUT))
    proc, doc = ringctl_json("run", recipe, "--workdir", root / "ref", cwd=root, timeout=900)
    assert proc.returncode == 0, proc.stderr
    run_dir = root / "ref" / doc["run_id"]
    assert all(s["retries_used"] == 0 for s in doc["stages"]), doc["stages"]
    return root, recipe, run_dir


def _start(root: Path, recipe: Path, workdir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(recipe), "--workdir", str(workdir),
                             "--json", *extra], cwd=root, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _kill_one_rank(proc, run_dir: Path, stage: str, at_step: int, rank: int, sig: int) -> dict:
    """Wait until `stage` has logged `at_step` training steps, then send `sig` to rank `rank`'s stage process."""
    wait_for(lambda: _steps_logged(run_dir, stage) >= at_step, f"{stage} step {at_step}", 600, proc)
    pid = wait_for(lambda: _running_pid(run_dir, stage, rank), f"{stage} rank {rank} running", 60, proc)
    os.kill(pid, sig)
    return {"stage": stage, "rank": rank, "pid": pid, "signal": signal.Signals(sig).name,
            "at_step": _steps_logged(run_dir, stage), "at": time.time()}


def _recovered(proc, run_dir: Path, moment: dict) -> dict:
    """Wait for the stage's next attempt: a new process for the killed rank, then its first training step."""
    stage, rank = moment["stage"], moment["rank"]
    wait_for(lambda: _running_pid(run_dir, stage, rank, not_pid=moment["pid"]), f"{stage} relaunched", 300, proc)
    relaunched = time.time()
    hb = run_dir / stage / "ranks" / f"heartbeat.rank{rank}"
    # the heartbeats are removed before each launch: one that exists is of the new attempt
    wait_for(lambda: hb.exists() or (run_dir / stage / "manifest.json").exists(), f"{stage} training again", 300, proc)
    training = hb.stat().st_mtime if hb.exists() else time.time()
    return {**moment, "relaunched_after_s": round(relaunched - moment["at"], 1),
            "training_again_after_s": round(training - moment["at"], 1)}


def _finish(proc) -> dict:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-4000:]
    return json.loads(out)


def test_sigkill_of_one_rank_in_sft_and_rl_recovers_with_the_same_metrics(reference, tmp_path):
    root, recipe, ref_dir = reference
    rng = random.Random(25)
    plan = [("sft", rng.randint(2, 6), rng.randint(0, 1)), ("rl", rng.randint(1, 4), rng.randint(0, 1))]
    proc = _start(root, recipe, tmp_path / "chaos")
    try:
        run_dir = wait_for(lambda: _run_dir(tmp_path / "chaos"), "the run directory", 120, proc)
        report = []
        for stage, step, rank in plan:
            moment = _kill_one_rank(proc, run_dir, stage, step, rank, signal.SIGKILL)
            report.append(_recovered(proc, run_dir, moment))
        doc = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for r in report:
        print(f"SIGKILL {r['stage']} rank {r['rank']} at step {r['at_step']}: relaunched after "
              f"{r['relaunched_after_s']} s, training again after {r['training_again_after_s']} s")
    stages = {s["name"]: s for s in doc["stages"]}
    for stage in ("sft", "rl"):
        assert stages[stage]["status"] == "completed"
        assert stages[stage]["retries_used"] == 1, stages[stage]
        (rec,) = stages[stage]["recoveries"]
        assert "died without exiting" in rec["cause"], rec
        assert _metrics(run_dir, stage) == _metrics(ref_dir, stage)
        assert "retry 1/2 from the latest checkpoint" in (run_dir / stage / "stage.log").read_text()
    _check_mlflow_tags(root, stages["rl"]["mlflow_run_id"])


def _check_mlflow_tags(root: Path, mlflow_run_id: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    tags = client.get_run(mlflow_run_id).data.tags
    assert tags["ringctl.retries_used"] == "1" and tags["ringctl.attempt"] == "2", tags
    assert "died without exiting" in tags["ringctl.last_failure"]


def test_a_stopped_rank_is_detected_its_stacks_logged_and_the_stage_resumed(reference):
    root, recipe, ref_dir = reference
    rank = random.Random(4).randint(0, 1)
    workdir = ref_dir.parent  # the same workdir: sft comes from the cache, rl runs again
    proc = _start(root, recipe, workdir, "--rerun", "rl")
    try:
        run_dir = wait_for(lambda: [d for d in workdir.iterdir() if d.is_dir() and d != ref_dir
                                    and not d.name.startswith(".")], "the run directory", 120, proc)[0]
        moment = _kill_one_rank(proc, run_dir, "rl", 2, rank, signal.SIGSTOP)
        log = run_dir / "rl" / "stage.log"
        wait_for(lambda: log.exists() and "no rank made progress" in log.read_text(), "the hang detected",
                 HANG_TIMEOUT + 60, proc)
        detected = time.time()
        report = _recovered(proc, run_dir, moment)
        doc = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"SIGSTOP rl rank {rank} at step {report['at_step']}: detected after {detected - moment['at']:.1f} s "
          f"(hang_timeout {HANG_TIMEOUT} s), relaunched after {report['relaunched_after_s']} s, training again "
          f"after {report['training_again_after_s']} s")
    assert detected - moment["at"] < HANG_TIMEOUT + 30
    text = log.read_text()
    for r in (0, 1):  # the stopped rank writes its stacks too (SIGUSR1, then SIGCONT)
        section = text.split(f"[ringctl] rank {r} (pid ")[1].split("[ringctl]")[0]
        assert "stages/rl.py" in section and "in run" in section, section
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["sft"]["status"] == "cached"
    assert stages["rl"]["status"] == "completed" and stages["rl"]["retries_used"] == 1
    assert "no rank made progress" in stages["rl"]["recoveries"][0]["cause"]
    assert _metrics(run_dir, "rl") == _metrics(ref_dir, "rl")
