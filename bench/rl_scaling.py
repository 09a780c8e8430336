"""RL at scale, measured on CPU: data-parallel equivalence, micro-batching and log-prob memory.

    .venv/bin/python bench/rl_scaling.py --json

One C3PO step (ringctl's RLTrainer.step, the code the rl stage runs) of the tiny Qwen3-MoE after one epoch of ringctl's
SFT on synthetic arithmetic (bench/_tiny_start.py: rewards then differ within groups, so the policy gradient is not
zero), on the same 8 prompts x K 4, with a reference model (KL), the entropy bonus and the MoE router losses on:
- grad_max_abs_diff_1v2: the all-reduced gradient of 2 gloo ranks (torchrun, budget_scope global) vs 1 process
  (max over parameters of |g2 - g1|); also the parameter update after AdamW (lr 1e-3) over the entries whose
  gradient is above 1e-6 (update_max_abs_diff_1v2; over all entries in update_max_abs_diff_1v2_all_entries:
  AdamW's first update is lr * g / (|g| + eps), so where g is ~0 a rounding difference moves it by up to lr);
- prompt_overlap: prompts sampled by more than one rank in a step (2 ranks, budget_scope per_rank and global);
- microbatch_max_abs_diff: gradients with max_tokens_per_micro_batch in {64, 160} vs none, 1 process;
- logprob_peak_mb / naive_peak_mb / ratio: peak memory of log-prob + entropy + backward for about 32k response
  tokens, chunked (ours) vs a full [N, R, V] log_softmax (bench/_logprob_memory.py).
Gradients are captured after the backward's all-reduce and before clipping. The ranks' rollouts are seeded per
global rollout row, so 2 ranks draw the same samples as 1 process. --json prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------
# the worker: one RL step, on every rank
# ----------------------------------------------------------------------------------------------------------------

def worker(args) -> None:
    import torch
    import torch.distributed as dist

    import ringctl.rollout.generation as generation
    from ringctl.data.synth import generate_rl
    from ringctl.rl.hyper import RLHyper
    from ringctl.rl.trainer import RLTrainer, build_train_engine, reference_model
    from ringctl.train import determinism
    from ringctl.train.config import ModelConfig
    from ringctl.train.engine import init_distributed
    from ringctl.train.models import load_model_and_tokenizer

    determinism.seed_everything(0, True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = args.device == "cuda"
    if world > 1:
        init_distributed(None if cuda else "gloo")  # CUDA: nccl, each rank on its LOCAL_RANK device
    rank = dist.get_rank() if world > 1 else 0
    recipe = None
    if args.train == "deepspeed" or args.rollout == "vllm":
        from types import SimpleNamespace

        from ringctl.train.config import BackendsConfig

        recipe = SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(
            train=args.train, deepspeed={"zero_stage": args.zero}, rollout=args.rollout))
    # under ZeRO-3: the policy and the reference model partitioned, the HF rollout engine on its own full copy
    policy, tok = load_model_and_tokenizer(ModelConfig(), path=args.init, backends=getattr(recipe, "backends", None))
    if args.checkpointing:  # the long-context settings (issue 23): recomputed layers (full rows), chunked head
        from ringctl.train.models import enable_activation_checkpointing

        enable_activation_checkpointing(policy)
    hp = RLHyper(prompts_per_step=args.prompts, samples_per_prompt=args.k, token_budget=args.budget,
                 budget_scope=args.scope, max_new_tokens=args.max_new_tokens, max_prompt_tokens=64, lr=1e-3,
                 kl_beta=1e-3, entropy_coef=5e-4, max_tokens_per_micro_batch=args.micro or None,
                 minibatches=args.minibatches, reward_workers=1, fill_order="informative_first",
                 logprob_chunk_tokens=args.chunk or None)
    rollout_engine = None
    if cuda:  # vLLM starts only while its share of the device is free: built first, as stages/rl.py does
        rollout_engine = generation.build_rollout_engine(policy, tok, recipe, args.init,
                                                         hp.max_prompt_tokens + hp.max_new_tokens)
        policy.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    ref = reference_model(recipe, args.init, policy) if recipe else generation.frozen_copy(policy)
    engine = build_train_engine(policy, getattr(recipe, "backends", None), hp, 1, world)
    if rollout_engine is None:  # CPU: after the train engine (the order every CPU measurement was made with)
        rollout_engine = generation.build_rollout_engine(policy, tok, recipe, args.init,
                                                         hp.max_prompt_tokens + hp.max_new_tokens)
    records = [dict(r, id=f"p{i}") for i, r in enumerate(generate_rl(args.prompts, 0, domains=["arithmetic"]))]
    rewards = None
    if args.rm:  # general RL: half the prompts general (IFEval-checked, or open-ended for the reward model)
        from ringctl.data.synth import generate_general
        from ringctl.rewards.rm_scorer import RewardModelScorer
        from ringctl.rewards.sources import RewardMixer, RewardModelSource, VerifierSource
        from ringctl.train.engine import deepspeed_config
        from ringctl.train.models import zero3_enabled

        general = generate_general(args.prompts - args.prompts // 2, 0)
        records = records[:args.prompts // 2] + [dict(r, id=f"g{i}") for i, r in enumerate(general)]
        backends = getattr(recipe, "backends", None)
        scorer = RewardModelScorer(args.rm, batch_tokens=256, deepspeed_config=(
            deepspeed_config(backends.deepspeed) if zero3_enabled(backends) else None))
        rewards = RewardMixer([VerifierSource(), RewardModelSource(model="rm.model")], "normalize_then_sum",
                              {"reward_model": scorer}, reward_workers=1)

    seen: list[str] = []
    real_sample = generation.sample

    def recording_sample(policy, tok, engine_, recs, *a, **kw):
        seen.extend(r["id"] for r in recs)
        return real_sample(policy, tok, engine_, recs, *a, **kw)

    generation.sample = recording_sample
    grads: dict[str, torch.Tensor] = {}
    real_step = engine.step

    def capturing_step(*a, **kw):  # after the backward's all-reduce, before clipping and the optimizer
        for name, p in engine.module.named_parameters():
            if p.grad is not None:
                grads[name] = grads.get(name, 0) + p.grad.detach().clone()
        return real_step(*a, **kw)

    engine.step = capturing_step
    if args.train == "deepspeed":  # the full gradient at the accumulation boundary, before DeepSpeed's step
        from deepspeed.utils import safe_get_full_grad

        real_ds_step = engine.ds.step

        def capturing_ds_step(*a, **kw):
            if engine.ds.is_gradient_accumulation_boundary():
                for name, p in engine.module.named_parameters():
                    g = safe_get_full_grad(p)
                    if g is not None:
                        grads[name] = grads.get(name, 0) + g.detach().float().clone()
            return real_ds_step(*a, **kw)

        engine.ds.step = capturing_ds_step
        engine.step = real_step
    before = {n: _full(p) for n, p in policy.named_parameters()}
    trainer = RLTrainer(policy, tok, engine, rollout_engine, hp, ref_model=ref, rewards=rewards)
    metrics, deferred = trainer.step(records, [], step_seed=1234)
    update = {n: _full(p) - before[n] for n, p in policy.named_parameters()}
    later = [trainer.step(records, deferred, step_seed=1235 + i)[0] for i in range(args.steps - 1)]
    out = Path(args.out)
    torch.save({"seen": seen}, out / f"seen-{rank}.pt")
    if rank == 0:
        torch.save({"grads": grads, "update": update, "metrics": metrics, "later": later}, out / "result.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _full(p):
    """A parameter's full value (gathered under ZeRO-3)."""
    if hasattr(p, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            return p.detach().clone()
    return p.detach().clone()


# ----------------------------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------------------------

def start_checkpoint(work: Path) -> Path:
    """The tiny model after one SFT epoch (what every case starts from)."""
    from bench._tiny_start import prepare_model

    return prepare_model("sft", 1, 0, work)


def run_case(init: Path, nproc: int, scope: str, micro: int = 0, *, prompts: int = 8, k: int = 4,
             budget: int = 512, max_new_tokens: int = 64, minibatches: int = 1, train: str = "torch",
             zero: int = 2, rm: Path | None = None, rollout: str = "hf", steps: int = 1,
             timeout: float = 900, device: str = "cpu", checkpointing: bool = False, chunk: int = 0) -> dict:
    """One RL step from `init` as `nproc` processes (and steps - 1 more, their metrics in "later"); returns
    {"grads", "update", "metrics", "later", "seen": [ids per rank]} of the first step. device="cuda": the policy
    on each rank's GPU (LOCAL_RANK) and nccl between ranks (tests/gpu)."""
    import torch

    with tempfile.TemporaryDirectory(prefix="ringctl-rl-scaling-") as tmp:
        script = [str(Path(__file__).resolve()), "--worker", "--init", str(init), "--out", tmp, "--scope", scope,
                  "--micro", str(micro), "--train", train, "--zero", str(zero),
                  "--prompts", str(prompts), "--k", str(k), "--budget", str(budget),
                  "--max-new-tokens", str(max_new_tokens), "--minibatches", str(minibatches),
                  "--rollout", rollout, "--steps", str(steps), "--device", device, "--chunk", str(chunk),
                  *(["--checkpointing"] if checkpointing else []),
                  *(["--rm", str(rm)] if rm else [])]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   f"--master_port={_free_port()}", *script]
        else:
            cmd = [sys.executable, *script]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        result = torch.load(Path(tmp) / "result.pt", weights_only=False)
        result["seen"] = [torch.load(Path(tmp) / f"seen-{r}.pt", weights_only=False)["seen"] for r in range(nproc)]
        return result


def max_abs_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        raise ValueError(f"different parameters: {sorted(set(a) ^ set(b))[:5]}")
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def update_diff_where_gradient_is_signal(one: dict, other: dict, floor: float = 1e-6) -> float:
    """Max |update difference| over the entries whose gradient is above `floor` (100 x AdamW's eps). AdamW's first
    update is lr * g / (|g| + eps): for |g| near 0 a 1e-9 rounding difference in g moves the update by up to lr,
    so the update is only comparable where the gradient is signal."""
    worst = 0.0
    for name, grad in one["grads"].items():
        mask = grad.abs() > floor
        if mask.any():
            worst = max(worst, float((one["update"][name] - other["update"][name])[mask].abs().max()))
    return worst


def overlap(seen_per_rank: list[list[str]]) -> int:
    """Prompts sampled by more than one rank."""
    owners: dict[str, set[int]] = {}
    for rank, ids in enumerate(seen_per_rank):
        for i in ids:
            owners.setdefault(i, set()).add(rank)
    return sum(1 for ranks in owners.values() if len(ranks) > 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    ap.add_argument("--scope", default="global", choices=["global", "per_rank"])
    ap.add_argument("--micro", type=int, default=0, help="max_tokens_per_micro_batch (0: none)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--budget", type=int, default=512, help="phi (tokens per step)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--minibatches", type=int, default=1)
    ap.add_argument("--train", default="torch", choices=["torch", "deepspeed"])
    ap.add_argument("--zero", type=int, default=2)
    ap.add_argument("--rollout", default="hf", choices=["hf", "vllm"], help="rollout engine (vllm: .venv-vllm)")
    ap.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help=argparse.SUPPRESS)
    ap.add_argument("--rm", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing on the policy")
    ap.add_argument("--chunk", type=int, default=0, help="logprob_chunk_tokens (0: ringctl's default size)")
    ap.add_argument("--memory-tokens", type=int, default=32768)
    ap.add_argument("--memory-vocab", type=int, default=32768)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # as stage_main: communicator threads must not abort the interpreter's exit

    common = dict(prompts=args.prompts, k=args.k, budget=args.budget, max_new_tokens=args.max_new_tokens,
                  minibatches=args.minibatches)
    work = Path(tempfile.mkdtemp(prefix="ringctl-rl-scaling-start-"))
    log("start checkpoint: one SFT epoch of the tiny model")
    init = start_checkpoint(work)
    log("1 process, budget_scope global")
    one = run_case(init, 1, "global", **common)
    log("2 gloo ranks, budget_scope global")
    two = run_case(init, 2, "global", **common)
    log("2 gloo ranks, budget_scope per_rank")
    two_per_rank = run_case(init, 2, "per_rank", **common)
    micro = {}
    for size in (64, 160):
        log(f"1 process, max_tokens_per_micro_batch {size}")
        micro[size] = run_case(init, 1, "global", size, **common)
    grad_scale = max(float(g.abs().max()) for g in one["grads"].values())
    result = {
        "bench": "rl_scaling",
        "grad_max_abs_diff_1v2": max_abs_diff(one["grads"], two["grads"]),
        "grad_max_abs_1rank": grad_scale,
        "update_max_abs_diff_1v2": update_diff_where_gradient_is_signal(one, two),
        "update_max_abs_diff_1v2_all_entries": max_abs_diff(one["update"], two["update"]),
        "tokens_1rank": one["metrics"]["train/tokens"], "tokens_2rank_global": two["metrics"]["train/tokens"],
        "tokens_2rank_per_rank": two_per_rank["metrics"]["train/tokens"],
        "reward_1rank": one["metrics"]["reward/mean"], "reward_2rank": two["metrics"]["reward/mean"],
        "zero_advantage_fraction": one["metrics"]["zero_advantage_fraction"],
        "prompt_overlap": overlap(two["seen"]) + overlap(two_per_rank["seen"]),
        "prompts_per_rank": [len(s) for s in two["seen"]],
        "microbatch_max_abs_diff": max(max_abs_diff(one["grads"], m["grads"]) for m in micro.values()),
        "microbatch_sizes": sorted(micro),
    }
    if not args.skip_memory:
        from bench._logprob_memory import measure

        log(f"log-prob memory: {args.memory_tokens} tokens x vocab {args.memory_vocab}")
        result.update(measure(tokens=args.memory_tokens, vocab=args.memory_vocab))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")


if __name__ == "__main__":
    main()
