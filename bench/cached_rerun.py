"""Wall time of a fully cached rerun of recipes/filter-demo.yaml (goal: under 3 s), against the first run.

    python bench/cached_rerun.py [--repeat 3] [--json]

Runs the recipe once in a temporary working directory (sqlite MLflow store there), then reruns it `repeat`
times; every rerun must be entirely `cached`. "ratio" is first-run time / cached-rerun time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(cwd: str, recipe: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ringctl", "run", str(recipe), "--json"], cwd=cwd,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"ringctl run failed:\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "filter-demo.yaml"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        first, _ = run_once(cwd, Path(args.recipe))
        times = []
        for _ in range(args.repeat):
            t, doc = run_once(cwd, Path(args.recipe))
            if any(s["status"] != "cached" for s in doc["stages"]):
                sys.exit(f"rerun was not fully cached: {[(s['name'], s['status']) for s in doc['stages']]}")
            times.append(t)
    cached = statistics.median(times)
    result = {"bench": "cached_rerun", "metric": "seconds", "ringctl": round(cached, 3),
              "first_run": round(first, 3), "ratio": round(first / cached, 2), "goal_seconds": 3.0,
              "stages": len(doc["stages"]), "repeat": args.repeat}
    if not args.json:
        print(f"first run {first:.2f} s, fully cached rerun {cached:.2f} s (median of {args.repeat})",
              file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
