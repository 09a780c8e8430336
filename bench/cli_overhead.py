"""CLI start-up overhead: median wall time of `ringctl --help` and `ringctl validate <recipe>` (subprocesses).

    python bench/cli_overhead.py [--repeat 15] [--recipe recipes/tiny.yaml] [--json]

There is no external anchor for start-up time; `python -c pass` is measured beside it as the floor, and
"ratio" is python-floor / ringctl (1.0 would mean ringctl adds nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_ms(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes" / "filter-demo.yaml"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    floor = median_ms([py, "-c", "pass"], args.repeat)
    help_ms = median_ms([py, "-m", "ringctl", "--help"], args.repeat)
    validate_ms = median_ms([py, "-m", "ringctl", "validate", args.recipe], max(3, args.repeat // 3))
    result = {"bench": "cli_overhead", "metric": "help_median_ms", "ringctl": round(help_ms, 1),
              "python_floor": round(floor, 1), "ratio": round(floor / help_ms, 3),
              "validate_median_ms": round(validate_ms, 1), "repeat": args.repeat, "goal_help_ms": 300}
    if not args.json:
        print(f"ringctl --help: {help_ms:.0f} ms median (python floor {floor:.0f} ms); "
              f"validate: {validate_ms:.0f} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
