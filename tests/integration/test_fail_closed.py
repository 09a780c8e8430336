"""Fail closed, lose nothing, through the CLI: a bad data row stops the stage with file:line (no traceback in the
terminal) or is skipped and counted; concurrent runs of one recipe in one workdir and one sqlite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import cli_env, ringctl, ringctl_json, write

BAD_ROWS_RECIPE = """
name: badrows
stages:
  filter:
    kind: data_filter
    on_bad_rows: {policy}
    sources:
      - {{path: data.jsonl, domain: math}}
    steps:
      - {{type: require_fields, fields: [prompt, answer]}}
"""


def test_bad_row_stops_the_stage_with_file_line_or_is_skipped(tmp_path):
    (tmp_path / "data.jsonl").write_bytes(b'{"prompt": "What is 1 + 1?", "answer": "2"}\n'
                                          b'{"prompt": "What is 2 + 2?", "answer": \n'
                                          b'{"prompt": "What is 3 + 3?", "answer": "6"}\n')
    r = write(tmp_path / "error.yaml", BAD_ROWS_RECIPE.format(policy="error"))
    proc = ringctl("run", r, cwd=tmp_path)
    assert proc.returncode == 1
    assert "data.jsonl:2: not valid JSON" in proc.stderr and "log (with the traceback):" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    stage_dir = next((tmp_path / "runs").glob("badrows-*/filter"))
    assert "on_bad_rows: skip" in (stage_dir / "error.txt").read_text()
    assert "Traceback" in (stage_dir / "stage.log").read_text()
    r = write(tmp_path / "skip.yaml", BAD_ROWS_RECIPE.format(policy="skip"))
    proc, doc = ringctl_json("run", r, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(Path(doc["stages"][0]["outputs"]["report"]).read_text())
    assert report["read"] == 2 and report["bad_rows"]["skipped"] == 1
    assert report["bad_rows"]["examples"][0].startswith("data.jsonl:2: not valid JSON")


@pytest.mark.slow
def test_concurrent_runs_of_one_recipe_share_workdir_and_store(tmp_path, benchmarks):
    """Two `ringctl run recipes/filter-demo.yaml` at once in one workdir and one sqlite store both complete; a
    third is fully cached with intact outputs."""
    env = cli_env({"RINGCTL_BENCHMARKS_DIR": str(benchmarks)})
    common = ["--json", "--workdir", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    cmd = [sys.executable, "-m", "ringctl", "run", str(REPO / "recipes" / "filter-demo.yaml"), *common]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    docs = [json.loads(out) for out, _ in outs]
    assert [d["status"] for d in docs] == ["completed", "completed"], [err[-2000:] for _, err in outs]
    assert docs[0]["run_id"] != docs[1]["run_id"]
    third = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    doc = json.loads(third.stdout)
    assert doc["status"] == "completed" and {s["status"] for s in doc["stages"]} == {"cached"}
    for stage in doc["stages"]:  # the cached outputs are intact: their manifests' sha256 still match
        for path in stage["outputs"].values():
            assert Path(path).exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("filter-demo") or client.get_experiment_by_name("ringctl")
    parents = client.search_runs([exp.experiment_id], "tags.`ringctl.status` = 'completed'")
    assert len({r.data.tags.get("ringctl.run_id") for r in parents if "ringctl.run_id" in r.data.tags}) == 3
