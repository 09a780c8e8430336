"""Chaos resume: SIGKILL the tiny pipeline at N random moments, `ringctl resume` after each, and compare the end
with an uninterrupted run of the same recipe on the same machine.

    python bench/chaos_resume.py --kills 8 --seed 0 --json [--recipe recipes/tiny.yaml] [--keep DIR] [OVERRIDE ...]

1. Reference: the recipe runs uninterrupted with every kill point of `ringctl.chaos` logging when it is reached
   (inside checkpoint and output-directory writes before their rename, after a manifest's hashing, inside the
   manifest write, after a stage returned, after a stage process exited, inside state-file writes).
2. N moments are drawn with a seeded RNG from that reference: about half are time offsets (a uniform point of the
   run's timeline, i.e. a stage and an offset into it: data filtering, an SFT step, select's probe, an RL step),
   the others kill points (a kind of point uniformly, then one of its hits). They are sorted along the timeline.
   A moment whose stage finishes before it comes is "not reached" and replaced by one drawn later in the timeline.
3. Chaos run: the same recipe, each moment armed in turn; at the moment the whole process group (orchestrator,
   stage, tracking helper) gets SIGKILL; then `ringctl resume`; a moment whose stage finished first is "not
   reached". After the last moment the run is resumed to the end.
4. Checks: the run completes; every stage's metrics.jsonl equals the reference's (timing keys dropped); every
   stage that had finished (intact manifest) at a kill was never launched again; the outputs' model weights and
   data files have the reference's sha256.

By default the recipe is shortened with DEFAULT_OVERRIDES (2 SFT epochs, 12 RL steps with a state every 4), so a
run with 8 kills takes minutes on 2 cores; give overrides (or `--no-default-overrides`) to change that.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OVERRIDES = ["stages.sft.epochs=2", "stages.reasoning_rl.steps=12", "stages.reasoning_rl.save_every=4"]
TIMING_PREFIXES = ("time/", "throughput/")
POINTS = ("checkpoint-write", "outputs-write", "manifest-hashed", "manifest-write", "stage-returned", "stage-exited",
          "state-write")
COMPARED_SUFFIXES = (".safetensors", ".jsonl", ".bin", ".pt")


def _env(arm: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "RINGCTL_CHAOS_FILE": str(arm)})
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _is_timing(key: str) -> bool:
    return key.startswith(TIMING_PREFIXES) or key.endswith("_per_s")


def stage_metrics(stage_dir: Path) -> list[dict]:
    p = stage_dir / "metrics.jsonl"
    if not p.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if not _is_timing(k)}
            for line in p.read_text().splitlines() if line.strip()]


def _read_jsonl(p: Path) -> list[dict]:
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _launches(run_dir: Path, stage: str) -> int:
    log = run_dir / stage / "stage.log"
    return log.read_text(errors="replace").count(" launching: ") if log.exists() else 0


def _finished(run_dir: Path) -> list[str]:
    """Stages whose manifest exists and whose outputs match it (sha256): finished, whatever state.json says."""
    from ringctl import artifacts

    out = []
    for name in _state(run_dir).get("order", []):
        m = artifacts.read_manifest(run_dir / name)
        if m is not None and not artifacts.manifest_problems(m, verify_hashes=True):
            out.append(name)
    return out


def _partial_writes(run_dir: Path) -> list[str]:
    """Leftovers of writes cut by the kill: temporary directories and files that were never renamed into place."""
    found = []
    for p in run_dir.rglob("*"):
        if p.name.startswith((".tmp-", ".old-")) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            found.append(str(p.relative_to(run_dir)))
    return sorted(found)


def _output_hashes(run_dir: Path) -> dict[str, str]:
    from ringctl import artifacts

    out = {}
    for name in _state(run_dir).get("order", []):
        m = artifacts.read_manifest(run_dir / name) or {}
        for o, rec in m.get("outputs", {}).items():
            for f in rec.get("files", []):
                if f["path"].endswith(COMPARED_SUFFIXES):
                    out[f"{name}/{o}/{f['path']}"] = f["sha256"]
    return out


class Invocation:
    def __init__(self, argv: list[str], env: dict, log_path: Path):
        self.t0 = time.time()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ringctl", *argv], cwd=REPO, env=env,
                                     stdout=self.log, stderr=self.log, start_new_session=True)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and not self.log.closed:
            self.log.close()
        return rc


def reference(work: Path, recipe: str, overrides: list[str], say) -> dict:
    arm = work / "ref.arm"
    arm.write_text("{}")
    run_id = "reference"
    t0 = time.time()
    inv = Invocation(["run", recipe, *overrides, "--workdir", str(work / "runs-ref"), "--run-id", run_id,
                      "--tracking-uri", f"sqlite:///{work / 'ref-mlflow.db'}"], _env(arm), work / "ref.log")
    rc = inv.proc.wait()
    if rc != 0:
        raise SystemExit(f"the reference run failed (exit {rc}); see {work / 'ref.log'}")
    run_dir = work / "runs-ref" / run_id
    st = _state(run_dir)
    say(f"reference run: {time.time() - t0:.0f}s, stages " +
        ", ".join(f"{n} {st['stages'][n]['ended'] - st['stages'][n]['started']:.1f}s" for n in st["order"]))
    return {"run_dir": run_dir, "state": st, "hits": _read_jsonl(Path(str(arm) + ".hits.jsonl")),
            "elapsed": time.time() - t0}


class Moments:
    """Random kill moments from a reference run (seeded): `first(n)` draws n along the whole timeline; `after(t)`
    draws a replacement later than reference time t (for a moment whose stage finished before it came)."""

    def __init__(self, ref: dict, seed: int):
        self.rng = random.Random(seed)
        st = ref["state"]
        self.spans = [(n, st["stages"][n]["started"], st["stages"][n]["ended"]) for n in st["order"]]
        self.t_first, self.t_last = self.spans[0][1], self.spans[-1][2]
        self.by_point: dict[str, list[dict]] = {}
        seen: dict[tuple, int] = {}
        for h in sorted(ref["hits"], key=lambda h: h["time"]):
            if not self.t_first <= h["time"] <= self.t_last or h["point"] not in POINTS:
                continue
            k = seen[(h["point"], h["stage"])] = seen.get((h["point"], h["stage"]), 0) + 1
            self.by_point.setdefault(h["point"], []).append({**h, "k": k})
        self.next_id = 0

    def first(self, n: int) -> list[dict]:
        moments = sorted((self.after(self.t_first) for _ in range(n)), key=lambda m: m["ref_time"])
        for i, m in enumerate(moments):  # numbered along the timeline
            m["id"] = i
        return moments

    def after(self, t0: float) -> dict:
        rng = self.rng
        points = {p: [h for h in hs if h["time"] > t0] for p, hs in self.by_point.items()}
        points = {p: hs for p, hs in points.items() if hs}
        if rng.random() < 0.5 or not points:
            u = rng.uniform(t0, self.t_last)
            name, start, end = next((s for s in self.spans if s[2] >= u), self.spans[-1])
            # at most 80% into the stage: a stage runs a little faster or slower from one run to the next
            offset = min(max(0.0, u - start), 0.8 * (end - start))
            m = {"type": "time", "stage": name, "offset_s": round(offset, 2), "ref_time": start + offset,
                 "ref_start": start, "describe": f"{offset:.1f}s into stage {name} (of {end - start:.1f}s)"}
        else:
            point = rng.choice(sorted(points))
            h = rng.choice(points[point])
            where = f"stage {h['stage']}" if h["stage"] else f"the orchestrator (during {_stage_at(self.spans, h['time'])})"
            m = {"type": "point", "point": point, "stage": h["stage"], "k": h["k"], "ref_time": h["time"],
                 "describe": f"{point} #{h['k']} in {where}"}
        m["id"] = self.next_id
        self.next_id += 1
        return m

    def stage_end(self, stage: str) -> float:
        return next((e for n, _, e in self.spans if n == stage), self.t_last)


def _stage_at(spans, t: float) -> str:
    return next((n for n, s, e in spans if s <= t <= e), "a transition")


def chaos_run(work: Path, recipe: str, overrides: list[str], ref: dict, draw: Moments, kills_wanted: int, say,
              timeout: float = 3600) -> dict:
    arm = work / "chaos.arm"
    arm.write_text("{}")
    env = _env(arm)
    run_id = "chaos"
    wd = work / "runs-chaos"
    run_dir = wd / run_id
    common = ["--workdir", str(wd), "--tracking-uri", f"sqlite:///{work / 'chaos-mlflow.db'}"]
    log = work / "chaos.log"
    inv = Invocation(["run", recipe, *overrides, "--run-id", run_id, *common], env, log)
    invocations = 1
    fired = Path(str(arm) + ".fired.jsonl")
    prev_ref_time = 0.0
    kills: list[dict] = []
    pending = draw.first(kills_wanted)
    moments: list[dict] = []
    deadline = time.time() + timeout
    while pending:
        m = pending.pop(0)
        moments.append(m)
        if inv is None:
            inv = Invocation(["resume", run_id, *common], env, log)
            invocations += 1
        if m["type"] == "point":
            # count hits since the last kill: a resumed stage starts again from its last checkpoint
            nth = max(1, sum(1 for h in ref["hits"] if h["point"] == m["point"] and h["stage"] == m["stage"]
                             and prev_ref_time < h["time"] <= m["ref_time"]))
            arm.write_text(json.dumps({"id": m["id"], "point": m["point"], "stage": m["stage"], "nth": nth}))
            m["armed_nth"] = nth
        else:
            arm.write_text("{}")
            # a stage resumed after a kill inside it restarts from its last checkpoint: wait only for the rest
            m["wait_s"] = round(m["offset_s"] - max(0.0, prev_ref_time - m["ref_start"]), 2)
        outcome, started_at = None, None
        while outcome is None:
            if time.time() > deadline:
                inv.kill()
                raise SystemExit("chaos run timed out")
            rc = inv.poll()
            st = _state(run_dir)
            stage = st.get("stages", {}).get(m["stage"], {}) if m["stage"] else {}
            if rc is not None:
                fired_ids = {f.get("id") for f in _read_jsonl(fired)}
                if rc == -signal.SIGKILL and m["id"] in fired_ids:
                    outcome = "killed"
                elif rc == 0:
                    outcome = "not reached: the run completed first"
                else:
                    outcome = f"the invocation ended with exit code {rc} before the moment"
                break
            if m["type"] == "time" and stage.get("status") == "running" and (stage.get("started") or 0) >= inv.t0:
                started_at = started_at or time.time()
                if time.time() - started_at >= m["wait_s"]:
                    inv.kill()
                    outcome = "killed"
                    break
            elif m["stage"] and stage.get("status") in ("completed", "cached"):
                outcome = "not reached: the stage finished first"
            time.sleep(0.02)
        m["outcome"] = outcome
        if outcome == "killed":
            if inv.poll() is None:
                inv.kill()
            m["finished_at_kill"] = _finished(run_dir)
            m["launches_at_kill"] = {n: _launches(run_dir, n) for n in _state(run_dir).get("order", [])}
            m["partial_writes"] = _partial_writes(run_dir)
            m["state_at_kill"] = {n: s["status"] for n, s in _state(run_dir).get("stages", {}).items()}
            prev_ref_time = m["ref_time"]
            kills.append(m)
            inv = None
        say(f"moment {m['id']}: {m['describe']}: {outcome}"
            + (f"; unfinished writes left: {m['partial_writes']}" if m.get("partial_writes") else ""))
        if outcome.startswith("the invocation ended"):
            raise SystemExit(f"chaos: {outcome}; see {log}")
        if outcome == "not reached: the run completed first":
            for rest in pending:
                rest["outcome"] = "not reached: the run completed first"
            moments.extend(pending)
            break
        if outcome.startswith("not reached") and len(kills) + len(pending) < kills_wanted:
            # a replacement later along the timeline, drawn from the same seeded sequence
            new = draw.after(max(m["ref_time"], draw.stage_end(m["stage"]) if m["stage"] else m["ref_time"]))
            new["replaces"] = m["id"]
            pending = sorted([*pending, new], key=lambda x: x["ref_time"])
    arm.write_text("{}")
    if inv is None:
        inv = Invocation(["resume", run_id, *common], env, log)
        invocations += 1
    rc = inv.proc.wait(timeout=max(1, deadline - time.time()))
    inv.poll()
    return {"run_dir": run_dir, "rc": rc, "invocations": invocations, "kills": kills, "moments": moments}


def compare(ref: dict, chaos: dict) -> dict:
    ref_dir, run_dir = ref["run_dir"], chaos["run_dir"]
    st = _state(run_dir)
    order = st.get("order", [])
    metrics_equal = {n: stage_metrics(ref_dir / n) == stage_metrics(run_dir / n) for n in order}
    reruns = []
    for m in chaos["kills"]:
        for n in m.get("finished_at_kill", []):
            if _launches(run_dir, n) != m["launches_at_kill"].get(n):
                reruns.append(f"{n} (finished before moment {m['id']}) was launched again")
    ref_h, chaos_h = _output_hashes(ref_dir), _output_hashes(run_dir)
    return {"completed": chaos["rc"] == 0 and st.get("status") == "completed",
            "stage_status": {n: st["stages"][n]["status"] for n in order},
            "metrics_equal": metrics_equal, "equal_metrics": all(metrics_equal.values()) and bool(order),
            "finished_stages_rerun": reruns,
            "outputs_compared": len(ref_h), "equal_outputs": bool(ref_h) and ref_h == chaos_h,
            "launches": {n: _launches(run_dir, n) for n in order}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "tiny.yaml"))
    ap.add_argument("--keep", type=Path, default=None, help="work here (kept) instead of a temporary directory")
    ap.add_argument("--no-default-overrides", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    overrides = ([] if args.no_default_overrides else DEFAULT_OVERRIDES) + args.overrides

    def say(msg: str) -> None:
        print(f"[chaos] {msg}", file=sys.stderr, flush=True)

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="ringctl-chaos-")
        work = Path(tmp.name)
    else:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    try:
        say(f"seed {args.seed}, {args.kills} moments, recipe {args.recipe} {' '.join(overrides)}; work dir {work}")
        ref = reference(work, args.recipe, overrides, say)
        t0 = time.time()
        chaos = chaos_run(work, args.recipe, overrides, ref, Moments(ref, args.seed), args.kills, say)
        result = compare(ref, chaos)
        ok = result["completed"] and result["equal_metrics"] and not result["finished_stages_rerun"] \
            and result["equal_outputs"]
        n_killed = len(chaos["kills"])
        doc = {"bench": "chaos_resume", "metric": "kills resumed to the uninterrupted run's metrics and outputs",
               "ringctl": n_killed if ok else 0, "uninterrupted": 1, "ratio": 1.0 if ok else 0.0, "ok": ok,
               "seed": args.seed, "kills_requested": args.kills, "kills": n_killed, "overrides": overrides,
               "reference_s": round(ref["elapsed"], 1), "chaos_s": round(time.time() - t0, 1),
               "invocations": chaos["invocations"], **result,
               "moments": [{k: m.get(k) for k in ("id", "type", "describe", "stage", "point", "k", "armed_nth",
                                                  "offset_s", "wait_s", "outcome", "replaces", "finished_at_kill",
                                                  "state_at_kill", "partial_writes")} for m in chaos["moments"]]}
    finally:
        if tmp is not None:
            tmp.cleanup()
    say(f"{n_killed} kills; completed {result['completed']}; metrics equal {result['equal_metrics']}; outputs equal "
        f"{result['equal_outputs']} ({result['outputs_compared']} files); finished stages rerun: "
        f"{result['finished_stages_rerun'] or 'none'}")
    if args.json:
        print(json.dumps(doc))
    return doc


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
