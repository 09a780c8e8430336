"""Throughput and memory of the data_filter stage on synthetic records (default 1M).

    .venv/bin/python bench/filter_throughput.py --records 1000000 --json

1. writes N demo records (duplicates, near duplicates, guessable formats, ... included) to a JSONL file;
2. runs the data_filter stage on it, in a fresh process each, (a) with the full step list
   (characters, length, exact_dedup, near_dedup, guessable_formats, decontaminate against the shipped MATH-500
   and GSM8K) and (b) with exact_dedup only;
3. anchor: pandas, the naive in-memory way (read_json -> same normalisation -> drop_duplicates -> to_json),
   on the same file. The ratio compares like with like: ringctl exact_dedup only / pandas.
Last stdout line with --json: {"bench": "filter_throughput", "metric": "records_per_s", "ringctl": <full
pipeline records/s>, "pandas": <records/s>, "ratio": <ringctl exact_dedup / pandas>, ...details incl. peak RSS}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(path: Path, n_records: int, seed: int) -> float:
    from ringctl.data.demo import DemoSource, generate_demo_records
    from ringctl.data.records import write_jsonl

    # mess fractions add ~19% on top of the unique items; cut the stream at exactly n_records
    cfg = DemoSource(n=int(n_records / 1.19) + 100, seed=seed)
    t0 = time.perf_counter()
    written = write_jsonl(path, itertools.islice(generate_demo_records(cfg), n_records))
    assert written == n_records, (written, n_records)
    return time.perf_counter() - t0


def full_steps() -> list[dict]:
    steps = [{"type": "characters"}, {"type": "length", "max_chars": 2000}, {"type": "exact_dedup"},
             {"type": "near_dedup", "threshold": 0.7, "num_perm": 128}, {"type": "guessable_formats"}]
    # the shipped benchmark copies (or $RINGCTL_BENCHMARKS_DIR)
    steps.append({"type": "decontaminate", "benchmarks": ["math500", "gsm8k"], "n": 8, "threshold": 0.5})
    return steps


def worker_ringctl(data: Path, steps: list[dict]) -> dict:
    import importlib

    from ringctl.pipeline.context import StageContext

    data_filter = importlib.import_module("stages.data_filter")
    cfg = data_filter.Config(sources=[{"path": str(data), "preset": "records"}], steps=steps, print_table=False,
                             splits={"rl_reasoning": {"domains": ["math", "code", "science"]}},
                             default_split="rl_general")
    with tempfile.TemporaryDirectory(dir=data.parent) as tmp:
        ctx = StageContext.for_test(Path(tmp), stage_name="bench")
        t0 = time.perf_counter()
        out = data_filter.run(cfg, ctx)
        elapsed = time.perf_counter() - t0
        report = json.loads(out["report"].path.read_text())
    return {"elapsed_s": elapsed, "records": report["read"], "kept": report["kept"],
            "records_per_s": report["read"] / elapsed, "peak_rss_mb": peak_rss_mb(),
            "dropped": {s["name"]: s["dropped"] for s in report["steps"]}}


def worker_pandas(data: Path) -> dict:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_json(data, lines=True)
    key = df["prompt"].str.normalize("NFKC").str.casefold().str.replace(r"\s+", " ", regex=True).str.strip()
    kept = df.loc[~key.duplicated()]
    with tempfile.TemporaryDirectory(dir=data.parent) as tmp:
        kept.to_json(Path(tmp) / "all.jsonl", orient="records", lines=True, force_ascii=False)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "records": len(df), "kept": len(kept), "records_per_s": len(df) / elapsed,
            "peak_rss_mb": peak_rss_mb()}


def run_worker(kind: str, data: Path) -> dict:
    """Each measurement in its own process, so that peak RSS is that run's own."""
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--data", str(data)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    ap.add_argument("--no-anchor", action="store_true", help="skip the pandas baseline")
    ap.add_argument("--worker", choices=["full", "exact", "pandas"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        if args.worker == "pandas":
            result = worker_pandas(args.data)
        else:
            result = worker_ringctl(args.data, full_steps() if args.worker == "full" else [{"type": "exact_dedup"}])
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="ringctl-filter-bench-") as tmp:
        data = Path(tmp) / "records.jsonl"
        gen_s = generate(data, args.records, args.seed)
        size_mb = data.stat().st_size / 2**20
        print(f"generated {args.records} records ({size_mb:.0f} MiB) in {gen_s:.1f} s", file=sys.stderr)
        full = run_worker("full", data)
        print(f"ringctl full pipeline: {full['records_per_s']:.0f} records/s, peak RSS {full['peak_rss_mb']:.0f} MiB,"
              f" dropped {full['dropped']}", file=sys.stderr)
        exact = run_worker("exact", data)
        print(f"ringctl exact_dedup only: {exact['records_per_s']:.0f} records/s, "
              f"peak RSS {exact['peak_rss_mb']:.0f} MiB", file=sys.stderr)
        anchor = None if args.no_anchor else run_worker("pandas", data)
        if anchor:
            print(f"pandas drop_duplicates: {anchor['records_per_s']:.0f} records/s, "
                  f"peak RSS {anchor['peak_rss_mb']:.0f} MiB", file=sys.stderr)
            assert anchor["kept"] == exact["kept"], ("exact dedup disagrees with pandas", exact, anchor)

    result = {"bench": "filter_throughput", "metric": "records_per_s", "ringctl": round(full["records_per_s"], 1)}
    if anchor:
        result.update({"pandas": round(anchor["records_per_s"], 1),
                       "ratio": round(exact["records_per_s"] / anchor["records_per_s"], 3),
                       "ratio_of": "exact_dedup only (stream, hashes) / pandas drop_duplicates (in memory)",
                       "pandas_peak_rss_mb": round(anchor["peak_rss_mb"], 1)})
    result.update({
        "records": args.records, "input_mib": round(size_mb, 1), "cpu_count": os.cpu_count(),
        "full_steps": [s["type"] for s in full_steps()], "full_elapsed_s": round(full["elapsed_s"], 2),
        "full_peak_rss_mb": round(full["peak_rss_mb"], 1), "full_kept": full["kept"], "full_dropped": full["dropped"],
        "exact_dedup_records_per_s": round(exact["records_per_s"], 1),
        "exact_dedup_peak_rss_mb": round(exact["peak_rss_mb"], 1), "exact_dedup_kept": exact["kept"],
    })
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
