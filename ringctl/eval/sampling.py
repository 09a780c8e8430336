"""Sample n responses per problem from a checkpoint and score them with the verifiers: one row per sample.

The engines are the RL rollout engines (ringctl.rollout): Hugging Face generate (batched, CPU or GPU) or vLLM
(GPU). Seeds: each benchmark has one sampling seed (BenchmarkSpec.sampling_seed) and sample s of problem i is
row i*n+s of the engine's draws (HF: the uniforms of that row at every token; vLLM: one seed per problem), so a
rerun gives the same samples, whatever the batch size, and `limit` only drops problems at the end.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringctl.eval.benchmarks import Benchmark


@dataclass(frozen=True)
class EngineSettings:
    backend: str = "hf"  # hf | vllm
    device: str = "auto"  # hf: auto | cpu | cuda, ringctl.train.device's rule (vLLM runs on CUDA)
    max_batch_rows: int = 256
    reward_workers: int = 2
    reward_timeout_s: float = 10.0
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    max_model_len: int | None = None


def checkpoint_dirs(path: Path) -> list[Path]:
    """A checkpoint directory (has config.json) -> [it]; a directory of checkpoints (epoch-N / step-N, as the
    SFT and RL stages write them) -> each of them in order; otherwise []."""
    path = Path(path)
    if (path / "config.json").is_file():
        return [path]
    if not path.is_dir():
        return []
    subs = [p for p in path.iterdir() if p.is_dir() and (p / "config.json").is_file() and "-" in p.name
            and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(subs, key=lambda p: (p.name.rsplit("-", 1)[0], int(p.name.rsplit("-", 1)[1])))


def _stop_ids(model: Any, tok: Any) -> list[int]:
    ids = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is not None:
        ids |= {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
    return sorted(ids)


def encode(tok: Any, problem: dict, bench: Benchmark) -> list[int]:
    from ringctl.train.packing import encode_prompt

    if bench.spec.chat_template and getattr(tok, "chat_template", None):
        ids = encode_prompt(tok, problem["prompt"])
    else:
        ids = tok(problem["prompt"], add_special_tokens=True)["input_ids"]
    limit = bench.spec.max_prompt_tokens
    return list(ids)[-limit:] if limit else list(ids)


class CheckpointSampler:
    """One checkpoint loaded into a rollout engine; `sample(bench, seed)` returns the scored sample rows."""

    def __init__(self, path: Path, model_cfg: Any, settings: EngineSettings):
        self.path, self.settings = Path(path), settings
        if settings.backend == "vllm":
            from transformers import AutoTokenizer

            from ringctl.rollout.vllm import VLLMRolloutEngine

            self.model = None
            self.tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=model_cfg.trust_remote_code)
            self.engine = VLLMRolloutEngine(
                str(path), dtype=model_cfg.dtype if model_cfg.dtype != "float32" else "auto",
                gpu_memory_utilization=settings.gpu_memory_utilization,
                tensor_parallel_size=settings.tensor_parallel_size, enable_sleep_mode=False,
                trust_remote_code=model_cfg.trust_remote_code, max_model_len=settings.max_model_len,
                stop_token_ids=[self.tok.eos_token_id])
        else:
            from ringctl.rollout.hf import HFRolloutEngine
            from ringctl.train.device import rank_device
            from ringctl.train.models import load_model_and_tokenizer

            device = rank_device(settings.device)  # before loading: a missing GPU fails fast
            self.model, self.tok = load_model_and_tokenizer(model_cfg, path=path)
            self.model.to(device)
            self.model.eval()
            self.engine = HFRolloutEngine(self.model, pad_token_id=self.tok.pad_token_id,
                                          stop_token_ids=_stop_ids(self.model, self.tok),
                                          max_batch_rows=settings.max_batch_rows)

    def context_length(self) -> int | None:
        """The model's context window: max_position_embeddings (HF), max_model_len (vLLM)."""
        if self.model is not None:
            return getattr(self.model.config, "max_position_embeddings", None)
        try:
            return int(self.engine.llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            return None

    def max_new_tokens(self, wanted: int, prompts: list[list[int]]) -> int:
        """`wanted`, capped so that the longest prompt plus its response fits the model's context window (a model
        sampled past the positions it was trained on only produces noise, and vLLM refuses it)."""
        ctx = self.context_length()
        if ctx is None or not prompts:
            return wanted
        return max(1, min(wanted, ctx - max(len(p) for p in prompts)))

    def close(self) -> None:
        """Free the model (GPU memory) before the next checkpoint is loaded. vLLM keeps memory until its engine
        and its parallel state are torn down (the clean-up vLLM's own tests use between LLM instances)."""
        if self.settings.backend == "vllm" and self.engine is not None:
            try:
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

                del self.engine.llm
                destroy_model_parallel()
                destroy_distributed_environment()
            except Exception:  # best effort: an older vLLM without these, or nothing initialised
                pass
        self.engine = self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def sample(self, bench: Benchmark, run_seed: int) -> list[dict]:
        import torch

        from ringctl.rollout.base import SamplingParams

        spec = bench.spec
        prompts = [encode(self.tok, p, bench) for p in bench.problems]
        params = SamplingParams(temperature=spec.temperature, top_p=spec.top_p,
                                max_new_tokens=self.max_new_tokens(spec.max_new_tokens, prompts),
                                seed=spec.sampling_seed(run_seed))
        with torch.no_grad():
            rollouts = self.engine.generate(prompts, n=spec.n, params=params)
        responses = [self.tok.decode(r.response_ids, skip_special_tokens=True) for r in rollouts]
        rows = score_samples(bench, rollouts, responses, self.settings)
        for row in rows:
            row["max_new_tokens"] = params.max_new_tokens
        return rows


def _extracted(domain: str, response: str, meta: dict) -> str | None:
    if meta.get("answer") is not None:
        return str(meta["answer"])
    if domain == "ifeval":
        return None
    if domain == "code":
        from ringctl.rewards.code import extract_code

        return extract_code(response)
    from ringctl.rewards.base import final_boxed

    return final_boxed(response)[0]


def score_samples(bench: Benchmark, rollouts: list, responses: list[str], settings: EngineSettings) -> list[dict]:
    """Verifier scores for every rollout, as sample rows (checkpoint filled in by the caller)."""
    from ringctl.rewards import score_batch

    def items(mode: str | None) -> list[dict]:
        out = []
        for r, text in zip(rollouts, responses):
            p = bench.problems[r.prompt_index]
            meta = dict(p["meta"])  # as RL passes a record's metadata to its verifier
            if mode:
                meta["mode"] = mode
            out.append({"domain": p["domain"], "response": text, "reference": p["reference"], "meta": meta})
        return out

    results = score_batch(items(None), workers=settings.reward_workers, timeout=settings.reward_timeout_s)
    loose = None
    if bench.kind == "ifeval":
        loose = score_batch(items("loose"), workers=settings.reward_workers, timeout=settings.reward_timeout_s)
    rows = []
    for j, (r, text, res) in enumerate(zip(rollouts, responses, results)):
        p = bench.problems[r.prompt_index]
        row = {"benchmark": bench.name, "problem_id": p["id"], "sample": r.sample_index, "response": text,
               "extracted": _extracted(p["domain"], text, res.meta), "score": float(res.score),
               "reason": res.reason, "finished": bool(r.finished), "response_tokens": len(r.response_ids)}
        if loose is not None:
            row["instructions"] = res.meta.get("instructions", {})
            row["loose_score"] = float(loose[j].score)
            row["instructions_loose"] = loose[j].meta.get("instructions", {})
        rows.append(row)
    return rows
