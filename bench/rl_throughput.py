"""RL throughput: ringctl rl_step (algorithm=grpo) vs TRL GRPOTrainer, same tiny model, prompts, K, max new tokens,
number of updates, run back to back in one process.

tokens/s = completion (generated) tokens per second of wall time per step, timed over steps 2..N (step 1 is warm-up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def _records(args) -> list[dict]:
    from ringctl.data.synth import generate_rl
    return [dict(r) for r in generate_rl(args.prompts * args.steps, args.seed, domains=["arithmetic"])]


def bench_ringctl(args) -> dict:
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_tiny
    from stages import rl
    from stages.rl_config import RLHyper

    hp = RLHyper(algorithm="grpo", prompts_per_step=args.prompts, samples_per_prompt=args.k,
                 token_budget=args.prompts * args.k * args.max_new_tokens, max_new_tokens=args.max_new_tokens,
                 max_prompt_tokens=128, lr=1e-5, kl_beta=0.0, entropy_coef=0.0, reward_workers=1)
    policy, tok = build_tiny(ModelConfig(), args.seed)
    engine = rl._engine(policy, None, hp, args.steps)
    rollout_engine = rl._rollout_engine(policy, tok, None)
    prompts = _records(args)
    deferred: list = []
    timed = []
    for step in range(args.steps):
        batch = prompts[step * args.prompts:(step + 1) * args.prompts]
        start = time.perf_counter()
        m, deferred = rl.rl_step(policy, None, engine, tok, rollout_engine, batch, hp, deferred, args.seed + step)
        wall = time.perf_counter() - start
        if step > 0:
            gen_tokens = m["response_length/mean"] * args.prompts * args.k
            timed.append({"wall": wall, "tokens": gen_tokens, "rollout": m["time/rollout_s"],
                          "reward": m["time/reward_s"], "train": m["time/train_s"]})
    wall = sum(t["wall"] for t in timed)
    return {"tokens_per_s": sum(t["tokens"] for t in timed) / wall, "s_per_step": wall / len(timed),
            "time_split": {k: statistics.fmean(t[k] for t in timed) for k in ("rollout", "reward", "train")}}


def bench_trl(args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ringctl.rewards import score
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_tiny

    model, tok = build_tiny(ModelConfig(), args.seed)
    records = _records(args)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"], "domain": r["domain"]}
                                 for r in records])

    def reward_fn(completions, answer, domain, **_):
        return [score(d, c, a) for c, a, d in zip(completions, answer, domain)]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts: list[float] = []
            self.walls: list[float] = []

        def on_step_begin(self, a, state, control, **kw):
            self.starts.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            self.walls.append(time.perf_counter() - self.starts[-1])

    completion_tokens: list[float] = []

    class TokenCounter(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                completion_tokens.append(logs["completions/mean_length"] * args.prompts * args.k)

    config = GRPOConfig(output_dir=args.trl_dir, use_cpu=True, report_to=[], num_generations=args.k,
                        per_device_train_batch_size=args.prompts * args.k, max_completion_length=args.max_new_tokens,
                        temperature=1.0, beta=0.0, max_steps=args.steps, save_strategy="no", logging_steps=1,
                        learning_rate=1e-5, seed=args.seed)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=config, train_dataset=dataset,
                          processing_class=tok, callbacks=[timer, TokenCounter()])
    trainer.train()
    walls, tokens = timer.walls[1:], completion_tokens[1:len(timer.walls)]
    return {"tokens_per_s": sum(tokens) / sum(walls[:len(tokens)]), "s_per_step": statistics.fmean(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-dir", default="/tmp/ringctl_trl_bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ours = bench_ringctl(args)
    print(f"ringctl: {ours}")
    trl = bench_trl(args)
    print(f"trl: {trl}")
    result = {"bench": "rl_throughput", "metric": "tokens_per_s", "ringctl": ours["tokens_per_s"],
              "trl": trl["tokens_per_s"], "ratio": ours["tokens_per_s"] / trl["tokens_per_s"],
              "ringctl_s_per_step": ours["s_per_step"], "trl_s_per_step": trl["s_per_step"],
              "ringctl_time_split": ours["time_split"], "ringctl_algorithm": "grpo",
              "tokens_definition": "completion tokens per second of wall time, steps 2..N"}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
