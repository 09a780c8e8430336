"""`retries` and `hang_timeout` on one local process (tests/plugins/toy_stages/counter.py): a process lost (SIGKILL)
or hung is resumed from its checkpoint with the uninterrupted result; the stage's own error is not retried; without
`retries` a lost process fails the stage as before and `ringctl resume` continues it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import ringctl_json, write

RECIPE = """
name: retry
seed: 1
resources: {{retries: {retries}, retry_backoff_s: 0}}
stages:
  count:
    kind: toy_stages.counter
    steps: 6
    save_every: 1
    {extra}
"""


def _run(tmp_path: Path, retries: int, extra: str) -> tuple[int, dict, Path]:
    r = write(tmp_path / "r.yaml", RECIPE.format(retries=retries, extra=extra))
    proc, doc = ringctl_json("run", r, cwd=tmp_path, timeout=300)
    return proc.returncode, doc, tmp_path / "runs" / doc["run_id"] / "count"


def _totals(stage_dir: Path) -> list[int]:
    return [json.loads(line)["total"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_process_is_resumed_from_its_checkpoint(tmp_path):
    code, doc, stage_dir = _run(tmp_path, 2, f"die_at: 3\n    once: {tmp_path / 'once'}")
    assert code == 0, doc
    (st,) = doc["stages"]
    assert st["status"] == "completed" and st["retries_used"] == 1
    (rec,) = st["recoveries"]
    assert rec["exit_code"] == -9 and "rank(s) 0 died without exiting" in rec["cause"]
    assert rec["relaunched_at"] >= rec["failed_at"]
    assert _totals(stage_dir) == [1, 2, 3, 4, 5, 6]  # steps 1-3 from the first attempt, 4-6 after the resume
    assert "retry 1/2 from the latest checkpoint" in (stage_dir / "stage.log").read_text()
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(st["mlflow_run_id"]).data.tags
    assert (tags["ringctl.retries_used"], tags["ringctl.attempt"]) == ("1", "2")


def test_without_retries_a_killed_process_fails_the_stage_and_resume_continues(tmp_path):
    code, doc, stage_dir = _run(tmp_path, 0, f"die_at: 3\n    once: {tmp_path / 'once'}")
    assert code == 1 and doc["stages"][0]["status"] == "failed" and doc["stages"][0]["recoveries"] == []
    assert "retries are used up" in (stage_dir / "stage.log").read_text()
    proc, doc = ringctl_json("resume", doc["run_id"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _totals(stage_dir) == [1, 2, 3, 4, 5, 6]


def test_the_stages_own_error_is_not_retried(tmp_path):
    code, doc, stage_dir = _run(tmp_path, 2, "fail_at: 2")
    assert code == 1 and doc["stages"][0]["status"] == "failed" and doc["stages"][0]["retries_used"] == 0
    log = (stage_dir / "stage.log").read_text()
    assert "failing on purpose" in log and "from the latest checkpoint" not in log
    assert log.count("launching:") == 1
    assert json.loads((stage_dir / "ranks" / "rank-0.json").read_text())["error"] == "error"


def test_a_hang_is_detected_its_stacks_logged_and_the_stage_resumed(tmp_path):
    # 10 s, not less: a healthy step of this stage includes the process's first MLflow logging (the mlflow import,
    # the sqlite store), which took over 2 s on a loaded 2-core CI host and was then taken for a hang
    code, doc, stage_dir = _run(tmp_path, 1, f"hang_at: 2\n    once: {tmp_path / 'once'}\n"
                                             f"    launch: {{hang_timeout: 10}}")
    assert code == 0, doc
    (st,) = doc["stages"]
    assert st["retries_used"] == 1 and "no rank made progress" in st["recoveries"][0]["cause"]
    log = (stage_dir / "stage.log").read_text()
    stacks = log.split("[ringctl] rank 0 (pid ")[1]
    assert "toy_stages/counter.py" in stacks and "in run" in stacks  # the frame of the hung loop
    assert _totals(stage_dir) == [1, 2, 3, 4, 5, 6]
