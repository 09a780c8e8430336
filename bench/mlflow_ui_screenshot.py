"""What a newcomer sees in MLflow: a real `mlflow ui` on ringctl's tracking store, photographed by headless Chromium.

    python bench/mlflow_ui_screenshot.py [--db mlflow.db] [--out mlflow-ui-screenshots] [--json]

1. Without --db, runs recipes/filter-demo.yaml (four data_filter stages, about 20 s) in a temporary directory with
   its own sqlite store; with --db, uses that store (e.g. the mlflow.db that `make demo` wrote).
2. Starts `mlflow ui --backend-store-uri sqlite:///<db>` on 127.0.0.1 and a free port, waits for /health, and reads
   ringctl's experiment through the REST API: its id, its tags (`mlflow.experimentKind`), its runs and their statuses.
3. Takes two screenshots with `chromium --headless` (a fresh browser profile each, 1400x900):
     runs.png     #/experiments/<id>?workflowType=machine_learning   the link the README gives: the training runs
     default.png  #/experiments/<id>                                 the page MLflow opens by itself
   MLflow 3.17's UI opens an experiment on its global "GenAI / Model training" switch (kept in the browser, GenAI
   when nothing is kept) or the link's `workflowType`; the experiment tag `mlflow.experimentKind` that ringctl sets
   (custom_model_development) is what the UIs of earlier MLflow 3 releases read (3.5 does).
4. Stops the server (its whole process group).

Needs Chromium (Debian: `apt-get install chromium`; or --chromium PATH); without it the script exits 2 saying so.
--json prints one JSON object as the last line: experiment id and kind, run statuses, the screenshots' paths and sizes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ringctl.pipeline.launchers import free_port

REPO = Path(__file__).resolve().parents[1]
VIEWS = {"runs": "?workflowType=machine_learning", "default": ""}


def chromium_binary(explicit: str | None = None) -> str | None:
    """The browser to use: `explicit`, else the first of chromium, chromium-browser, google-chrome on PATH."""
    names = [explicit] if explicit else ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    return next((p for p in map(shutil.which, names) if p), None)


class MlflowUI:
    """`mlflow ui` on a sqlite store, 127.0.0.1 and a free port, in its own process group (stopped as a whole)."""

    def __init__(self, db: Path, log: Path):
        self.db, self.log = db.resolve(), log
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MlflowUI:
        exe = Path(sys.executable).parent / "mlflow"
        cmd = [str(exe) if exe.exists() else (shutil.which("mlflow") or "mlflow"), "ui", "--backend-store-uri",
               f"sqlite:///{self.db}", "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]]
        with open(self.log, "wb") as log:  # run where the store is: runs' artifacts are relative to it (./mlruns)
            self.proc = subprocess.Popen(cmd, cwd=self.db.parent, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        tail = self.log.read_text(errors="replace")[-2000:]
        sys.exit(f"`mlflow ui` did not answer {self.url}/health within 120 s (exit {self.proc.poll()}):\n{tail}")

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def api(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def screenshot(chromium: str, url: str, png: Path, budget_ms: int) -> None:
    """Load `url` in a fresh headless browser and save the page as `png` once `budget_ms` of page time passed."""
    with tempfile.TemporaryDirectory(prefix="ringctl-chromium-") as profile:
        cmd = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", url]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        png.unlink(missing_ok=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 180)
    if proc.returncode != 0 or not png.exists() or png.stat().st_size == 0:
        sys.exit(f"chromium did not write {png} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def run_demo(workdir: Path) -> Path:
    """Run recipes/filter-demo.yaml in `workdir` with its own sqlite store; returns the store's path."""
    db = workdir / "mlflow.db"
    cmd = [sys.executable, "-m", "ringctl", "run", str(REPO / "recipes" / "filter-demo.yaml"),
           "--workdir", str(workdir / "runs"), "--tracking-uri", f"sqlite:///{db}", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ringctl run recipes/filter-demo.yaml exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return db


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="an existing sqlite tracking store (default: run filter-demo first)")
    ap.add_argument("--experiment", default="ringctl", help="the recipe's tracking.experiment")
    ap.add_argument("--out", type=Path, default=Path("mlflow-ui-screenshots"), help="where the PNGs go")
    ap.add_argument("--chromium", help="the browser binary (default: chromium, chromium-browser, google-chrome)")
    ap.add_argument("--budget-ms", type=int, default=20000, help="page time before the screenshot")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    chromium = chromium_binary(args.chromium)
    if chromium is None:
        sys.stderr.write(f"error: no Chromium found ({args.chromium or 'chromium, chromium-browser, google-chrome'}); "
                         f"install it (Debian: apt-get install chromium) or give --chromium PATH\n")
        sys.exit(2)
    if args.db is not None and not args.db.is_file():
        sys.stderr.write(f"error: --db {args.db}: no such file\n")
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ringctl-mlflow-ui-") as tmp:
        db = args.db or run_demo(Path(tmp))
        with MlflowUI(db, args.out / "mlflow-ui.log") as ui:
            exp = ui.api(f"experiments/get-by-name?experiment_name={args.experiment}")["experiment"]
            runs = ui.api("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})
            statuses = collections.Counter(r["info"]["status"] for r in runs.get("runs", []))
            page = f"{ui.url}/#/experiments/{exp['experiment_id']}"
            shots = {}
            for view, query in VIEWS.items():
                png = (args.out / f"{view}.png").resolve()
                screenshot(chromium, page + query, png, args.budget_ms)
                shots[view] = {"url": page + query, "png": str(png), "bytes": png.stat().st_size}
    kind = {t["key"]: t["value"] for t in exp.get("tags", [])}.get("mlflow.experimentKind")
    from importlib.metadata import version

    result = {"bench": "mlflow_ui_screenshot", "mlflow": version("mlflow"), "experiment": args.experiment,
              "experiment_id": exp["experiment_id"], "experiment_kind": kind, "runs": sum(statuses.values()),
              "statuses": dict(statuses), "screenshots": shots}
    if not args.json:
        print(f"MLflow {result['mlflow']}: experiment {args.experiment!r} (id {exp['experiment_id']}, "
              f"mlflow.experimentKind={kind}), {result['runs']} runs {dict(statuses)}", file=sys.stderr)
        for view, shot in shots.items():
            print(f"  {view:8s} {shot['png']}  ({shot['url'].split('/#', 1)[1]})", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
