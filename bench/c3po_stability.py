"""C3PO vs GRPO stability: coefficient of variation of tokens per optimizer step and of step time, and the variance
of the gradient norm, over the same steps.

    .venv/bin/python bench/c3po_stability.py --json

Both runs start from the same checkpoint (the tiny model after a short ringctl SFT, bench/_tiny_start.py, so that
response lengths vary as in real RL) and see the same prompts with the same sampling seeds, at the tiny recipe's
settings (L=8 prompts x K=8, max 64 new tokens, C3PO token budget 1,536, lr 3e-4). Under C3PO every optimizer step
trains on exactly `token_budget` tokens (CV exactly 0; a step short of it is listed); GRPO trains on every
response, so its token count follows the response lengths. --json prints one JSON object as the last stdout line:
{"bench": "c3po_stability", "metric": "tokens_per_step_cv", "ringctl": C3PO's CV, "grpo": GRPO's CV, ...}.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._tiny_start import add_common_args, parse_args, prepare_model  # noqa: E402


def _cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


def run_algorithm(algorithm: str, model_dir: Path, args) -> list[dict]:
    import torch

    from ringctl.data.synth import generate_rl
    from ringctl.rl.hyper import RLHyper
    from ringctl.rl.trainer import RLTrainer, build_train_engine
    from ringctl.rollout.generation import build_rollout_engine
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import load_model_and_tokenizer

    hp = RLHyper(algorithm=algorithm, prompts_per_step=args.prompts, samples_per_prompt=args.k,
                 token_budget=args.budget, max_new_tokens=args.max_new_tokens, max_prompt_tokens=128,
                 lr=args.lr, kl_beta=0.0, entropy_coef=5e-4, reward_workers=1, fill_order=args.fill_order)
    torch.manual_seed(args.seed)
    policy, tok = load_model_and_tokenizer(ModelConfig(), path=model_dir)
    engine = build_train_engine(policy, None, hp, args.steps)
    rollout_engine = build_rollout_engine(policy, tok, None)
    trainer = RLTrainer(policy, tok, engine, rollout_engine, hp)
    prompts = [dict(r) for r in generate_rl(args.prompts * args.steps, args.seed, domains=["arithmetic"])]
    deferred: list = []
    metrics = []
    for step in range(args.steps):
        batch = prompts[step * args.prompts:(step + 1) * args.prompts]
        m, deferred = trainer.step(batch, deferred, args.seed + step)
        metrics.append(m)
        print(f"[bench] {algorithm} step {step + 1}/{args.steps}: {m['train/tokens']:.0f} tokens, "
              f"grad norm {m['grad_norm']:.3f}, {m['time/step_s']:.2f}s", file=sys.stderr, flush=True)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--budget", type=int, default=1536, help="C3PO token budget phi (tiny recipe: 1536)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--fill-order", choices=["prompt", "informative_first"], default="prompt",
                        help="C3PO budget fill order (GRPO trains on every response either way)")
    add_common_args(parser)
    args = parse_args(parser)
    summary: dict = {"tokens_cv": {}, "step_time_cv": {}, "grad_norm_var": {}, "tokens_per_step": {},
                     "grad_norm_max": {}, "grad_norm_cv": {}, "reward_mean": {}}
    short_steps: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="c3po-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        model_dir = prepare_model(args.init, args.sft_epochs, args.seed, Path(tmp))
        for algorithm in ("c3po", "grpo"):
            metrics = run_algorithm(algorithm, model_dir, args)
            tokens = [float(m["train/tokens"]) for m in metrics]
            norms = [float(m["grad_norm"]) for m in metrics]
            summary["tokens_cv"][algorithm] = _cv(tokens)
            summary["step_time_cv"][algorithm] = _cv([float(m["time/step_s"]) for m in metrics])
            summary["grad_norm_var"][algorithm] = statistics.pvariance(norms)
            summary["grad_norm_max"][algorithm] = max(norms)
            # the two losses are normalised differently (1/phi vs 1/|y| per response), so their gradient norms
            # live on different scales: the CV compares their steadiness, the variance is reported as asked
            summary["grad_norm_cv"][algorithm] = _cv(norms)
            summary["tokens_per_step"][algorithm] = {"mean": statistics.fmean(tokens), "min": min(tokens),
                                                     "max": max(tokens)}
            summary["reward_mean"][algorithm] = statistics.fmean(float(m["reward/mean"]) for m in metrics)
            if algorithm == "c3po":
                short_steps = [{"step": i + 1, "tokens": t} for i, t in enumerate(tokens) if t != args.budget]
    result = {"bench": "c3po_stability", "metric": "tokens_per_step_cv", "ringctl": summary["tokens_cv"]["c3po"],
              "grpo": summary["tokens_cv"]["grpo"], "ratio": None,
              "step_time_cv": summary["step_time_cv"], "grad_norm_var": summary["grad_norm_var"],
              "grad_norm_max": summary["grad_norm_max"], "grad_norm_cv": summary["grad_norm_cv"], "tokens_per_step": summary["tokens_per_step"],
              "reward_mean": summary["reward_mean"], "steps": args.steps, "token_budget": args.budget,
              "prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens, "init": args.init,
              "fill_order": args.fill_order, "lr": args.lr,
              "c3po_short_steps": short_steps}
    print(f"tokens/step CV: C3PO {result['ringctl']:.4f} (budget {args.budget}, short steps: {len(short_steps)}), "
          f"GRPO {result['grpo']:.4f}; step time CV: C3PO {summary['step_time_cv']['c3po']:.3f}, "
          f"GRPO {summary['step_time_cv']['grpo']:.3f}; grad-norm variance: C3PO "
          f"{summary['grad_norm_var']['c3po']:.3g}, GRPO {summary['grad_norm_var']['grpo']:.3g} (CV "
          f"{summary['grad_norm_cv']['c3po']:.3f} vs {summary['grad_norm_cv']['grpo']:.3f})")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
