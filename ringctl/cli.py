"""ringctl's command line. One thin function per command; heavy imports (torch, mlflow, hydra) happen
inside the commands that need them, so `ringctl --help` and `ringctl validate` stay fast."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from ringctl.errors import EXIT_INTERRUPTED, EXIT_OK, BadInput, RecipeError, RingctlError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  pretty_exceptions_show_locals=False,
                  help="Declarative LLM post-training pipelines: filter -> long-CoT SFT -> select -> C3PO RL.",
                  context_settings={"help_option_names": ["-h", "--help"]})

JSON_OPT = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")
WORKDIR_OPT = typer.Option(None, "--workdir", "-w", help="Directory of run directories (default: the recipe's "
                                                          "`workdir`, else ./runs).")
URI_OPT = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: recipe tracking.uri, "
                                                    "$MLFLOW_TRACKING_URI, sqlite:///mlflow.db).")
OVERRIDES_ARG = typer.Argument(None, help="Hydra-style overrides: key=value, +new.key=value, ~key.",
                               show_default=False)
SKIP_INPUT_CHECK_OPT = typer.Option(False, "--skip-input-check", help="Do not check that the local paths the "
                                    "recipe names (data, benchmarks, model dirs, hostfile) exist here (they exist "
                                    "only on the cluster).")
RERUN_OPT = typer.Option(None, "--rerun", help="Run this stage again even if its outputs are cached "
                         "(repeatable); later stages still reuse the cache when their fingerprint is unchanged.")


def _check_rerun(loaded, names: list[str] | None) -> list[str]:
    from ringctl.errors import did_you_mean

    names = list(dict.fromkeys(names or []))
    stages = list(loaded.recipe.stages)
    for n in names:
        if n not in stages:
            raise BadInput(f"--rerun {n}: no stage named {n!r}{did_you_mean(n, stages)}; stages: {', '.join(stages)}")
    return names


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _err_console():
    """Messages on stderr, never re-wrapped on a pipe (ringctl.display.out_console)."""
    from ringctl.display import out_console

    return out_console(stderr=True, highlight=False)


def _out_console():
    """The console for tables on stdout: a terminal, or COLUMNS, keeps its width (tables fold their columns);
    a pipe or a file gets no width limit, so that no line is re-wrapped (ringctl.display.out_console)."""
    from ringctl.display import out_console

    return out_console()


def _fail(e: RingctlError, as_json: bool, kind: str = "error") -> None:
    if isinstance(e, RecipeError):
        if as_json:
            _emit({"valid": False, "status": "invalid", "errors": [p.to_json() for p in e.problems]})
        else:
            con = _err_console()
            for p in e.problems:
                con.print(f"[bold red]error[/] {p}", markup=True, soft_wrap=True)
            n = len(e.problems)
            con.print(f"{n} problem{'s' if n != 1 else ''} found; nothing was run.")
    else:
        if as_json:
            _emit({"status": kind, "error": str(e)})
        else:
            _err_console().print(f"[bold red]error[/] {e}", soft_wrap=True)
    raise typer.Exit(e.exit_code)


def _load(recipe: Path, overrides: list[str] | None):
    from ringctl.recipe.loader import load_recipe

    return load_recipe(recipe, overrides or [])


def _check_machine(loaded, skip_input_check: bool) -> None:
    """Local input paths exist (unless skipped) and code rewards have an isolating sandbox: RecipeError, exit 2."""
    from ringctl.pipeline import preconditions

    preconditions.enforce(loaded, check_inputs=not skip_input_check)


def _workdir(cli: Path | None, loaded=None) -> Path:
    if cli is not None:
        return cli
    return Path(loaded.recipe.workdir) if loaded is not None else Path("runs")


def _stage_rows(state: dict) -> list[dict]:
    return [{"name": n, "kind": s["kind"], "status": s["status"], "fingerprint": s["fingerprint"],
             "mlflow_run_id": s["mlflow_run_id"], "outputs": s["outputs"],
             "retries_used": s.get("retries_used", 0), "recoveries": s.get("recoveries", [])}
            for n, s in ((n, state["stages"][n]) for n in state["order"])]


def _resume_cmd(run_id: str, workdir: Path, uri: str | None) -> str:
    cmd = ["ringctl", "resume", run_id]
    if Path(workdir) != Path("runs"):
        cmd += ["--workdir", str(workdir)]
    if uri:
        cmd += ["--tracking-uri", uri]
    return shlex.join(cmd)


def _execute(loaded, state, workdir: Path, tracking, as_json: bool, cli_uri: str | None, resume: bool,
             worker=None) -> int:
    from ringctl.display import RunDisplay, print_failure
    from ringctl.pipeline.runner import Runner
    from ringctl.recipe.dag import dependencies

    recipe = loaded.recipe
    order = state.data["order"]
    display = RunDisplay(state.run_id, order, {n: recipe.stages[n].kind for n in order},
                         {n: dependencies(recipe.stages[n]) for n in order},
                         live=False if as_json else None)
    runner = Runner(loaded, state, workdir, tracking, observer=display,
                    log_policy=recipe.tracking.log_checkpoints, resume=resume,
                    notify=lambda msg: display.console.print(f"[yellow]warning[/] {msg}", soft_wrap=True,
                                                             highlight=False))
    with display:
        code = runner.execute()
    synced = _sync_if_back(runner, tracking, worker, loaded) if code != EXIT_INTERRUPTED else False
    if as_json:
        _emit({"run_id": state.run_id, "status": state.status, "stages": _stage_rows(state.data),
               "tracking": {"uri": state.data["tracking_uri"], "offline": runner.offline, "synced": synced,
                            "pending": str(runner.journal.path) if runner.journal.path.exists() else None}})
    elif state.status != "completed":
        print_failure(display.console, state.run_id, state.data, _resume_cmd(state.run_id, workdir, cli_uri))
    else:
        display.console.print(f"[green]run {state.run_id} completed[/] (run dir {state.run_dir})")
    hint = None if as_json else _mlflow_hint(state, tracking, recipe.tracking.experiment)
    if hint:
        display.console.print(hint, soft_wrap=True, markup=False, highlight=False)
    return code


def _mlflow_hint(state, tracking, experiment: str) -> str | None:
    """One line: how to see the run in MLflow (`ringctl ui --run`, and the page it opens); None when the run is not
    in MLflow (offline from the start)."""
    from ringctl.tracking import UI_DEFAULT_BASE, is_server_uri, resolve_uri, ui_link

    mlflow_run_id, experiment_id = state.data.get("mlflow_run_id"), getattr(tracking, "experiment_id", None)
    if not mlflow_run_id or not isinstance(experiment_id, str):
        return None
    uri = state.data["tracking_uri"]
    if is_server_uri(uri):
        return f"see it in MLflow: {ui_link(uri, experiment_id, mlflow_run_id)}"
    cmd = ["ringctl", "ui", "--run", state.run_id]
    if uri != resolve_uri():
        cmd += ["--tracking-uri", uri]
    if experiment != "ringctl":
        cmd += ["--experiment", experiment]
    return f"see it in MLflow: {shlex.join(cmd)} (serves {ui_link(UI_DEFAULT_BASE, experiment_id, mlflow_run_id)})"


def _sync_if_back(runner, tracking, worker, loaded) -> bool:
    """After a run that went offline: when the tracking store answers again, sync right away (bounded, and given up
    on Ctrl-C like every tracking call); otherwise the outage notice already named `ringctl sync`."""
    from ringctl.pipeline.sync import pending, sync_run

    state = runner.state
    if not pending(state.run_dir) or worker is None:
        return False
    uri = state.data["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2)
        except Exception:  # still down
            return False
    from ringctl.pipeline.state import RunState

    trk = tracking or _tracking(uri, loaded.recipe.tracking.experiment, worker)
    try:
        if trk is None:
            return False
        trk.apply(sync_run, state.run_dir, loaded.recipe.tracking.log_checkpoints)
    except Exception:
        return False
    state.data.update(RunState.load(state.run_dir).data)  # the sync recorded the MLflow run ids
    runner.notify(f"MLflow at {uri} answers again: what the run kept locally is synced")
    return True


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML."), overrides: list[str] | None = OVERRIDES_ARG,
        workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT,
        run_id: str | None = typer.Option(None, "--run-id", help="Use this run id instead of a generated one."),
        rerun: list[str] | None = RERUN_OPT, skip_input_check: bool = SKIP_INPUT_CHECK_OPT):
    """Validate a recipe and run its pipeline (cached stages are reused)."""
    from ringctl import artifacts, tracking
    from ringctl.pipeline.state import RESOLVED_RECIPE, RunState, new_run_id
    from ringctl.recipe.dag import topological_order

    worker = tracking.TrackingProcess()  # imports mlflow on the other core while the recipe loads
    try:
        loaded = _load(recipe, overrides)
        _check_machine(loaded, skip_input_check)
        forced = _check_rerun(loaded, rerun)
        wd = _workdir(workdir, loaded)
        rid = run_id or new_run_id(loaded.recipe.name)
        run_dir = wd / rid
        if run_dir.exists():
            raise BadInput(f"run directory {run_dir} already exists; use `ringctl resume {rid}`")
        uri = tracking.resolve_uri(tracking_uri, loaded.recipe.tracking.uri)
        run_dir.mkdir(parents=True)
        artifacts.atomic_write_text(run_dir / RESOLVED_RECIPE, loaded.to_yaml())
        order = topological_order(loaded.recipe.stages)
        state = RunState.create(run_dir, rid, loaded.recipe.name, str(recipe), list(overrides or []), order,
                                {n: loaded.recipe.stages[n].kind for n in order}, uri)
        if forced:
            state.data["rerun"] = forced  # resume must not take these from the cache either
            state.save()
        trk = _tracking(uri, loaded.recipe.tracking.experiment, worker)
        if trk is not None:
            from ringctl.pipeline.runner import start_pipeline_tracking

            start_pipeline_tracking(trk, state, loaded)
        if not as_json:
            _err_console().print(f"run [bold]{rid}[/] ({run_dir}), tracking {uri}")
        code = _execute(loaded, state, wd, trk, as_json, tracking_uri, resume=False, worker=worker)
    except RingctlError as e:
        _fail(e, as_json)
    finally:
        worker.close()
    raise typer.Exit(code)


def _tracking(uri: str, experiment: str, worker=None):
    from ringctl.artifacts import sqlite_init_lock
    from ringctl.tracking import Tracking

    try:
        with sqlite_init_lock(uri):  # runs starting at once must not both create the store's schema
            return worker.connect(uri, experiment) if worker is not None else Tracking(uri, experiment)
    except Exception:  # the run goes on offline (the Runner says so once); `ringctl sync` uploads later
        return None


@app.command()
def resume(run_id: str = typer.Argument(..., help="Run id (see `ringctl runs`)."),
           workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT,
           allow_drift: bool = typer.Option(False, "--allow-drift",
                                            help="Resume even though the recipe file or stage code changed."),
           skip_input_check: bool = SKIP_INPUT_CHECK_OPT):
    """Continue a run: finished stages are skipped, the interrupted one continues from its last checkpoint."""
    from ringctl.pipeline.drift import drift_report
    from ringctl.pipeline.state import RESOLVED_RECIPE, RunState, find_run_dir
    from ringctl.recipe.loader import load_resolved
    from ringctl.tracking import TrackingProcess

    worker = TrackingProcess()
    try:
        wd = workdir or Path("runs")
        run_dir = find_run_dir(wd, run_id)
        state = RunState.load(run_dir)
        if state.status == "completed":
            if as_json:
                _emit({"run_id": run_id, "status": "completed", "stages": _stage_rows(state.data)})
            else:
                _err_console().print(f"run {run_id} is already completed; nothing to do")
            raise typer.Exit(EXIT_OK)
        loaded = load_resolved((run_dir / RESOLVED_RECIPE).read_text(encoding="utf-8"), str(run_dir / RESOLVED_RECIPE))
        report = drift_report(state, loaded)
        if report and not allow_drift:
            raise BadInput("the run's recipe or stage code changed since it started:\n" + report +
                           "\nresume with --allow-drift to continue anyway with the stored recipe and the current "
                           "code, or start a new run (unchanged stages are reused from the cache)")
        if report:
            _err_console().print(f"[yellow]continuing despite drift (--allow-drift):[/]\n{report}")
        # what `run` checks before anything starts, for the stages still to run: their local inputs (a dataset
        # moved since the run started) and the code sandbox (this machine may lack what the first one had)
        from ringctl.pipeline import preconditions
        from ringctl.pipeline.state import DONE

        preconditions.enforce(loaded, check_inputs=not skip_input_check,
                              only={n for n, s in state.data["stages"].items() if s["status"] not in DONE})
        uri = tracking_uri or state.data["tracking_uri"]
        state.data["tracking_uri"] = uri
        trk = _tracking(uri, loaded.recipe.tracking.experiment, worker)
        from ringctl.pipeline.sync import pending, sync_run

        if trk is not None and pending(run_dir):  # upload what an earlier outage kept locally, then go on
            try:
                trk.apply(sync_run, run_dir, loaded.recipe.tracking.log_checkpoints)
                state = RunState.load(run_dir)
                state.data["tracking_uri"] = uri
            except Exception as e:
                _err_console().print(f"[yellow]warning[/] sync with MLflow failed ({e}); `ringctl sync {run_id}` "
                                     f"retries it")
        if trk is not None:
            if state.data.get("mlflow_run_id"):
                try:
                    trk.reopen(state.data["mlflow_run_id"])
                except Exception:
                    state.data["mlflow_run_id"] = None
            if not state.data.get("mlflow_run_id"):
                from ringctl.pipeline.runner import start_pipeline_tracking

                start_pipeline_tracking(trk, state, loaded)
        code = _execute(loaded, state, wd, trk, as_json, tracking_uri, resume=True, worker=worker)
    except RingctlError as e:
        _fail(e, as_json)
    finally:
        worker.close()
    raise typer.Exit(code)


@app.command()
def sync(run_id: str = typer.Argument(..., help="Run id (see `ringctl runs`)."), workdir: Path | None = WORKDIR_OPT,
         tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT):
    """Upload what MLflow missed (a tracking outage): parent and stage runs, tags, metrics, artifacts. Idempotent."""
    import yaml

    from ringctl.pipeline.state import RESOLVED_RECIPE, RunState, find_run_dir
    from ringctl.pipeline.sync import sync_run
    from ringctl.tracking import Tracking

    try:
        run_dir = find_run_dir(workdir or Path("runs"), run_id)
        state = RunState.load(run_dir)
        uri = tracking_uri or state.data["tracking_uri"]
        if uri != state.data["tracking_uri"]:
            state.data["tracking_uri"] = uri
            state.save()
        conf = (yaml.safe_load((run_dir / RESOLVED_RECIPE).read_text(encoding="utf-8")) or {}).get("tracking") or {}
        try:
            doc = sync_run(Tracking(uri, conf.get("experiment", "ringctl")), run_dir, conf.get("log_checkpoints", "final"))
        except Exception as e:
            raise RingctlError(f"cannot sync run {run_id} with MLflow at {uri} ({type(e).__name__}: {str(e)[:300]}); "
                               f"nothing is lost: the run directory keeps it all, try again later") from e
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit(doc)
    else:
        _err_console().print(f"run {run_id} synced with {uri}: {doc['runs_created']} runs created, {doc['metrics']} "
                             f"metric values, {doc['params']} params, {doc['tags']} tags, {doc['artifacts']} artifacts")


@app.command()
def ui(tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: "
                                               "$MLFLOW_TRACKING_URI, sqlite:///mlflow.db); a server (http...) "
                                               "is not served again: its link is printed."),
       host: str = typer.Option("127.0.0.1", "--host", help="Interface to serve on."),
       port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port to serve on."),
       experiment: str = typer.Option("ringctl", "--experiment", help="The recipe's tracking.experiment."),
       run_id: str | None = typer.Option(None, "--run", help="Link to this pipeline run's page (see `ringctl "
                                                             "runs`)."),
       as_json: bool = JSON_OPT):
    """Serve MLflow's UI on ringctl's tracking store and print the link that opens the experiment on its training
    runs (--run: on one run); serves until Ctrl-C (exit 130). --json prints {url, experiment_id, ...} once the
    server answers."""
    from ringctl import mlflow_ui
    from ringctl.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)

    def ready(link, server_log) -> None:
        if link.serving:
            _err_console().print(f"MLflow UI for {uri} at {link.server} (its output: {server_log}); Ctrl-C stops it",
                                 soft_wrap=True, markup=False)
        if as_json:
            _emit({"url": link.url, "experiment_id": link.experiment_id, "mlflow_run_id": link.mlflow_run_id,
                   "server": link.server, "serving": link.serving, "tracking_uri": uri})
        else:
            sys.stdout.write(link.url + "\n")
            sys.stdout.flush()

    try:
        code = mlflow_ui.serve(uri, host, port, experiment, run_id, ready)
    except RingctlError as e:
        _fail(e, as_json)
    raise typer.Exit(code)


@app.command()
def validate(recipe: Path = typer.Argument(..., help="Recipe YAML."),
             overrides: list[str] | None = OVERRIDES_ARG, as_json: bool = JSON_OPT,
             workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT,
             skip_input_check: bool = SKIP_INPUT_CHECK_OPT):
    """Check a recipe without running anything: schema, references, cycles, cross-field constraints, the local
    input paths it names and, where a stage runs code rewards, that an isolating sandbox works here."""
    del workdir, tracking_uri  # accepted for a uniform command line; validation touches neither
    try:
        loaded = _load(recipe, overrides)
        _check_machine(loaded, skip_input_check)
    except RecipeError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"valid": True, "errors": []})
    else:
        n = len(loaded.recipe.stages)
        _err_console().print(f"[green]ok[/] {recipe}: recipe {loaded.recipe.name!r}, {n} stage{'s' * (n != 1)}"
                             + (" (local input paths not checked: --skip-input-check)" if skip_input_check else ""))


@app.command()
def plan(recipe: Path = typer.Argument(..., help="Recipe YAML."), overrides: list[str] | None = OVERRIDES_ARG,
         workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT,
         fmt: str = typer.Option("text", "--format", help="text | mermaid"), rerun: list[str] | None = RERUN_OPT,
         skip_input_check: bool = SKIP_INPUT_CHECK_OPT):
    """Show the DAG, whether each stage would run and why, the launch commands and a pre-flight check."""
    from ringctl.pipeline import planning

    del tracking_uri
    if fmt not in ("text", "mermaid"):
        _fail(BadInput(f"--format must be text or mermaid, got {fmt!r}"), as_json)
    try:
        loaded = _load(recipe, overrides)
        _check_machine(loaded, skip_input_check)
        report = planning.build(loaded, _workdir(workdir, loaded), _check_rerun(loaded, rerun),
                                input_check=not skip_input_check)
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit(report)
    elif fmt == "mermaid":
        sys.stdout.write(planning.mermaid(report) + "\n")
    else:
        planning.print_text(report)
    failed = [c for c in report["preflight"] if not c["ok"]]
    if failed:  # the report is printed whole; then the one clear error, before any GPU is touched
        if not as_json:
            _err_console().print(f"[bold red]error[/] {len(failed)} pre-flight check(s) failed: " + "; ".join(
                f"{c['stage']}: {c['check']}" for c in failed), soft_wrap=True)
        raise typer.Exit(2)


@app.command()
def submit(recipe: Path = typer.Argument(..., help="Recipe YAML."), overrides: list[str] | None = OVERRIDES_ARG,
           nodes: int = typer.Option(..., "--nodes", min=1, help="Nodes of the allocation."),
           gpus_per_node: int = typer.Option(..., "--gpus-per-node", min=1, help="Ranks (GPUs) per node."),
           partition: str | None = typer.Option(None, "--partition", help="Slurm partition."),
           time_limit: str | None = typer.Option(None, "--time", help="Slurm time limit (e.g. 2-00:00:00)."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print the sbatch script; submit nothing."),
           workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT,
           skip_input_check: bool = SKIP_INPUT_CHECK_OPT):
    """Run the pipeline as a Slurm job (sbatch): distributed stages start with srun over the allocation's nodes,
    local stages run on its first node; a requeued or preempted job resumes the same run id."""
    from ringctl.pipeline import slurm
    from ringctl.pipeline.state import new_run_id

    try:
        loaded = _load(recipe, overrides)
        extra = slurm.launch_overrides(loaded.recipe, nodes, gpus_per_node)
        loaded = _load(recipe, [*(overrides or []), *extra])  # the job's recipe must validate too
        _check_machine(loaded, skip_input_check)
        run_id = new_run_id(loaded.recipe.name)
        wd = _workdir(workdir, loaded).resolve()
        log_dir = wd / "slurm"
        script = slurm.sbatch_script(recipe_path=recipe, recipe=loaded.recipe, overrides=[*(overrides or []), *extra],
                                     run_id=run_id, workdir=wd, nodes=nodes, gpus_per_node=gpus_per_node,
                                     partition=partition, time_limit=time_limit, tracking_uri=tracking_uri,
                                     skip_input_check=skip_input_check, log_dir=log_dir)
        if dry_run:
            sys.stdout.write(script)
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / f"{run_id}.sbatch"
        path.write_text(script, encoding="utf-8")
        job_id = slurm.submit(path)
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"job_id": job_id, "run_id": run_id, "script": str(path), "workdir": str(wd),
               "distributed_stages": slurm.distributed_stages(loaded.recipe)})
    else:
        _err_console().print(f"submitted Slurm job {job_id}: run {run_id} (script {path}, log "
                             f"{log_dir / (run_id + '-' + job_id + '.log')})")
        sys.stdout.write(job_id + "\n")


@app.command()
def runs(workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT,
         limit: int = typer.Option(50, help="At most this many runs.")):
    """List pipeline runs, newest first (from MLflow; the local run directories when MLflow is unreachable)."""
    from ringctl.pipeline import inspect

    rows = inspect.list_runs(workdir or Path("runs"), tracking_uri, limit)
    if as_json:
        _emit(rows)
        return
    from rich.table import Table

    table = Table("run id", "recipe", "status", "started")
    for r in rows:
        table.add_row(r["run_id"], r["recipe"], r["status"], str(r["start_time"]))
    _out_console().print(table)


@app.command()
def status(run_id: str | None = typer.Argument(None, help="Run id (default: the latest run in the workdir)."),
           workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT):
    """Show one run (the latest one when no run id is given): each stage's status, fingerprint, MLflow run and
    outputs."""
    from ringctl.pipeline import inspect
    from ringctl.pipeline.state import latest_run

    try:
        if not run_id:
            run_id = latest_run(workdir or Path("runs"))["run_id"]
            _err_console().print(f"latest run in {workdir or Path('runs')}: {run_id}", soft_wrap=True)
        doc = inspect.run_status(workdir or Path("runs"), run_id, tracking_uri)
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit(doc)
        return
    from rich.table import Table

    con = _out_console()
    con.print(f"run [bold]{doc['run_id']}[/] recipe {doc['recipe']}: [bold]{doc['status']}[/]")
    table = Table("stage", "kind", "status", "fingerprint", "outputs")
    for s in doc["stages"]:
        table.add_row(s["name"], s["kind"], s["status"], s["fingerprint"] or "",
                      "\n".join(f"{k}: {v}" for k, v in (s["outputs"] or {}).items()))
    con.print(table)


@app.command("select-sft")
def select_sft(run_id: str | None = typer.Option(None, "--run", help="Run id whose SFT checkpoints to rank."),
               metric: str = typer.Option("token-efficiency", "--metric",
                                          help="token-efficiency | entropy | accuracy | reward-gain"),
               stage: str = typer.Option("sft", "--stage", help="The SFT stage of the run."),
               checkpoints: list[Path] | None = typer.Option(None, "--checkpoints",
                                                                help="Plain checkpoint directories instead of a run."),
               prompts: Path | None = typer.Option(None, "--prompts", help="RL prompts (JSONL records) to "
                                                      "measure on; default: the run's select stage's prompts."),
               num_prompts: int | None = typer.Option(None, "--num-prompts", min=1, help="Probe prompts (default: "
                                                      "the run's select stage's, else 64)."),
               samples: int | None = typer.Option(None, "--samples-per-prompt", min=1, help="Samples per probe "
                                                  "prompt (default: the run's select stage's, else 4)."),
               max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Longest sampled "
                                                         "response (default: the run's select stage's, else 1024)."),
               workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT,
               as_json: bool = JSON_OPT):
    """Rank SFT epoch checkpoints (entropy on RL prompts, probe accuracy, C3PO probe gain, token efficiency)
    and choose the one RL starts from. Works on a finished or a running run (default: the latest run in the
    workdir with SFT checkpoints), or on plain directories (--checkpoints A B --prompts P.jsonl, measured with
    the recipe defaults). The size options apply when the checkpoints are measured now."""
    import contextlib

    from ringctl import selection
    from ringctl.commands.select_sft import select_sft
    from ringctl.display import print_table

    try:
        if metric not in selection.METRICS:
            raise BadInput(f"--metric must be one of {', '.join(selection.METRICS)}, got {metric!r}")
        if not run_id and not checkpoints:
            run_id, stage = _latest_sft_run(workdir or Path("runs"), stage)
        with contextlib.redirect_stdout(sys.stderr):  # progress lines of a measurement; stdout is the result
            doc, band = select_sft(run_id=run_id, metric=metric, sft_stage=stage, checkpoints=checkpoints,
                                   prompts=prompts, workdir=workdir or Path("runs"),
                                   limits={"num_prompts": num_prompts, "samples_per_prompt": samples,
                                           "max_new_tokens": max_new_tokens})
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit(doc)
    else:
        print_table(selection.table(doc, band), _out_console())


def _latest_sft_run(workdir: Path, stage: str) -> tuple[str, str]:
    """select-sft without --run: the newest run in the workdir whose SFT stage (`stage`, or the first stage that has
    written epoch checkpoints) has finished epoch checkpoints; says on stderr which run it chose."""
    from ringctl.pipeline.state import latest_run

    def sft_stage(data: dict) -> str | None:
        # `stage`, else the first stage with epoch checkpoints (what SFT writes; RL's checkpoints are step-N)
        names = [stage] if stage in data["stages"] else data["order"]
        for name in names:
            ckpts = (data["stages"][name].get("outputs") or {}).get("checkpoints")  # finished or cached stage
            running = workdir / data["run_id"] / name / "outputs" / "checkpoints"  # a stage still training
            if any(any(Path(d).glob("epoch-*")) for d in (ckpts, running) if d):
                return name
        return None

    data = latest_run(workdir, sft_stage, what="run with SFT epoch checkpoints")
    chosen = sft_stage(data)
    _err_console().print(f"latest run with SFT checkpoints in {workdir}: {data['run_id']} (stage {chosen}); "
                         "pass --run <run-id> for another", soft_wrap=True)
    return data["run_id"], chosen


@app.command("eval")
def eval_(checkpoints: list[str] | None = typer.Argument(None, help="Checkpoint directories (Hugging Face format; "
                                                         "a directory of epoch-N/step-N checkpoints: each of them).",
                                                         show_default=False),
          benchmarks: str | None = typer.Option(None, "--benchmarks", "-b", help="Named benchmarks, comma-separated: "
                                                 "math500, aime24, aime25, amc23, gsm8k, humaneval, ifeval (shipped "
                                                 "with ringctl; $RINGCTL_BENCHMARKS_DIR replaces them)."),
          file: Path | None = typer.Option(None, "--file", help="Any JSONL/Parquet file, with the field mapping "
                                                                "below."),
          prompt_field: str | None = typer.Option(None, "--prompt-field", help="--file's field with the problem."),
          answer_field: str | None = typer.Option(None, "--answer-field", help="--file's field with the reference "
                                                                               "answer."),
          id_field: str | None = typer.Option(None, "--id-field", help="--file's field with a problem id (default: "
                                                                       "the row number)."),
          domain: str | None = typer.Option(None, "--domain", help="--file's verifier: math, code, ifeval, ..."),
          name: str | None = typer.Option(None, "--name", help="--file's name in the table (default: its stem)."),
          n: int = typer.Option(4, "--n", help="Samples per problem."),
          k: str | None = typer.Option(None, "--k", help="pass@k for these k, comma-separated (default: powers of "
                                                         "two up to n)."),
          limit: int | None = typer.Option(None, "--limit", help="The first N problems of each benchmark."),
          temperature: float = typer.Option(1.0, "--temperature"), top_p: float = typer.Option(1.0, "--top-p"),
          max_new_tokens: int = typer.Option(1024, "--max-new-tokens"),
          max_prompt_tokens: int | None = typer.Option(None, "--max-prompt-tokens", help="Keep the last N prompt "
                                                                                         "tokens."),
          seed: int = typer.Option(0, "--seed", help="Sampling seed: the same seed gives the same samples."),
          backend: str = typer.Option("hf", "--backend", help="hf (HF generate, CPU or GPU) | vllm (GPU)."),
          device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one) | cpu | cuda (an "
                                                               "error without one); the device rule of every stage."),
          dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16 | auto"),
          trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
          out: Path | None = typer.Option(None, "--out", help="Output directory (default: <workdir>/eval-<time>)."),
          run_id: str | None = typer.Option(None, "--run", help="Print the table of this run's evaluate stage "
                                                                "instead of evaluating."),
          workdir: Path | None = WORKDIR_OPT, tracking_uri: str | None = URI_OPT, as_json: bool = JSON_OPT):
    """Evaluate checkpoints on benchmarks: pass@1 over n samples, pass@k, maj@n, IFEval levels, scored by the RL
    verifiers; writes samples.jsonl, report.json, results.md and results.png. With --run: a run's table."""
    from ringctl.commands import eval as command
    from ringctl.display import print_table
    from ringctl.eval import report

    del tracking_uri  # `ringctl eval` writes files; the evaluate stage of a pipeline run logs to MLflow
    try:
        if run_id:
            if checkpoints:
                raise BadInput("give checkpoints to evaluate, or --run RUN_ID for a finished run's table, not both")
            rows, out_dir = command.run_results(run_id, workdir or Path("runs")), None
        else:
            if not checkpoints:
                raise BadInput("no checkpoint given: ringctl eval CHECKPOINT... --benchmarks NAME (or --run RUN_ID)")
            if dtype not in ("float32", "bfloat16", "float16", "auto"):
                raise BadInput(f"--dtype must be float32, bfloat16, float16 or auto, got {dtype!r}")
            rows, out_dir = command.run_eval(
                checkpoints=checkpoints, benchmarks=benchmarks, file=file, prompt_field=prompt_field,
                answer_field=answer_field, id_field=id_field, domain=domain, name=name, n=n, k=k, limit=limit,
                temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                max_prompt_tokens=max_prompt_tokens, seed=seed, backend=backend, dtype=dtype,
                trust_remote_code=trust_remote_code, out=out, workdir=workdir or Path("runs"), device=device)
    except RingctlError as e:
        _fail(e, as_json)
    if as_json:
        _emit({"results": rows})
        return
    print_table(report.table(rows), _out_console())
    if out_dir is not None:
        _err_console().print(f"samples, report.json, results.md and the plot in {out_dir}", soft_wrap=True)


@app.command()
def schema(as_json: bool = JSON_OPT):
    """Print the recipe's JSON Schema (for editors: yaml-language-server)."""
    del as_json  # the schema is JSON either way
    from ringctl.recipe.schema import json_schema

    _emit(json_schema())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
