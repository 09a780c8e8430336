"""C3PO vs GRPO stability: CV of tokens per optimizer step, CV of step time, variance of grad norm.

Both runs start from the same tiny-model init, see the same prompts and step seeds. Under C3PO every optimizer
step must train on exactly `token_budget` tokens (CV 0); any step that falls short is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


def run_algorithm(algorithm: str, args) -> list[dict]:
    from ringctl.data.synth import generate_rl
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_tiny
    from stages import rl
    from stages.rl_config import RLHyper

    hp = RLHyper(algorithm=algorithm, prompts_per_step=args.prompts, samples_per_prompt=args.k,
                 token_budget=args.budget, max_new_tokens=args.max_new_tokens, max_prompt_tokens=128,
                 lr=1e-4, kl_beta=0.0, entropy_coef=0.0, reward_workers=1)
    policy, tok = build_tiny(ModelConfig(), args.seed)
    engine = rl._engine(policy, None, hp, args.steps)
    rollout_engine = rl._rollout_engine(policy, tok, None)
    prompts = [dict(r) for r in generate_rl(args.prompts * args.steps, args.seed, domains=["arithmetic"])]
    deferred: list = []
    metrics = []
    for step in range(args.steps):
        batch = prompts[step * args.prompts:(step + 1) * args.prompts]
        m, deferred = rl.rl_step(policy, None, engine, tok, rollout_engine, batch, hp, deferred, args.seed + step)
        metrics.append(m)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--budget", type=int, default=16, help="C3PO token budget; keep below typical step totals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    summary: dict = {"tokens_cv": {}, "step_time_cv": {}, "grad_norm_var": {}}
    short_steps: list[dict] = []
    for algorithm in ("c3po", "grpo"):
        metrics = run_algorithm(algorithm, args)
        tokens = [float(m["train/tokens"]) for m in metrics]
        summary["tokens_cv"][algorithm] = _cv(tokens)
        summary["step_time_cv"][algorithm] = _cv([float(m["time/step_s"]) for m in metrics])
        summary["grad_norm_var"][algorithm] = statistics.pvariance([float(m["grad_norm"]) for m in metrics])
        if algorithm == "c3po":
            short_steps = [{"step": i, "tokens": t} for i, t in enumerate(tokens) if t != args.budget]
        print(f"{algorithm}: tokens/step {tokens}")
    print(f"C3PO steps short of budget {args.budget}: {short_steps or 'none'}")
    result = {"bench": "c3po_stability", "metric": "tokens_per_step_cv", "ringctl": summary["tokens_cv"]["c3po"],
              "grpo": summary["tokens_cv"]["grpo"], "ratio": None, "step_time_cv": summary["step_time_cv"],
              "grad_norm_var": summary["grad_norm_var"], "steps": args.steps, "token_budget": args.budget,
              "c3po_short_steps": short_steps}
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
