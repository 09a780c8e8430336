"""Sandbox throughput: trivial Python programs executed per second (goal >= 50/s on 2 cores).

    .venv/bin/python bench/sandbox.py [--n 100] [--workers 2] [--backend auto|bwrap|unshare] [--json]

With --json the last stdout line is {"bench": "sandbox", "metric": "executions_per_s", "ringctl": <value>, ...}.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from ringctl.rewards.sandbox import SandboxConfig, choose_backend, run_python

PROGRAM = "print(sum(range(10)))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--python", default=None, help="interpreter inside the sandbox (default: this one)")
    parser.add_argument("--site", action="store_true", help="let programs import site-packages (python without -S; "
                        "the default is -S, stdlib only, as SandboxConfig.no_site defaults to true)")
    parser.add_argument("--backend", default="auto", choices=["auto", "bwrap", "unshare"],
                        help="sandbox backend (auto: bwrap, else unshare)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = SandboxConfig(no_site=not args.site, backend=args.backend,
                           **({"python": args.python} if args.python else {}))
    backend = choose_backend(config)
    run_python(PROGRAM, config)  # warm-up: page cache, backend probe
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:  # each execution is a separate process; threads just wait
        results = list(pool.map(lambda _: run_python(PROGRAM, config), range(args.n)))
    seconds = time.perf_counter() - start
    ok = sum(r.stdout.strip() == "45" and r.returncode == 0 for r in results)
    rate = args.n / seconds
    report = {"bench": "sandbox", "metric": "executions_per_s", "ringctl": round(rate, 2), "n": args.n,
              "workers": args.workers, "correct": ok, "seconds": round(seconds, 3), "isolation": backend,
              "python": config.interpreter, "site_packages": args.site}
    if not args.json:
        print(f"{args.n} executions ({ok} correct) in {seconds:.2f}s with {args.workers} workers "
              f"[{backend}]: {rate:.1f}/s")
    print(json.dumps(report) if args.json else "")


if __name__ == "__main__":
    main()
