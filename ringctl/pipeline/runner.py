"""The runner: walks the DAG in topological order; each stage is cached, skipped (already done in this run),
or run in its own process through its launcher. Signals are forwarded so a stage stops at a step boundary.
A stage whose processes are lost (a rank killed, a node lost) or hang (no heartbeat for `hang_timeout`) is resumed
from its latest checkpoint up to `retries` times (ringctl.pipeline.watchdog has the rule); its own errors are not.

Stage statuses: pending -> running -> completed | failed | interrupted; or cached (outputs reused).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ringctl import artifacts, chaos
from ringctl.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE_FAILED
from ringctl.pipeline import launchers, watchdog
from ringctl.pipeline.cache import StageCache
from ringctl.pipeline.fingerprint import FingerprintParts, explain_change, stage_fingerprint
from ringctl.pipeline.stage_main import ENV_FINGERPRINT, ENV_MLFLOW_RUN_ID, ENV_TRACKING_URI, INPUTS_FILE
from ringctl.pipeline.state import DONE, RESOLVED_RECIPE, RunState
from ringctl.recipe.dag import topological_order
from ringctl.tracking import ENV_TRACKING_OFFLINE, Journal, short_reason

Observer = Callable[[str, str, dict], None]  # (stage, status, info)


@dataclass
class PlanEntry:
    name: str
    kind: str
    depends_on: list[str]
    would_run: bool
    reason: str
    fingerprint: str
    parts: FingerprintParts = field(repr=False, default=None)
    cached: dict | None = field(repr=False, default=None)


def plan(recipe, workdir: Path, state: RunState | None = None, rerun_stages: Iterable[str] = (),
         verify: bool | str = "changed") -> list[PlanEntry]:
    """For each stage: would it run, and why (which part of its fingerprint changed).

    `rerun_stages` (`ringctl run --rerun NAME`) ignore the cache for those stages: they run again even when
    outputs with their fingerprint exist; the stages after them reuse the cache when their fingerprint is
    unchanged (a fingerprint hashes the inputs' fingerprints, not the outputs' bytes). A run remembers its forced
    stages in its state file, so `resume` does not take them from the cache either."""
    from ringctl.recipe.dag import dependencies

    forced = set(rerun_stages) | set((state.data.get("rerun") or []) if state is not None else [])
    cache = StageCache(workdir)
    fps: dict[str, str] = {}
    rerun: set[str] = set()
    entries = []
    for name in topological_order(recipe.stages):
        cfg = recipe.stages[name]
        deps = dependencies(cfg)
        from ringctl.recipe.base import iter_refs

        inputs = {str(ref): fps[ref.stage] for _, ref in iter_refs(cfg)}
        parts = stage_fingerprint(name, cfg, recipe, inputs)
        fp = parts.fingerprint
        fps[name] = fp
        done_here = state is not None and state.stage(name)["status"] in DONE and \
            state.stage(name)["fingerprint"] == fp
        hit = None if name in forced else cache.lookup(fp, verify)
        if done_here:
            entries.append(PlanEntry(name, cfg.kind, deps, False, f"{state.stage(name)['status']} in this run", fp,
                                     parts, hit))
            continue
        if hit is not None:
            entries.append(PlanEntry(name, cfg.kind, deps, False, f"cached (outputs of run {hit['run_id']})", fp,
                                     parts, hit))
            continue
        last = cache.last_parts(recipe.name, name)
        if name in forced:
            reason = "forced with --rerun"
        elif last is None:
            reason = "never run"
        else:
            reasons = explain_change(last["parts"], parts)
            changed_deps = [d for d in deps if d in rerun]
            if not reasons:
                reason = "outputs of the last run are missing or modified"
            else:
                reason = "; ".join(reasons[:6]) + (f" (+{len(reasons) - 6} more)" if len(reasons) > 6 else "")
            if changed_deps and all(r.startswith("input ") for r in reasons):
                reason = f"upstream stage(s) {', '.join(changed_deps)} will rerun"
        rerun.add(name)
        entries.append(PlanEntry(name, cfg.kind, deps, True, reason, fp, parts, None))
    return entries


class Runner:
    def __init__(self, loaded, state: RunState, workdir: Path, tracking, observer: Observer | None = None,
                 log_policy: str = "final", resume: bool = False, notify: Callable[[str], None] | None = None):
        self.loaded = loaded
        self.recipe = loaded.recipe
        self.state = state
        self.workdir = Path(workdir)
        self.tracking = tracking
        self.observer = observer or (lambda stage, status, info: None)
        self.cache = StageCache(workdir)
        self.log_policy = log_policy
        self.resume = resume
        self._stop_requested = 0
        self._child: subprocess.Popen | None = None
        self._hang: str | None = None  # why the watchdog killed the current attempt
        self.notify = notify or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
        self.journal = Journal(state.run_dir)
        self._told = False
        self.offline = tracking is None or not state.data.get("mlflow_run_id")
        if tracking is not None and hasattr(tracking, "stop_requested"):
            tracking.stop_requested = lambda: self._stop_requested > 0  # tracking calls give way to Ctrl-C
        if self.offline and state.data.get("tracking_uri"):
            self.go_offline("no connection at the start of the run")

    # -- tracking is best effort: the local state file is the source of truth --------------------------
    def _track(self, op: str, *args, stage: str | None = None, **kwargs):
        """Call `self.tracking.<op>`; after the first failure (or with no server at all) the run is offline: no
        more calls, each skipped operation is noted in the run's journal and `ringctl sync` reconciles later."""
        if not self.offline:
            try:
                return getattr(self.tracking, op)(*args, **kwargs)
            except Exception as e:  # an unreachable tracking server must not lose (or hold up) the run
                self.go_offline(short_reason(e))
        self.journal.add(op, stage=stage)
        return None

    def go_offline(self, reason: str) -> None:
        if self.offline and self._told:
            return
        self.offline = True
        self.journal.add("offline", error=reason)
        if not self._told:
            self._told = True
            self.notify(f"MLflow at {self.state.data.get('tracking_uri')} is unreachable ({reason}); the run goes on "
                        f"and keeps what is not sent in {self.journal.path}; `ringctl sync {self.state.run_id}` "
                        f"uploads it once the server is back")

    # -- signals -----------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._stop_requested += 1
        child = self._child
        if child is not None and child.poll() is None:
            # first signal: ask the stage to stop at a step boundary; second: kill it
            sig = signal.SIGTERM if self._stop_requested == 1 else signal.SIGKILL
            try:
                os.kill(child.pid, sig)
            except ProcessLookupError:
                pass

    def _install_signals(self):
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in old:
            signal.signal(s, self._on_signal)
        return old

    # -- main loop ---------------------------------------------------------------------------------------
    def execute(self) -> int:
        old = self._install_signals()
        try:
            return self._execute()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _execute(self) -> int:
        # a resume follows a crash: every sha256 is checked (a torn output is redone, never trusted)
        verify = True if self.resume else "changed"
        if self.resume:
            artifacts.clean_partial(self.state.run_dir)  # e.g. a state.json write cut by the kill
        entries = {e.name: e for e in plan(self.recipe, self.workdir, self.state, verify=verify)}
        self.state.set_status("running")
        for name in topological_order(self.recipe.stages):
            if self._stop_requested:
                return self._finish("interrupted")
            entry = entries[name]
            st = self.state.stage(name)
            if st["status"] in DONE and (self.resume or st["fingerprint"] == entry.fingerprint):
                problems = self._torn(name) if self.resume else []
                if not problems:
                    self.observer(name, st["status"], {"skipped": True})
                    continue
                self._redo(name, f"its outputs are not intact ({'; '.join(problems[:3])})")
                st = self.state.stage(name)
            if entry.cached is not None and st["status"] not in ("running", "interrupted", "failed"):
                self._use_cache(name, entry)
                continue
            code = self._run_stage(name, entry)
            if code != EXIT_OK:
                return self._finish("interrupted" if code == EXIT_INTERRUPTED or self._stop_requested else "failed")
        return self._finish("completed")

    def _torn(self, name: str) -> list[str]:
        st = self.state.stage(name)
        manifest = artifacts.read_manifest(Path(st["stage_dir"])) if st.get("stage_dir") else None
        if manifest is None:
            return ["no manifest"]
        return artifacts.manifest_problems(manifest, verify_hashes=True)

    def _redo(self, name: str, reason: str) -> None:
        """Run a stage again from scratch: its own directory (never another run's) is removed first."""
        st = self.state.stage(name)
        stage_dir = Path(st["stage_dir"]) if st.get("stage_dir") else None
        if stage_dir is not None and stage_dir.resolve().parent == self.state.run_dir.resolve():
            shutil.rmtree(stage_dir, ignore_errors=True)
        self.notify(f"stage {name}: {reason}; running it again")
        self.state.set_stage(name, status="pending", outputs={}, stage_dir=None, ended=None)

    def _finish(self, status: str) -> int:
        self.state.set_status(status)
        if self.state.data.get("mlflow_run_id"):
            self._track("finish", self.state.data["mlflow_run_id"], status)
        return {"completed": EXIT_OK, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_STAGE_FAILED)

    def _use_cache(self, name: str, entry: PlanEntry) -> None:
        manifest = entry.cached["manifest"]
        outputs = {o: v["path"] for o, v in manifest["outputs"].items()}
        # one round trip: the cached stage's run is created with all its tags, then closed
        tags = {"ringctl.cached_from": entry.cached["run_id"],
                **{f"ringctl.output.{o}": p for o, p in outputs.items()}}
        mlflow_id = self._track("start_stage", self.state.data["mlflow_run_id"], name, entry.kind,
                                entry.fingerprint, "cached", tags, stage=name)
        if mlflow_id:
            self._track("finish", mlflow_id, "cached", stage=name)
        now = time.time()
        self.state.set_stage(name, status="cached", fingerprint=entry.fingerprint, parts=entry.parts.to_json(),
                             outputs=outputs, stage_dir=entry.cached["stage_dir"], mlflow_run_id=mlflow_id,
                             cached_from=entry.cached["run_id"], started=now, ended=now)
        self.observer(name, "cached", {"from": entry.cached["run_id"]})

    def _inputs(self, name: str) -> dict:
        from ringctl.recipe.base import iter_refs

        out = {}
        for _, ref in iter_refs(self.recipe.stages[name]):
            producer = self.state.stage(ref.stage)
            if ref.output not in producer["outputs"]:
                raise RuntimeError(f"stage {ref.stage!r} has no recorded output {ref.output!r}")
            manifest = artifacts.read_manifest(Path(producer["stage_dir"])) or {}
            meta = manifest.get("outputs", {}).get(ref.output, {}).get("meta", {})
            out[str(ref)] = {"path": producer["outputs"][ref.output], "meta": meta}
        return out

    def _run_stage(self, name: str, entry: PlanEntry) -> int:
        cfg = self.recipe.stages[name]
        stage_dir = self.state.run_dir / name
        stage_dir.mkdir(parents=True, exist_ok=True)
        artifacts.atomic_write_json(stage_dir / INPUTS_FILE, self._inputs(name))
        st = self.state.stage(name)
        resuming = st["status"] in ("running", "interrupted", "failed")
        mlflow_id = st.get("mlflow_run_id") if resuming else None
        if mlflow_id:
            self._track("reopen", mlflow_id, stage=name)
            self._track("set_tags", mlflow_id, stage=name, **{"ringctl.fingerprint": entry.fingerprint})
        else:
            mlflow_id = self._track("start_stage", self.state.data["mlflow_run_id"], name, cfg.kind,
                                    entry.fingerprint, "running", stage=name)
        started = time.time()
        self.state.set_stage(name, status="running", fingerprint=entry.fingerprint, parts=entry.parts.to_json(),
                             stage_dir=str(stage_dir.resolve()), mlflow_run_id=mlflow_id, started=started,
                             ended=None, attempts=st["attempts"] + 1)
        self.observer(name, "running", {"started": started, "log": str(stage_dir / "stage.log"),
                                        "resumed": resuming})
        code = self._adopt(name, stage_dir, entry) if resuming else None
        if code is None:
            code = self._launch_with_retries(name, stage_dir, mlflow_id, entry)
        manifest = artifacts.read_manifest(stage_dir)
        if code == EXIT_OK and manifest is None:
            code = EXIT_STAGE_FAILED
            with open(stage_dir / "stage.log", "a") as f:
                f.write("[ringctl] the stage exited 0 without writing its manifest\n")
        status = {EXIT_OK: "completed", EXIT_INTERRUPTED: "interrupted"}.get(code, "failed")
        if status == "failed" and self._stop_requested:
            status = "interrupted"
        outputs = {o: v["path"] for o, v in manifest["outputs"].items()} if status == "completed" else {}
        self.state.set_stage(name, status=status, outputs=outputs, ended=time.time())
        if status == "completed":
            self.cache.record(entry.fingerprint, self.state.run_id, name, stage_dir)
            self.cache.remember_parts(self.recipe.name, name, entry.parts, self.state.run_id)
            if mlflow_id:
                self._track("log_checkpoints", mlflow_id, manifest, self.log_policy, stage=name)
        if mlflow_id:
            self._track("log_stage_log", mlflow_id, stage_dir / "stage.log", stage=name)
            self._track("finish", mlflow_id, status, stage=name)
        self.observer(name, status, {"ended": time.time(), "exit_code": code,
                                     "log": str(stage_dir / "stage.log")})
        return code

    def _adopt(self, name: str, stage_dir: Path, entry: PlanEntry) -> int | None:
        """A stage killed after its manifest was written (before the run's state said so) finished: it is not run
        again when the manifest is of this fingerprint and every sha256 matches; a torn one is redone from scratch."""
        manifest = artifacts.read_manifest(stage_dir)
        if manifest is None:
            return None
        problems = artifacts.manifest_problems(manifest, verify_hashes=True)
        if manifest.get("fingerprint") == entry.fingerprint and not problems:
            with open(stage_dir / "stage.log", "a") as f:
                f.write("[ringctl] the stage had finished (manifest intact, every sha256 matches): not run again\n")
            return EXIT_OK
        shutil.rmtree(stage_dir, ignore_errors=True)
        stage_dir.mkdir(parents=True)
        artifacts.atomic_write_json(stage_dir / INPUTS_FILE, self._inputs(name))
        self.notify(f"stage {name}: its manifest is not trustworthy ({'; '.join(problems[:3]) or 'another fingerprint'})"
                    f"; running it again from scratch")
        return None

    def _launch_with_retries(self, name: str, stage_dir: Path, mlflow_id: str | None, entry: PlanEntry) -> int:
        """Launch the stage; when its processes were lost or hung (watchdog.retry_cause; never after an interrupt or
        on the stage's own error) resume it from its latest checkpoint, up to `retries` times, waiting
        retry_backoff_s (doubled each time) first. Each retry: a line in the stage log, a warning, the MLflow tags
        ringctl.attempt / ringctl.retries_used / ringctl.last_failure, and a record in the run state's
        `recoveries` (cause, exit code, failed_at, relaunched_at)."""
        recovery = watchdog.Recovery.of(self.recipe.stages[name], self.recipe.resources)
        used = 0
        while True:
            self._hang = None
            code = self._launch(name, stage_dir, mlflow_id, entry.fingerprint, recovery.hang_timeout)
            chaos.point("stage-exited", stage=name)
            if code in (EXIT_OK, EXIT_INTERRUPTED) or self._stop_requested:
                return code
            failed_at = time.time()
            retry, cause = (True, self._hang) if self._hang else watchdog.retry_cause(stage_dir, code)
            if not retry or used >= recovery.retries:
                if retry:
                    _log_line(stage_dir, f"the stage's processes were lost ({cause}) and its {recovery.retries} "
                                         f"retries are used up: it needs `ringctl resume`")
                return code
            used += 1
            wait = recovery.backoff(used)
            _log_line(stage_dir, f"attempt failed (exit {code}): {cause}; retry {used}/{recovery.retries} from the "
                                 f"latest checkpoint in {wait:g} s")
            self.notify(f"stage {name}: {cause}; retry {used}/{recovery.retries} in {wait:g} s")
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not self._stop_requested:
                time.sleep(min(0.2, wait))
            if self._stop_requested:
                return EXIT_INTERRUPTED
            st = self.state.stage(name)
            attempt = st["attempts"] + 1
            record = {"retry": used, "cause": cause, "exit_code": code, "failed_at": failed_at,
                      "relaunched_at": time.time()}
            self.state.set_stage(name, attempts=attempt, retries_used=used,
                                 recoveries=[*st.get("recoveries", []), record])
            if mlflow_id:
                self._track("set_tags", mlflow_id, stage=name, **{
                    "ringctl.attempt": str(attempt), "ringctl.retries_used": str(used),
                    "ringctl.last_failure": cause[:500]})
            adopted = self._adopt(name, stage_dir, entry)  # it may have written its manifest before it was lost
            if adopted is not None:
                return adopted

    def _launch(self, name: str, stage_dir: Path, mlflow_id: str | None, fingerprint: str = "",
                hang_timeout: float | None = None) -> int:
        spec = launchers.launch_spec(self.recipe.stages[name], self.recipe.resources)
        port = launchers.free_port() if spec.nnodes == 1 else None
        cmd = launchers.build_command(spec, self.state.run_dir.resolve(), name, master_port=port)
        env = dict(os.environ)
        env[ENV_TRACKING_URI] = self.state.data["tracking_uri"]
        env[ENV_FINGERPRINT] = fingerprint
        if mlflow_id:
            env[ENV_MLFLOW_RUN_ID] = mlflow_id
        else:
            env.pop(ENV_MLFLOW_RUN_ID, None)
        if self.offline:  # the stage keeps its tags/artifacts in the journal instead of trying the server
            env[ENV_TRACKING_OFFLINE] = "1"
        else:
            env.pop(ENV_TRACKING_OFFLINE, None)
        # stage processes import the project from the same interpreter; keep the cwd's modules importable
        env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH", "")] if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(launchers.launch_env(spec, stage_dir, env))
        watchdog.reset(stage_dir)  # rank records and heartbeats of this attempt only
        with open(stage_dir / "stage.log", "ab") as log:
            log.write(f"[ringctl] {time.strftime('%Y-%m-%d %H:%M:%S')} launching: {' '.join(cmd)}\n".encode())
            log.flush()
            for attempt in range(4):  # fork can fail transiently (EAGAIN: process limit, memory pressure)
                try:
                    self._child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                   stdin=subprocess.DEVNULL, preexec_fn=_child_preexec)
                    break
                except OSError as e:
                    transient = e.errno in (errno.EAGAIN, errno.ENOMEM) and attempt < 3
                    log.write(f"[ringctl] could not start the stage process: {e}"
                              f"{'; retrying' if transient else ''}\n".encode())
                    log.flush()
                    if not transient:  # the stage fails (resumable), the run is not left "running"
                        self.notify(f"stage {name}: could not start its process: {e}")
                        return EXIT_STAGE_FAILED
                    time.sleep(2 ** attempt)
            try:
                return self._wait(stage_dir, log, hang_timeout)
            finally:
                self._child = None

    def _wait(self, stage_dir: Path, log, hang_timeout: float | None) -> int:
        """The launcher's exit code. With `hang_timeout`: once the stage has made progress (a first heartbeat), when
        no rank's heartbeat is newer than that many seconds, every rank's Python stacks go to the stage log, the
        launcher and all its descendants are killed, and `self._hang` says why (the attempt is retried). Not while
        the stage is stopping on an interrupt."""
        while True:
            try:
                return self._child.wait(timeout=1.0 if hang_timeout else None)
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:  # handled by _on_signal; keep waiting for the child to save
                continue
            last = watchdog.last_progress(stage_dir)
            idle = time.time() - last if last is not None else 0.0
            if self._stop_requested or idle <= hang_timeout:
                continue
            self._hang = f"no rank made progress for {idle:.0f} s (hang_timeout {hang_timeout:g} s)"
            log.write(f"[ringctl] {time.strftime('%Y-%m-%d %H:%M:%S')} {self._hang}: writing every rank's Python "
                      f"stacks, then killing the stage's processes\n".encode())
            log.flush()
            watchdog.dump_stacks(stage_dir, log)
            watchdog.kill_tree(watchdog.process_tree(self._child.pid))
            return self._child.wait()


def _log_line(stage_dir: Path, text: str) -> None:
    with open(stage_dir / "stage.log", "a") as f:
        f.write(f"[ringctl] {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def _child_preexec() -> None:
    """In the stage process before exec: die with the orchestrator (PR_SET_PDEATHSIG)."""
    from ringctl.pipeline.stage_main import die_with_parent

    die_with_parent()


def start_pipeline_tracking(tracking, state: RunState, loaded) -> None:
    """Create the parent MLflow run. On failure the run starts offline (the Runner says so once)."""
    try:
        mlflow_id = tracking.start_pipeline(state.run_id, loaded.recipe.name, loaded.resolved,
                                            state.run_dir / RESOLVED_RECIPE)
    except Exception as e:
        Journal(state.run_dir).add("start_pipeline", error=f"{type(e).__name__}: {str(e)[:300]}")
        return
    state.data["mlflow_run_id"] = mlflow_id
    state.save()

