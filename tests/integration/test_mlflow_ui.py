"""bench/mlflow_ui_screenshot.py end to end: a real `mlflow ui` on a ringctl store, headless Chromium screenshots of
the experiment page. Nothing is asserted on pixels: the PNGs exist, and the server's REST API returns ringctl's
experiment with its kind tag and every run of the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.mlflow_ui_screenshot import VIEWS, chromium_binary
from ringctl.tracking import EXPERIMENT_KIND
from tests.helpers import REPO, cli_env, ringctl, write


@pytest.mark.slow
@pytest.mark.extended  # a browser check of the README's screenshot script (ringctl ui's own test is in make test)
@pytest.mark.skipif(chromium_binary() is None,
                    reason="needs Chromium for the screenshots (Debian: apt-get install chromium)")
def test_screenshot_script_against_a_real_mlflow_ui(tmp_path):
    r = write(tmp_path / "toy.yaml", """
        name: shown
        stages:
          a:
            kind: toy_stages.counter
            steps: 2
          b:
            kind: toy_stages.counter
            source: a.result
    """)
    assert ringctl("run", r, cwd=tmp_path).returncode == 0
    out = tmp_path / "shots"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "mlflow_ui_screenshot.py"), "--db",
                           str(tmp_path / "mlflow.db"), "--out", str(out), "--json"],
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.splitlines()[-1])
    assert doc["experiment_kind"] == EXPERIMENT_KIND
    assert doc["runs"] == 3 and doc["statuses"] == {"FINISHED": 3}  # the parent and its two stages
    assert set(doc["screenshots"]) == set(VIEWS)
    for view, shot in doc["screenshots"].items():
        assert shot["url"].endswith(f"/#/experiments/{doc['experiment_id']}{VIEWS[view]}")
        png = out / f"{view}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size == shot["bytes"] > 0
