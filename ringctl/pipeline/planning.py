"""`ringctl plan`: the DAG, what would run and why, the launch command per node, and a pre-flight check."""

from __future__ import annotations

from pathlib import Path

from ringctl.pipeline import launchers
from ringctl.pipeline.runner import plan as plan_stages


def count_parameters(recipe) -> tuple[float | None, str]:
    """Total parameters of the recipe's model without loading weights: the `resources.model_parameters_b` hint,
    or the model's config (the tiny model's, or a local checkpoint's config.json) instantiated on the meta device."""
    if recipe.resources.model_parameters_b:
        return recipe.resources.model_parameters_b * 1e9, "resources.model_parameters_b"
    model = recipe.model
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if model.name_or_path == "tiny":
            from ringctl.train.models import tiny_model_config

            config = tiny_model_config(model.tiny)
        elif Path(model.name_or_path, "config.json").exists():
            config = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
        else:
            return None, f"{model.name_or_path} is not on this machine; set resources.model_parameters_b"
        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(config, trust_remote_code=model.trust_remote_code)
        return float(sum(p.numel() for p in m.parameters())), "model config"
    except Exception as e:  # the estimate is advisory; never fail planning on it
        return None, f"could not build the model config ({type(e).__name__}: {e})"


def memory_estimate(recipe, world_size: int) -> dict:
    """Model-state memory per GPU (weights, gradients, AdamW states; `ringctl.train.memory.per_param_bytes`),
    partitioned by the ZeRO stage; each training stage's full estimate is `memory_checks`'."""
    from ringctl.train.memory import per_param_bytes

    params, source = count_parameters(recipe)
    if params is None:
        return {"check": "memory per GPU (model states)", "ok": True, "detail": f"not estimated: {source}"}
    backends = recipe.backends
    zero = backends.deepspeed.zero_stage if backends.train == "deepspeed" else 0
    gb = params * sum(per_param_bytes(_setup(recipe, backends.train, world_size))) / 2**30
    budget = recipe.resources.gpu_memory_gb
    return {"check": "memory per GPU (model states)", "ok": gb < 0.8 * budget,
            "detail": f"{params / 1e9:.3g}B params ({source}), {backends.train} ZeRO-{zero} over {world_size} ranks: "
                      f"~{gb:.1f} GiB of {budget:g} GiB (each training stage's activations, loss head and rollout "
                      f"engine: below)"}


def _setup(recipe, engine: str, world: int, **fields):
    """The memory model's Setup for this recipe's model dtype and DeepSpeed settings, on `engine` over `world` ranks."""
    from ringctl.train.memory import DTYPE_BYTES, Setup

    ds = recipe.backends.deepspeed
    return Setup(dtype_bytes=DTYPE_BYTES[recipe.model.dtype], engine=engine, zero_stage=ds.zero_stage, world=world,
                 offload_optimizer=ds.offload_optimizer, offload_params=ds.offload_params, **fields)


def model_config_dict(recipe) -> tuple[dict | None, str]:
    """The model's config.json fields for the memory model: the tiny default's, a local checkpoint's, or the
    `resources.model_architecture` hint (for a model that is not on this machine)."""
    model = recipe.model
    try:
        if model.name_or_path == "tiny":
            from ringctl.train.models import tiny_model_config

            return tiny_model_config(model.tiny).to_dict(), "the tiny config"
        path = Path(model.name_or_path, "config.json")
        if path.is_file():
            import json

            return json.loads(path.read_text()), str(path)
    except Exception as e:  # advisory: never fail planning on reading a config
        return None, f"could not read the model config ({type(e).__name__}: {e})"
    if recipe.resources.model_architecture:
        return dict(recipe.resources.model_architecture), "resources.model_architecture"
    return None, f"{model.name_or_path} is not on this machine; set resources.model_architecture (its config.json fields)"


def memory_checks(recipe) -> list[dict]:
    """Per training stage and rank: the peak memory of its largest micro-batch (ringctl.train.memory) against
    resources.gpu_memory_gb, with 10% kept free for the allocator and the CUDA context."""
    from ringctl.train.memory import ModelShape

    config, source = model_config_dict(recipe)
    checks = []
    for name, cfg in recipe.stages.items():
        spec = launchers.launch_spec(cfg, recipe.resources)
        work = cfg.memory_workload(recipe, spec.world_size)
        if work is None:
            continue
        if config is None:
            checks.append({"stage": name, "check": "memory per GPU", "ok": True, "detail": f"not estimated: {source}"})
            continue
        params = recipe.resources.model_parameters_b * 1e9 if recipe.resources.model_parameters_b else None
        try:
            shape = ModelShape.from_config(config, params)
        except (ValueError, TypeError) as e:  # a hint with a missing or non-numeric field: say so, fail the plan
            checks.append({"stage": name, "check": "memory per GPU", "ok": False, "detail": f"{source}: {e}"})
            continue
        checks.append(_memory_check(recipe, name, cfg, work, shape, spec.world_size))
    return checks


def _memory_check(recipe, name: str, cfg, work: dict, shape, world: int) -> dict:
    from ringctl.train.memory import GIB as gib
    from ringctl.train.memory import Workload, estimate

    b = recipe.backends
    vllm = work.get("rollout") and b.rollout == "vllm"
    engine = b.train
    checkpointing = work["checkpointing"] if "checkpointing" in work else cfg.checkpointing(recipe)
    setup = _setup(recipe, engine, world, checkpointing=checkpointing,
                   chunk_tokens=work.get("chunk_tokens", getattr(cfg, "logprob_chunk_tokens", None)), reference=bool(work.get("reference")),
                   vllm_share_bytes=b.vllm.gpu_memory_utilization * recipe.resources.gpu_memory_gb * gib if vllm else 0,
                   vllm_sleeps=b.vllm.enable_sleep_mode)
    est = estimate(shape, Workload(tokens=work["tokens"], head_tokens=work["head_tokens"],
                                   entropy_grad=work.get("entropy_grad", False), lm_head=work.get("lm_head", True)),
                   setup)
    budget = recipe.resources.gpu_memory_gb
    ok = est.peak_bytes <= 0.9 * budget * gib
    parts = ", ".join(f"{k.replace('_', ' ')} {v / gib:.1f}" for k, v in est.parts.items())
    parts += ", then the larger of " + " / ".join(f"{k.replace('_', ' ')} {v / gib:.1f}"
                                                  for k, v in est.transient.items())
    detail = (f"~{est.total_bytes / gib:.1f} GiB of {budget:g} GiB training ({parts} GiB; micro-batch "
              f"{work['tokens']:,} tokens, activation checkpointing {'on' if setup.checkpointing else 'off'}, "
              f"{shape.params / 1e9:.3g}B params, {engine} ZeRO-{setup.zero_stage if engine == 'deepspeed' else 0} "
              f"over {world} ranks)")
    if est.rollout_bytes:
        detail += f"; rollout phase ~{est.rollout_bytes / gib:.1f} GiB (vLLM's share {setup.vllm_share_bytes / gib:.1f})"
    if not ok:
        # the setting that turns checkpointing on (none where the stage fixes it)
        field = work.get("checkpointing_field", None if "checkpointing" in work else "activation_checkpointing")
        fixes = [] if setup.checkpointing or field is None else [f"stages.{name}.{field}: true"]
        fixes += [f"a smaller stages.{name}.{f}" for f in work.get("fields", [])]
        if est.rollout_bytes > est.total_bytes:
            fixes = ["a smaller backends.vllm.gpu_memory_utilization", *fixes]
        detail += f" - does not fit in 90% of {budget:g} GiB: set {', or '.join(fixes)}"
    return {"stage": name, "check": "memory per GPU", "ok": ok, "detail": detail,
            "memory_gib": {**{k: round(v / gib, 2) for k, v in {**est.parts, **est.transient}.items()},
                           "training": round(est.total_bytes / gib, 2), "rollout": round(est.rollout_bytes / gib, 2),
                           "budget": budget}}


def _trained_upstream(recipe, name: str, seen: set | None = None):
    """(stage, field, tokens): the stage that trained the model `name` starts from with a length limit
    (`trained_max_length()`), following stages that pass an upstream model through (a checkpoint selection);
    None when there is none."""
    from ringctl.recipe.base import iter_refs

    seen = seen or set()
    for _, ref in iter_refs(recipe.stages[name]):
        if ref.stage in seen or ref.stage not in recipe.stages:
            continue
        seen.add(ref.stage)
        cfg = recipe.stages[ref.stage]
        limit = cfg.trained_max_length()
        if limit is not None:
            return ref.stage, cfg, limit
        if cfg.passes_model_through():
            return _trained_upstream(recipe, ref.stage, seen)
    return None


def sequence_length_checks(recipe) -> list[dict]:
    """A stage's longest sequence (RL: prompt + response, `sequence_need()`) must fit in what the model it starts
    from was trained on (SFT's max_seq_len): positions beyond it were never seen."""
    checks = []
    for name, cfg in recipe.stages.items():
        need = cfg.sequence_need()
        found = _trained_upstream(recipe, name) if need is not None else None
        if found is None:
            continue
        (what, tokens), (up_name, up, (field, limit)) = need, found
        checks.append({"stage": name, "check": f"{up.kind.upper()} max length covers {cfg.kind.upper()} prompt + "
                                               f"response",
                       "ok": limit >= tokens,
                       "detail": f"{up_name}.{field} {limit:,} vs {what} = {tokens:,}"})
    return checks


def preflight(recipe) -> list[dict]:
    """Cross-stage checks that catch a misconfigured cluster job before any GPU is allocated, then each stage
    Config's own (`StageConfig.preflight(recipe, world_size) -> [{"check", "ok", "detail"}]`)."""
    checks = [{"stage": "*", **memory_estimate(recipe, recipe.resources.world_size)}]
    checks += memory_checks(recipe)
    checks += sequence_length_checks(recipe)
    for name, cfg in recipe.stages.items():
        spec = launchers.launch_spec(cfg, recipe.resources)
        for c in cfg.preflight(recipe, spec.world_size):
            checks.append({"stage": name, **c})
    return checks


def build(loaded, workdir: Path, rerun_stages: list[str] | None = None, input_check: bool = True) -> dict:
    from ringctl.pipeline import preconditions
    from ringctl.pipeline.cache import StageCache
    from ringctl.pipeline.fingerprint import code_changes

    recipe = loaded.recipe
    entries = plan_stages(recipe, workdir, rerun_stages=rerun_stages or ())
    cache = StageCache(workdir)
    run_dir = f"{workdir}/<run-id>"
    stages = []
    for e in entries:
        spec = launchers.launch_spec(recipe.stages[e.name], recipe.resources)
        last = cache.last_parts(recipe.name, e.name) if e.would_run else None
        stages.append({"name": e.name, "kind": e.kind, "depends_on": e.depends_on, "would_run": e.would_run,
                       "reason": e.reason, "fingerprint": e.fingerprint,
                       # the stage's files that changed since its last completed run: [{"path", "change"}]
                       "code_changes": (code_changes(last["parts"], e.parts.to_json()) or []) if last else [],
                       "launcher": spec.launcher, "world_size": spec.world_size,
                       "launch": launchers.per_node_commands(spec, run_dir, e.name)})
    paths = sorted({p for _, p, _ in preconditions.input_paths(recipe)})
    inputs = {"checked": input_check, "paths": paths,
              "detail": f"{len(paths)} local path(s) exist and are readable" if input_check else
              f"skipped (--skip-input-check): {len(paths)} local path(s) not checked, they must exist where the "
              f"stages run"}
    return {"recipe": recipe.name, "workdir": str(workdir), "stages": stages, "preflight": preflight(recipe),
            "inputs": inputs, "sandbox": preconditions.sandbox_summary(recipe)}


def mermaid(report: dict) -> str:
    lines = ["flowchart TD"]
    for s in report["stages"]:
        state = "run" if s["would_run"] else "cached"
        lines.append(f'    {s["name"]}["{s["name"]}<br/>{s["kind"]}<br/>{state}"]')
    for s in report["stages"]:
        for d in s["depends_on"]:
            lines.append(f"    {d} --> {s['name']}")
    lines.append("    classDef run fill:#fff3cd,stroke:#b58900")
    lines.append("    classDef cached fill:#d1ecf1,stroke:#268bd2")
    for s in report["stages"]:
        lines.append(f"    class {s['name']} {'run' if s['would_run'] else 'cached'}")
    return "\n".join(lines)


def print_text(report: dict) -> None:
    from rich.table import Table

    from ringctl.display import out_console

    con = out_console()  # a pipe gets the table at its own width, a terminal folds its columns
    table = Table(title=f"plan for recipe {report['recipe']} (workdir {report['workdir']})")
    for col in ("stage", "kind", "after", "would run", "why"):
        table.add_column(col, overflow="fold")
    for s in report["stages"]:
        table.add_row(s["name"], s["kind"], ", ".join(s["depends_on"]) or "-",
                      "[yellow]yes[/]" if s["would_run"] else "[cyan]no[/]", s["reason"])
    con.print(table)
    changed = [s for s in report["stages"] if s.get("code_changes")]
    if changed:
        con.print("[bold]code changed[/] since the stage's last run")
        for s in changed:
            for c in s["code_changes"]:
                con.print(f"  {s['name']}: {c['path']} ({c['change']})", highlight=False, soft_wrap=True)
    con.print("[bold]launch[/] (per stage; processes x nodes)")
    for s in report["stages"]:
        con.print(f"  {s['name']}: {s['launcher']}, world size {s['world_size']}")
        for cmd in s["launch"]:
            con.print(f"    {cmd}", highlight=False, soft_wrap=True)
    inputs = report.get("inputs")
    if inputs:
        con.print(f"[bold]inputs[/] {inputs['detail']}", highlight=False)
    box = report.get("sandbox")
    if box:
        what = box["backend"] if box["ok"] else "none works"
        con.print(f"[bold]code sandbox[/] {what} (sandbox.backend {box['configured']}; code rewards in "
                  f"{', '.join(box['stages'])})" + (f": {box['detail']}" if box["detail"] else ""), highlight=False)
    if report["preflight"]:
        con.print("[bold]pre-flight[/]")
        for c in report["preflight"]:
            mark = "[green]ok[/]  " if c["ok"] else "[red]FAIL[/]"
            con.print(f"  {mark} {c['stage']}: {c['check']}: {c['detail']}", highlight=False)
