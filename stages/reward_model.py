"""reward_model: a scalar reward model for general RL, trained on preference pairs or wrapped as it is.

    reward_model:                          # train a Bradley-Terry RM on a data stage's pairs
      kind: reward_model
      pairs: prefs.preferences             # {prompt, chosen, rejected} records
      init: sft.final                      # optional: a causal LM checkpoint (its LM head is dropped)
    judge:                                 # or use an existing sequence-classification RM
      kind: reward_model
      path: /models/Skywork-Reward-V2-Qwen3-0.6B
      pairs: prefs.preferences             # optional: its held-out accuracy on these pairs, nothing trained

Training, top to bottom: model (init checkpoint, the recipe's model, or the tiny default, each with a fresh
one-output score head) -> every pair's two sequences through `rm_input_ids` (the RM's own chat template, thinking
stripped, the response cut from its start when too long: the same function the scorer uses at RL time) -> a
seeded held-out slice -> epochs of optimizer steps with loss = mean over pairs of -log sigmoid(r_chosen -
r_rejected) -> held-out accuracy and margin at step 0 and after every epoch -> the Hugging Face directory
`model` (sequence classifier + tokenizer + chat template) and `report`. Each step's pairs are split over the
ranks and the loss normalised by the global batch, so N ranks make the single-process update.

The stage is short and keeps no resumable state: a stopped or killed stage starts again from scratch, and the
same seed reproduces the same result.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ringctl.recipe.base import StageRef
from ringctl.train.config import TrainingStageConfig

KIND = "reward_model"
OUTPUTS = ("model", "report")
REPORT_JSON = "report.json"
NO_CHAT_TEMPLATE = "no chat template"  # how check_reward_model_dir's template problem begins
MODEL_DIR = "model"


def _is_local(path: str) -> bool:
    """A path, not a hub id (`org/name`): explicit path syntax, or a directory that exists here."""
    return path.startswith(("/", "./", "../", "~")) or path in (".", "..") or Path(path).expanduser().is_dir()


class Config(TrainingStageConfig):
    kind: Literal["reward_model"] = "reward_model"
    path: str | None = Field(None, description="an existing sequence-classification RM (a local directory or a "
                             "hub id, e.g. Skywork/Skywork-Reward-V2-Qwen3-0.6B), used as it is: nothing trained")
    pairs: StageRef | None = Field(None, description="preference pairs {prompt, chosen, rejected}, e.g. "
                                   "prefs.preferences: train on them (no path) or measure the wrapped RM on them")
    init: StageRef | None = Field(None, description="checkpoint to train from, e.g. sft.final (a causal LM: its LM "
                                  "head is dropped, the score head is new); default: the recipe's model")
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_pairs: int = Field(16, ge=1, description="pairs per optimizer step (global)")
    micro_batch_pairs: int = Field(16, ge=1, description="pairs per forward pass on one rank")
    max_length: int = Field(512, ge=8, description="tokens per (prompt, response) sequence; longer ones lose the "
                            "start of the response (the final answer is kept), then the start of the prompt")
    heldout_fraction: float = Field(0.1, ge=0, le=1, description="seeded slice of the pairs held out of training "
                                    "(also the slice a wrapped RM is measured on, so the two compare; 1: all)")
    score_batch_tokens: int = Field(65536, ge=1, description="padded tokens per forward when scoring held-out pairs")
    strip_thinking: bool = Field(True, description="drop <think>...</think> from responses before templating")
    template: Literal["chat", "plain"] = Field("chat", description="chat: the RM tokenizer's chat template; plain: "
                                               "'prompt\\n\\nresponse' + eos (an RM trained without one)")
    log_every: int = Field(1, ge=1, description="train/loss and train/accuracy every N optimizer steps")

    @model_validator(mode="after")
    def _one_source_of_the_model(self) -> Config:
        if self.path is None and self.pairs is None:
            raise ValueError("a reward_model stage needs `path:` (an existing sequence-classification RM, used as "
                             "it is) or `pairs:` (preference pairs to train one on, e.g. prefs.preferences)")
        if self.path is not None and self.init is not None:
            raise ValueError("`init:` is the starting point of training, but `path:` wraps an existing RM without "
                             "training: give one of them")
        if self.path is None and self.heldout_fraction >= 1:
            raise ValueError("heldout_fraction 1 holds out every pair: nothing is left to train on")
        return self

    @property
    def trains(self) -> bool:
        return self.path is None

    def external_files(self) -> list[str]:
        return [self.path] if self.path is not None and _is_local(self.path) else []

    def validate_for(self, recipe: Any, world_size: int) -> list[str]:
        from ringctl.rewards.rm_scorer import check_reward_model_dir

        problems = []
        if self.path is not None and _is_local(self.path) and Path(self.path).expanduser().is_dir():
            # a missing directory is reported by the input check (external_files), with its line
            problems += [f"path {self.path}: {p}" for p in check_reward_model_dir(Path(self.path).expanduser())
                         if self.template == "chat" or not p.startswith(NO_CHAT_TEMPLATE)]
        backends = getattr(recipe, "backends", None)
        if self.trains and backends is not None and backends.train == "deepspeed" and \
                backends.deepspeed.zero_stage == 3:
            problems.append("reward_model trains with torch or DeepSpeed ZeRO 0-2 (its held-out scoring runs on "
                            "each rank's share of the pairs, which ZeRO-3's gathers do not allow)")
        return problems

    def is_reward_model(self, output: str) -> bool:
        return output == "model"

    def chat_template_problem(self, output: str) -> str | None:
        """Why a wrapped local RM cannot read (prompt, response) through its own chat template, or None (also when
        that is known only at run time: a hub id, or a trained RM, which saves its tokenizer's template)."""
        from ringctl.rewards.rm_scorer import check_reward_model_dir

        if output != "model" or self.path is None or \
                not (_is_local(self.path) and Path(self.path).expanduser().is_dir()):
            return None
        found = [p for p in check_reward_model_dir(Path(self.path).expanduser()) if p.startswith(NO_CHAT_TEMPLATE)]
        return f"reward model {self.path}: {found[0]}" if found else None

    def memory_workload(self, recipe: Any, world_size: int) -> dict | None:
        if not self.trains:
            return None
        # a chosen and a rejected sequence per pair, padded to the longest; the score head is [tokens, 1]
        tokens = 2 * self.micro_batch_pairs * self.max_length
        return {"tokens": tokens, "head_tokens": 0, "lm_head": False, "fields": ["max_length", "micro_batch_pairs"]}

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        if not self.trains:
            return [{"check": "reward model is wrapped", "ok": True, "detail": f"{self.path} (nothing trained)"}]
        per_rank = math.ceil(self.batch_pairs / world_size)
        return [{"check": "every rank has pairs each step", "ok": self.batch_pairs >= world_size,
                 "detail": f"{self.batch_pairs} pairs / {world_size} ranks (up to {per_rank} each, "
                           f"{math.ceil(per_rank / self.micro_batch_pairs)} micro-batches)"}]


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------
def _read_pairs(path) -> list[dict]:
    from ringctl.data.records import iter_jsonl

    pairs = [r for r in iter_jsonl(path) if r.get("prompt") is not None and r.get("chosen") is not None
             and r.get("rejected") is not None]
    if not pairs:
        raise ValueError(f"no preference pairs (records with prompt, chosen and rejected) in {path}")
    return pairs


def heldout_seed(seed: int) -> int:
    """The seed of the held-out split (ringctl.train.runtime.split_heldout): a trained and a wrapped stage with the
    same seed hold out the same pairs."""
    return seed * 1_000_003 + 41


def _encode_pairs(tok, pairs: list[dict], cfg: Config) -> tuple[list[list[int]], list[list[int]]]:
    from ringctl.rewards.rm_scorer import rm_input_ids

    def ids(r, side):
        return rm_input_ids(tok, str(r["prompt"]), str(r[side]), cfg.max_length, cfg.strip_thinking, cfg.template)

    return [ids(r, "chosen") for r in pairs], [ids(r, "rejected") for r in pairs]


# ------------------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------------------
def _build_classifier(cfg: Config, ctx):
    """(sequence classifier with one output, tokenizer): from `init`, from the recipe's model, or the tiny
    default built from its config; the new score head is drawn from the stage's seed."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ringctl.rewards.rm_scorer import ensure_pad_token
    from ringctl.train.models import apply_experts_implementation, build_char_tokenizer, tiny_model_config

    model_cfg = ctx.recipe.model
    source = str(ctx.input(cfg.init)) if cfg.init is not None else model_cfg.name_or_path
    attn = model_cfg.attn_implementation or "sdpa"
    torch.manual_seed(ctx.seed)
    if source == "tiny":
        tok = build_char_tokenizer()
        config = tiny_model_config(model_cfg.tiny, len(tok))
        config.num_labels = 1
        config.pad_token_id, config.bos_token_id, config.eos_token_id = (tok.pad_token_id, tok.bos_token_id,
                                                                         tok.eos_token_id)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn,
                                                               dtype=torch.float32)
    else:
        dtype = getattr(torch, model_cfg.dtype) if model_cfg.dtype != "auto" else "auto"
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype=dtype, attn_implementation=attn, trust_remote_code=model_cfg.trust_remote_code)
    apply_experts_implementation(model, model_cfg.experts_implementation)
    ensure_pad_token(model, tok)
    return model, tok


def _heldout_metrics(model, held: list[int], chosen, rejected, pad_id: int, device, batch_tokens: int) -> dict:
    """rm/heldout_accuracy (r_chosen > r_rejected), rm/margin (mean r_chosen - r_rejected), rm/heldout_pairs:
    each rank scores its share of the held-out pairs, the counts are summed over ranks."""
    import torch

    from ringctl.dist import rank_and_world, shard_bounds, sum_over_ranks
    from ringctl.rewards.rm_scorer import forward_scores, token_batches

    rank, world = rank_and_world()
    lo, hi = shard_bounds(len(held), rank, world)
    mine = held[lo:hi]
    ids = [chosen[i] for i in mine] + [rejected[i] for i in mine]
    scores = [0.0] * len(ids)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in token_batches([len(x) for x in ids], batch_tokens) if ids else []:
            for i, s in zip(batch, forward_scores(model, [ids[i] for i in batch], pad_id, "right", device).tolist()):
                scores[i] = s
    model.train(was_training)
    diffs = [scores[k] - scores[k + len(mine)] for k in range(len(mine))]
    total = sum_over_ranks({"n": len(diffs), "correct": sum(d > 0 for d in diffs), "margin": sum(diffs)})
    n = int(total.get("n", 0))
    return {"rm/heldout_accuracy": total["correct"] / n, "rm/margin": total["margin"] / n,
            "rm/heldout_pairs": n} if n else {"rm/heldout_pairs": 0}


def _report(ctx, mode: str, path: Path, metrics: dict, train_pairs: int) -> Path:
    from ringctl import artifacts

    report = {"mode": mode, "path": str(path), "heldout_accuracy": metrics.get("rm/heldout_accuracy"),
              "margin": metrics.get("rm/margin"), "heldout_pairs": int(metrics.get("rm/heldout_pairs", 0)),
              "train_pairs": train_pairs}
    target = ctx.outputs_dir / REPORT_JSON
    artifacts.atomic_write_json(target, report)
    ctx.tracker.log_artifact(target)
    return target


# ------------------------------------------------------------------------------------------------------------
# wrap: an existing RM, measured on the held-out pairs when given
# ------------------------------------------------------------------------------------------------------------
def _resolve_path(path: str) -> Path:
    """A local directory as it is; a hub id through the Hugging Face cache (downloaded unless HF_HUB_OFFLINE)."""
    from ringctl.rewards.rm_scorer import check_reward_model_dir, hub_offline

    if _is_local(path):
        local = Path(path).expanduser()
    else:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(path, local_files_only=hub_offline()))
    problems = check_reward_model_dir(local)
    if problems:
        raise ValueError(f"reward model {path}: " + "; ".join(problems))
    return local


def _wrap(cfg: Config, ctx) -> dict:
    from ringctl.pipeline.context import Artifact
    from ringctl.rewards.rm_scorer import RewardModelScorer
    from ringctl.train.device import rank_device
    from ringctl.train.runtime import split_heldout

    if not ctx.is_main:  # nothing to train: one process scores
        return {}
    path = _resolve_path(cfg.path)
    metrics: dict = {}
    if cfg.pairs is not None:
        pairs = _read_pairs(ctx.input(cfg.pairs))
        _, held = split_heldout(len(pairs), cfg.heldout_fraction, heldout_seed(ctx.seed))
        device = rank_device(ctx.recipe.resources.device, ctx.local_rank)
        scorer = RewardModelScorer(path, device=device, max_length=cfg.max_length,
                                   batch_tokens=cfg.score_batch_tokens, strip_thinking=cfg.strip_thinking,
                                   template=cfg.template)
        chosen, rejected = _encode_pairs(scorer.tokenizer, [pairs[i] for i in held], cfg)
        metrics = _heldout_metrics(scorer.model, list(range(len(held))), chosen, rejected, scorer.pad_id, device,
                                   cfg.score_batch_tokens)
        ctx.tracker.log_metrics(0, **metrics)
        print(f"[reward_model] {path}: held-out accuracy {metrics.get('rm/heldout_accuracy', float('nan')):.3f}, "
              f"margin {metrics.get('rm/margin', float('nan')):.3f} on {len(held)} pairs", file=sys.stderr,
              flush=True)
    report = _report(ctx, "wrapped", path, metrics, 0)
    return {"model": Artifact(path, {"mode": "wrapped"}), "report": Artifact(report, {})}


# ------------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------------
def run(cfg: Config, ctx) -> dict:
    if not cfg.trains:
        return _wrap(cfg, ctx)
    from ringctl.pipeline.context import Artifact
    from ringctl.train.engine import OptimSpec, barrier, build_engine
    from ringctl.train.models import enable_activation_checkpointing
    from ringctl.train.numerics import NonFiniteGuard
    from ringctl.train.runtime import StageRuntime, split_heldout

    # -- set-up ---------------------------------------------------------------------------------------------------
    rt = StageRuntime(ctx, "reward_model")
    world = ctx.world_size
    model, tok = _build_classifier(cfg, ctx)
    enable_activation_checkpointing(model, cfg.checkpointing(ctx.recipe))
    model.to(rt.device)
    pairs = _read_pairs(ctx.input(cfg.pairs))
    chosen, rejected = _encode_pairs(tok, pairs, cfg)
    train, held = split_heldout(len(pairs), cfg.heldout_fraction, heldout_seed(ctx.seed))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_pairs)
    # the same number of forward/backward passes on every rank (DDP and ZeRO reduce in backward)
    micro_batches = math.ceil(math.ceil(cfg.batch_pairs / world) / cfg.micro_batch_pairs)
    spec = OptimSpec(lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                     total_steps=steps_per_epoch * cfg.epochs, schedule=cfg.schedule, max_grad_norm=cfg.max_grad_norm,
                     micro_batches=micro_batches)
    train_engine = build_engine(model, spec, ctx.recipe.backends, world)
    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    if ctx.is_main:
        print(f"[reward_model] {len(train)} training pairs, {len(held)} held out (longest sequence "
              f"{max(len(x) for x in chosen + rejected)} tokens), {steps_per_epoch} steps/epoch x {cfg.epochs} "
              f"epochs, world {world}", file=sys.stderr, flush=True)

    def measure_heldout() -> dict:
        return _heldout_metrics(train_engine.module, held, chosen, rejected, int(tok.pad_token_id), rt.device,
                                cfg.score_batch_tokens)

    metrics = measure_heldout()
    ctx.tracker.log_metrics(0, **metrics)  # the untrained baseline

    # -- train ----------------------------------------------------------------------------------------------------
    batches = _Batches(chosen, rejected, int(tok.pad_token_id), rt.device, micro_batches, ctx.rank, world)
    step = 0
    train_engine.model.train()
    for epoch in range(cfg.epochs):
        order = list(train)
        random.Random((ctx.seed * 1_000_003 + 43) * 1_000 + epoch).shuffle(order)
        epoch_sums = {"loss": 0.0, "correct": 0.0, "n": 0.0}
        for b in range(steps_per_epoch):
            if ctx.should_stop():  # no resumable state: a resume starts over, with the same result
                return {}
            batch = order[b * cfg.batch_pairs:(b + 1) * cfg.batch_pairs]
            lr = train_engine.lr()
            total, grad_norm, seconds = batches.step(train_engine, batch, cfg, guard.at(step + 1))
            step += 1
            for key in ("loss", "correct"):
                epoch_sums[key] += total[key]
            epoch_sums["n"] += len(batch)
            if step % cfg.log_every == 0 or step == steps_per_epoch * cfg.epochs:
                n = len(batch)
                ctx.tracker.log_metrics(step, **{
                    "train/loss": total["loss"] / n, "train/accuracy": total["correct"] / n,
                    "train/margin": total["margin"] / n, "train/pairs_per_s": n / seconds, "grad_norm": grad_norm,
                    "lr": lr, "epoch": epoch + 1, **guard.metrics()})
        metrics = measure_heldout()
        ctx.tracker.log_metrics(step, **metrics)
        if ctx.is_main:
            print(f"[reward_model] epoch {epoch + 1}/{cfg.epochs} step {step}: train loss "
                  f"{epoch_sums['loss'] / epoch_sums['n']:.4f} accuracy {epoch_sums['correct'] / epoch_sums['n']:.3f}"
                  f", held-out accuracy {metrics.get('rm/heldout_accuracy', float('nan')):.3f} margin "
                  f"{metrics.get('rm/margin', float('nan')):.3f}", file=sys.stderr, flush=True)

    # -- save: a Hugging Face sequence classifier + tokenizer (chat template), renamed into place when complete --
    target = rt.save_hf(train_engine, tok, ctx.outputs_dir / MODEL_DIR)
    report = _report(ctx, "trained", target, metrics, len(train)) if ctx.is_main else None
    barrier()
    return {"model": Artifact(target, {"mode": "trained", "heldout_accuracy": metrics.get("rm/heldout_accuracy")}),
            "report": Artifact(report or ctx.outputs_dir / REPORT_JSON, {})}


class _Batches:
    """One optimizer step of the Bradley-Terry loss over a global batch of pair indices: this rank's share in
    micro-batches (padding passes on a real pair keep the ranks in step), the loss averaged over the global batch."""

    def __init__(self, chosen, rejected, pad_id: int, device, micro_batches: int, rank: int, world: int):
        self.chosen, self.rejected, self.pad_id, self.device = chosen, rejected, pad_id, device
        self.micro_batches, self.rank, self.world = micro_batches, rank, world

    def step(self, train_engine, batch: list[int], cfg: Config, at) -> tuple[dict, float | None, float]:
        """(the step's sums over all ranks, the gradient norm, seconds)."""
        import torch.nn.functional as F

        from ringctl.dist import shard_bounds, sum_over_ranks
        from ringctl.rewards.rm_scorer import forward_scores

        t0 = time.perf_counter()
        lo, hi = shard_bounds(len(batch), self.rank, self.world)
        mine = batch[lo:hi]
        chunks = [mine[i:i + cfg.micro_batch_pairs] for i in range(0, len(mine), cfg.micro_batch_pairs)]
        n_real = len(chunks)
        chunks += [[batch[0]]] * (self.micro_batches - n_real)
        sums = {"loss": 0.0, "correct": 0.0, "margin": 0.0}
        grad_norm = None
        for k, chunk in enumerate(chunks):
            scores = forward_scores(train_engine, [self.chosen[i] for i in chunk] + [self.rejected[i] for i in chunk],
                                    self.pad_id, "right", self.device)
            diff = scores[:len(chunk)] - scores[len(chunk):]
            loss_sum = at.inject(-F.logsigmoid(diff).sum())
            # mean over the global batch; x world because the engines average gradients over ranks
            weight = self.world / len(batch) if k < n_real else 0.0
            if k < n_real:
                sums["loss"] += float(loss_sum.detach())
                sums["correct"] += float((diff.detach() > 0).sum())
                sums["margin"] += float(diff.detach().sum())
            last = k == len(chunks) - 1
            # a non-finite loss or gradient norm stops the stage or withholds the update (on_nonfinite)
            grad_norm = train_engine.accumulate(loss_sum * weight, last=last,
                                          check=at.check(sums["loss"] / len(batch)) if last else None)
        total = sum_over_ranks(sums)
        return total, grad_norm, time.perf_counter() - t0
