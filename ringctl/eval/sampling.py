"""Sample n responses per problem from a checkpoint and score them with the verifiers: one row per sample.

The checkpoint is loaded through the one generation path (ringctl.rollout.generation.Generator): Hugging Face
generate (batched, CPU or GPU) or vLLM (GPU). Seeds: each benchmark has one sampling seed (BenchmarkSpec.sampling_seed) and sample s of problem i is
row i*n+s of the engine's draws (HF: the uniforms of that row at every token; vLLM: one seed per problem), so a
rerun gives the same samples, whatever the batch size or the number of ranks sharing the problems, and `limit`
only drops problems at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringctl.eval.benchmarks import Benchmark


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


def encode(tok: Any, problem: dict, bench: Benchmark) -> list[int]:
    from ringctl.train.packing import encode_prompt

    if bench.spec.chat_template and getattr(tok, "chat_template", None):
        ids = encode_prompt(tok, problem["prompt"])
    else:
        ids = tok(problem["prompt"], add_special_tokens=True)["input_ids"]
    limit = bench.spec.max_prompt_tokens
    return list(ids)[-limit:] if limit else list(ids)


def sample_benchmark(gen: Any, bench: Benchmark, run_seed: int) -> list[dict]:
    """Every problem of `bench` n times from a loaded checkpoint (ringctl.rollout.generation.Generator), scored:
    one row per sample. Every rank calls it: under several ranks each samples and scores its contiguous share of the
    problems (a vLLM tensor-parallel group shares one), its rows seeded by their global index, and every rank gets
    all rows in problem order, the ones one process would produce."""
    from ringctl.dist import gather_shares, sampling_share
    from ringctl.rollout.base import SamplingParams

    spec = bench.spec
    prompts = [encode(gen.tok, p, bench) for p in bench.problems]
    group = gen.settings.tensor_parallel_size if gen.settings.backend == "vllm" else 1
    lo, hi, reports = sampling_share(len(prompts), group)
    params = SamplingParams(temperature=spec.temperature, top_p=spec.top_p,
                            max_new_tokens=gen.max_new_tokens(spec.max_new_tokens, prompts),
                            seed=spec.sampling_seed(run_seed), row_offset=lo * spec.n,
                            total_rows=len(prompts) * spec.n, logprobs=False)
    rollouts = gen.generate(prompts[lo:hi], n=spec.n, params=params) if hi > lo else []
    rows = []
    if reports and rollouts:
        for r in rollouts:
            r.prompt_index += lo  # an index into the benchmark's problems
        responses = [gen.tok.decode(r.response_ids, skip_special_tokens=True) for r in rollouts]
        rows = score_samples(bench, rollouts, responses, gen.settings)
    for row in rows:
        row["max_new_tokens"] = params.max_new_tokens
    return gather_shares(rows, reports)


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


def score_samples(bench: Benchmark, rollouts: list, responses: list[str], settings: Any) -> list[dict]:
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
