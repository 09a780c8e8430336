"""RL throughput: ringctl's RL step (algorithm=grpo) vs TRL's GRPOTrainer, run back to back in one process.

    .venv/bin/python bench/rl_throughput.py --json

Same everything on both sides:
- model: the tiny Qwen3-MoE after a short long-CoT SFT (ringctl's SFT stage, --sft-epochs on synthetic arithmetic),
  saved once in Hugging Face format and loaded by both with from_pretrained, as RL starts from an SFT checkpoint
  in the pipeline (`--init random` benches the untrained model instead: nearly every response runs to
  max_new_tokens there, which hides what ends early);
- prompts: the same synthetic arithmetic prompts in the same order, through the model's chat template (TRL gets
  conversational prompts, ringctl applies the template itself); K samples each, temperature 1, top-p 1,
  max new tokens, one optimizer update per rollout batch, lr, AdamW, clipping 1.0;
- loss: GRPO with 1/|y| per response (TRL loss_type="grpo"), beta 0 (no reference model), fp32 (TRL's default
  bf16 autocast off), no gradient checkpointing (TRL's default is on; ringctl does not recompute activations);
- reward: ringctl.rewards.score (the arithmetic verifier) on both sides.
tokens/s = generated (completion) tokens / wall seconds of the steps, steps 2..N (step 1 is warm-up), timed around
ringctl's RLTrainer.step and by a callback between TRL's on_step_begin / on_step_end. ringctl's split of its step into
rollout / reward / train is reported too. Progress and the trainers' logs go to stderr; --json prints one JSON
object as the last stdout line: {"bench": "rl_throughput", "metric": "tokens_per_s", "ringctl", "trl", "ratio", ...}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


from bench._tiny_start import add_common_args, parse_args, prepare_model  # noqa: E402


def _records(args) -> list[dict]:
    from ringctl.data.synth import generate_rl
    return [dict(r) for r in generate_rl(args.prompts * args.steps, args.seed, domains=["arithmetic"])]


def bench_ringctl(model_dir: Path, args) -> dict:
    from ringctl.rl.hyper import RLHyper
    from ringctl.rl.trainer import RLTrainer, build_train_engine
    from ringctl.rollout.generation import build_rollout_engine
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import load_model_and_tokenizer

    hp = RLHyper(algorithm="grpo", prompts_per_step=args.prompts, samples_per_prompt=args.k,
                 token_budget=args.prompts * args.k * args.max_new_tokens, max_new_tokens=args.max_new_tokens,
                 max_prompt_tokens=128, lr=args.lr, kl_beta=0.0, entropy_coef=0.0, reward_workers=1)
    policy, tok = load_model_and_tokenizer(ModelConfig(), path=model_dir)
    engine = build_train_engine(policy, None, hp, args.steps)
    rollout_engine = build_rollout_engine(policy, tok, None)
    trainer = RLTrainer(policy, tok, engine, rollout_engine, hp)
    prompts = _records(args)
    deferred: list = []
    timed, rewards = [], []
    for step in range(args.steps):
        batch = prompts[step * args.prompts:(step + 1) * args.prompts]
        start = time.perf_counter()
        m, deferred = trainer.step(batch, deferred, args.seed + step)
        wall = time.perf_counter() - start
        rewards.append(m["reward/mean"])
        if step > 0:
            timed.append({"wall": wall, "tokens": m["response_length/mean"] * args.prompts * args.k,
                          "rollout": m["time/rollout_s"], "reward": m["time/reward_s"], "train": m["time/train_s"]})
    wall = sum(t["wall"] for t in timed)
    return {"tokens_per_s": sum(t["tokens"] for t in timed) / wall, "s_per_step": wall / len(timed),
            "mean_completion_tokens": statistics.fmean(t["tokens"] for t in timed) / (args.prompts * args.k),
            "reward_mean": statistics.fmean(rewards),
            "time_split_s": {k: statistics.fmean(t[k] for t in timed) for k in ("rollout", "reward", "train")}}


def bench_trl(model_dir: Path, args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ringctl.rewards import score

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(model_dir)
    records = _records(args)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"],
                                  "domain": r["domain"]} for r in records])

    def reward_fn(completions, answer, domain, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [score(d, t, a) for t, a, d in zip(texts, answer, domain)]

    walls: list[float] = []
    logs: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            walls.append(time.perf_counter() - self.start)

        def on_log(self, a, state, control, logs_=None, **kw):
            entry = kw.get("logs") or logs_
            if entry and "completions/mean_length" in entry:
                logs.append(entry)

    config = GRPOConfig(output_dir=str(work / "trl"), use_cpu=True, report_to=[], num_generations=args.k,
                        per_device_train_batch_size=args.prompts * args.k, max_completion_length=args.max_new_tokens,
                        temperature=1.0, top_p=1.0, beta=0.0, max_steps=args.steps, save_strategy="no",
                        logging_steps=1, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                        weight_decay=0.0, max_grad_norm=1.0, seed=args.seed, bf16=False,
                        gradient_checkpointing=False, loss_type="grpo", disable_tqdm=True, shuffle_dataset=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=config, train_dataset=dataset,
                          processing_class=tok, callbacks=[StepTimer()])
    trainer.train()
    lengths = [float(e["completions/mean_length"]) for e in logs]
    timed_walls, timed_lengths = walls[1:], lengths[1:len(walls)]
    tokens = [n * args.prompts * args.k for n in timed_lengths]
    return {"tokens_per_s": sum(tokens) / sum(timed_walls[:len(tokens)]), "s_per_step": statistics.fmean(timed_walls),
            "mean_completion_tokens": statistics.fmean(timed_lengths),
            "reward_mean": statistics.fmean(float(e.get("reward", 0.0)) for e in logs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8, help="L: prompts per step (tiny recipe: 8)")
    parser.add_argument("--k", type=int, default=8, help="K: samples per prompt (tiny recipe: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tiny recipe: 64")
    parser.add_argument("--lr", type=float, default=1e-5)
    add_common_args(parser)
    args = parse_args(parser)
    import torch
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        work = Path(tmp)
        log(f"starting checkpoint: {args.init}" + (f" ({args.sft_epochs} SFT epoch(s))" if args.init == "sft" else ""))
        model_dir = prepare_model(args.init, args.sft_epochs, args.seed, work)
        log(f"ringctl: {args.steps} GRPO steps of {args.prompts} x {args.k}, max {args.max_new_tokens} new tokens")
        torch.manual_seed(args.seed)
        ours = bench_ringctl(model_dir, args)
        log(f"ringctl: {ours}")
        torch.manual_seed(args.seed)
        trl = bench_trl(model_dir, args, work)
        log(f"trl: {trl}")
    result = {"bench": "rl_throughput", "metric": "tokens_per_s", "ringctl": round(ours["tokens_per_s"], 1),
              "trl": round(trl["tokens_per_s"], 1), "ratio": round(ours["tokens_per_s"] / trl["tokens_per_s"], 3),
              "ringctl_s_per_step": round(ours["s_per_step"], 4), "trl_s_per_step": round(trl["s_per_step"], 4),
              "ringctl_time_split_s": {k: round(v, 4) for k, v in ours["time_split_s"].items()},
              "mean_completion_tokens": {"ringctl": round(ours["mean_completion_tokens"], 1),
                                         "trl": round(trl["mean_completion_tokens"], 1)},
              "reward_mean": {"ringctl": round(ours["reward_mean"], 3), "trl": round(trl["reward_mean"], 3)},
              "init": args.init, "steps": args.steps, "prompts": args.prompts, "k": args.k,
              "max_new_tokens": args.max_new_tokens, "threads": args.threads, "algorithm": "grpo",
              "tokens_definition": "completion tokens per wall second, steps 2..N"}
    print(f"ringctl {result['ringctl']:,.0f} tokens/s ({result['ringctl_s_per_step']:.3f} s/step), TRL "
          f"{result['trl']:,.0f} tokens/s ({result['trl_s_per_step']:.3f} s/step): ratio {result['ratio']:.2f}x")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
