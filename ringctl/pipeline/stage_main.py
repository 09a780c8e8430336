"""Entry point of a stage process: `python -m ringctl.pipeline.stage_main <run_dir> <stage>`.

Started by a launcher (local / torchrun / deepspeed), possibly as several ranks. Reads the stored resolved
recipe and the stage's `inputs.json`, runs the stage, and (rank 0) writes the manifest last.
Exit codes: 0 completed, 1 failed, 130 stopped early on SIGINT/SIGTERM (state saved, resumable).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import random
import signal
import sys
import traceback
from pathlib import Path

from ringctl import artifacts, chaos
from ringctl.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE_FAILED, BadInput
from ringctl.pipeline import watchdog
from ringctl.pipeline.context import Artifact, StageContext, Tracker

ENV_TRACKING_URI = "RINGCTL_TRACKING_URI"
ENV_MLFLOW_RUN_ID = "RINGCTL_MLFLOW_RUN_ID"
ENV_FINGERPRINT = "RINGCTL_FINGERPRINT"
INPUTS_FILE = "inputs.json"
# written when run() returns, before the manifest is hashed: a stage killed in between is not run again (its
# last state may already be final, and a resume that would do zero steps is an error); its manifest is written
RETURNED_FILE = "outputs.returned.json"


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies (prctl PR_SET_PDEATHSIG), so that a
    killed orchestrator does not leave a stage writing into the run directory."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def write_error(e: BaseException, argv: list[str] | None = None) -> None:
    """The error message for the terminal (rank 0): ringctl's own errors (bad data rows, bad input) as they are,
    anything else with its exception type."""
    from ringctl.errors import RingctlError

    argv = sys.argv[1:] if argv is None else argv
    if int(os.environ.get("RANK", "0")) != 0 or len(argv) < 2:
        return
    message = str(e) if isinstance(e, RingctlError) and str(e) else f"{type(e).__name__}: {e}"
    if not isinstance(e, RingctlError) and artifacts.is_disk_full(e, Path(argv[0])):
        # a write no guard covers (checkpoints and atomic writes raise DiskFull themselves): name the file
        message = artifacts.disk_full_message(Path(getattr(e, "filename", None) or Path(argv[0]) / argv[1]))
    try:
        (Path(argv[0]) / argv[1] / artifacts.ERROR_FILE).write_text(message + "\n", encoding="utf-8")
    except OSError:
        pass


_STACKS_FILE = []  # faulthandler writes into this open file on SIGUSR1 (it must stay open)


def watch_rank(stage_dir: Path, rank: int) -> None:
    """This rank's record for the runner (started; the exit is recorded by `record_exit`) and its stack dump on
    SIGUSR1 (all threads, by faulthandler, even while Python is blocked in a collective): the hang watchdog."""
    watchdog.rank_started(stage_dir, rank)
    _STACKS_FILE.append(open(watchdog.stacks_path(stage_dir, rank), "w"))  # noqa: SIM115
    faulthandler.register(signal.SIGUSR1, file=_STACKS_FILE[-1], all_threads=True)


def record_exit(code: int, error: BaseException | None, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and _STACKS_FILE:
        watchdog.rank_exited(Path(argv[0]) / argv[1], int(os.environ.get("RANK", "0")), code, error)


def main(argv: list[str] | None = None) -> int:
    from ringctl.recipe import registry
    from ringctl.recipe.loader import load_resolved

    argv = sys.argv[1:] if argv is None else argv
    run_dir, stage = Path(argv[0]), argv[1]
    stage_dir = run_dir / stage
    watch_rank(stage_dir, int(os.environ.get("RANK", "0")))
    loaded = load_resolved((run_dir / "recipe.resolved.yaml").read_text(encoding="utf-8"),
                           str(run_dir / "recipe.resolved.yaml"))
    recipe = loaded.recipe
    cfg = recipe.stages[stage]
    # the recipe's code sandbox for the code verifier, here and in its scoring worker processes; a stage with code
    # rewards checks on every rank (another node may lack bubblewrap) that it isolates, and fails with the fix
    # instead of scoring every program 0
    from ringctl.pipeline.preconditions import code_reward_stages
    from ringctl.rewards.sandbox import ENV_SANDBOX, SandboxUnavailable, choose_backend

    os.environ[ENV_SANDBOX] = recipe.sandbox.model_dump_json()
    if stage in code_reward_stages(recipe):
        try:
            choose_backend(recipe.sandbox)
        except SandboxUnavailable as e:
            raise BadInput(f"stage {stage!r} runs code rewards: {e}") from None
    module = registry.load_stage_module(cfg.kind)
    inputs = {ref: Artifact(Path(v["path"]), v.get("meta", {}))
              for ref, v in artifacts.read_json(stage_dir / INPUTS_FILE).items()}

    rank = int(os.environ.get("RANK", "0"))
    os.environ[chaos.ENV_STAGE] = stage
    sink = None
    if rank == 0 and os.environ.get(ENV_TRACKING_URI):
        from ringctl.tracking import ENV_TRACKING_OFFLINE, Journal, MlflowSink

        # without an MLflow run (the orchestrator is offline) the sink only journals tags/params/artifacts
        sink = MlflowSink(os.environ[ENV_TRACKING_URI], os.environ.get(ENV_MLFLOW_RUN_ID), Journal(run_dir), stage,
                          offline=bool(os.environ.get(ENV_TRACKING_OFFLINE)))
    random.seed(recipe.seed)
    ctx = StageContext(run_id=run_dir.name, stage_name=stage, stage_dir=stage_dir, inputs=inputs,
                       tracker=Tracker(stage_dir, enabled=rank == 0, mlflow_sink=sink), seed=recipe.seed,
                       recipe=recipe)
    ctx.install_signal_handlers()
    returned = stage_dir / RETURNED_FILE
    if rank == 0:  # an earlier attempt's error message; leftovers of writes interrupted by a kill
        (stage_dir / artifacts.ERROR_FILE).unlink(missing_ok=True)
        artifacts.clean_partial(ctx.state_dir)
        artifacts.clean_partial(ctx.outputs_dir)
        artifacts.clean_partial(stage_dir)
    if returned.exists():
        print(f"[ringctl] stage {stage} had returned its outputs before it was stopped; writing its manifest",
              file=sys.stderr, flush=True)
        outputs = {n: Artifact(Path(v["path"]), v.get("meta", {})) for n, v in artifacts.read_json(returned).items()}
    else:
        if rank == 0 and ctx.resume_state() is None:
            ctx.tracker.rewind(-1)  # a fresh start: records of an attempt killed before its first state are stale
        try:
            outputs = module.run(cfg, ctx)
        finally:
            if sink is not None:  # send what is queued; after a stop request do not wait on a slow server
                sink.close(timeout=2.0 if ctx.should_stop() else 60.0)
        if ctx.should_stop():
            print(f"[ringctl] stage {stage} stopped at a step boundary; state saved, resume to continue",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
    if rank == 0:
        missing = [o for o in module.OUTPUTS if o not in (outputs or {})]
        if missing:
            raise RuntimeError(f"stage {stage!r} did not return its declared outputs {missing}")
        outs = {name: {"path": str(a.path), "meta": a.meta} for name, a in outputs.items()}
        artifacts.atomic_write_json(returned, outs)
        chaos.point("stage-returned")
        artifacts.write_manifest(stage_dir, outs, extra={"stage": stage, "kind": cfg.kind,
                                                         "fingerprint": os.environ.get(ENV_FINGERPRINT)})
    return EXIT_OK


if __name__ == "__main__":
    die_with_parent()
    error = None
    try:
        code = main()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Exception as e:
        traceback.print_exc()
        write_error(e)
        code, error = EXIT_STAGE_FAILED, e
    record_exit(code, error)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no lingering non-daemon threads (tokenizers, mlflow async) keep the stage alive
