"""sft: long-chain-of-thought supervised fine-tuning, one Hugging Face checkpoint per epoch.

    ringctl run recipes/tiny.yaml            # filter -> sft -> select -> reasoning_rl

Set-up (model, tokenizer, packed rows, training train_engine) -> resume if a state exists -> epochs of optimizer steps ->
at every epoch end: HF checkpoint `epoch-N` (with the cumulative SFT tokens, which token efficiency needs),
eval loss on held-out rows and the mean token entropy of the model's own samples on RL prompts.
Loss: sum of token losses over assistant tokens / assistant tokens in the global batch (exact under any split
into ranks and micro-batches). Resumable state every `save_every` steps, at epoch ends and on SIGTERM.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from ringctl.recipe.base import StageRef
from ringctl.train.config import TrainingStageConfig

KIND = "sft"
OUTPUTS = ("checkpoints", "final")
STATE_FILE = "sft_state.pt"


class Config(TrainingStageConfig):
    kind: Literal["sft"] = "sft"
    data: StageRef = Field(..., description="records with prompt + solution, e.g. filter.sft")
    eval_prompts: StageRef | None = Field(None, description="RL prompts for eval/entropy, e.g. filter.rl_reasoning")
    epochs: int = Field(3, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_ratio: float = Field(0.01, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    max_seq_len: int = Field(32_768, ge=16)
    batch_rows: int = Field(256, ge=1, description="packed rows per optimizer step (global)")
    micro_batch_rows: int = Field(1, ge=1, description="rows per forward pass on one rank")
    packing: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    save_every: int = Field(100, ge=1, description="resumable state every N optimizer steps")
    heldout_fraction: float = Field(0.02, ge=0, lt=1, description="samples held out for eval/loss (a seeded draw: "
                                    "ringctl.train.runtime.split_heldout, the rule every stage uses)")
    eval_num_prompts: int = Field(16, ge=0, description="RL prompts sampled for eval/entropy (0: skip)")
    eval_max_new_tokens: int = Field(256, ge=1)

    def validate_for(self, recipe: Any, world_size: int) -> list[str]:
        if self.batch_rows % (world_size * self.micro_batch_rows):
            return [f"batch_rows ({self.batch_rows}) must be divisible by world size x micro_batch_rows "
                    f"({world_size} x {self.micro_batch_rows})"]
        return []

    def trained_max_length(self) -> tuple[str, int] | None:
        return "max_seq_len", self.max_seq_len

    def memory_workload(self, recipe: Any, world_size: int) -> dict | None:
        tokens = self.micro_batch_rows * self.max_seq_len  # packed rows are max_seq_len wide, padding included
        return {"tokens": tokens, "head_tokens": tokens, "fields": ["max_seq_len", "micro_batch_rows"]}

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        ok = self.batch_rows % (world_size * self.micro_batch_rows) == 0
        return [{"check": "batch divisible by world size", "ok": ok,
                 "detail": f"{self.batch_rows} rows / ({world_size} ranks x {self.micro_batch_rows} per micro-batch)"}]


def _records(path) -> list[dict]:
    from ringctl.data.records import iter_jsonl

    records = [r for r in iter_jsonl(path) if r.get("solution")]
    if not records:
        raise ValueError(f"no SFT records with a `solution` in {path}")
    return records


def _row_loss_sum(train_engine, rows, device, chunk_tokens: int | None = None, min_chunks: int = 0) -> tuple[Any, int]:
    """Sum of token cross-entropies over the rows' assistant tokens (no 2D mask: packed rows), through the chunked
    output head (ringctl.train.logprobs.token_loss_sum: never a [tokens, vocab] tensor; chunk_tokens 0: full).

    Labels are shifted per row first; with flash-attention the micro-batch is then flattened into one row,
    because transformers reads packed boundaries from position ids only for batch size 1 (varlen kernels)."""
    import torch

    from ringctl.train.logprobs import token_loss_sum
    from ringctl.train.packing import IGNORE, to_tensors

    input_ids, position_ids, labels = (t.to(device) for t in to_tensors(rows))
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
    config = getattr(getattr(train_engine, "module", train_engine), "config", None)
    if "flash" in str(getattr(config, "_attn_implementation", "")):
        input_ids, position_ids, targets = (t.reshape(1, -1) for t in (input_ids, position_ids, targets))
    return token_loss_sum(train_engine, input_ids, position_ids, targets, IGNORE, chunk_tokens, min_chunks)


def _lockstep_chunks(train_engine, rows, chunks: list[list[int]], chunk_tokens: int | None) -> list[int]:
    """Per micro-batch, the largest output-head chunk count over the ranks: every rank calls the head as often
    (ZeRO-3 gathers the head's weight at each call, collectively)."""
    from ringctl.dist import all_gather_objects
    from ringctl.train.logprobs import head_chunks

    mine = [head_chunks(train_engine, sum(rows[i].loss_tokens for i in chunk), chunk_tokens) for chunk in chunks]
    return [max(counts) for counts in zip(*all_gather_objects(mine), strict=True)]


def _all_reduce_sum(value: float) -> float:
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0])
    return value


@dataclass
class _Data:
    """The packed training rows, the held-out rows and the step counts."""

    rows: list
    held_rows: list
    samples: int
    steps_per_epoch: int
    total_steps: int
    padding: float


def _data(cfg: Config, ctx, tok) -> _Data:
    from ringctl.train import packing
    from ringctl.train.runtime import split_heldout

    samples = [packing.encode_chat(tok, r["prompt"], r["solution"], cfg.max_seq_len)
               for r in _records(ctx.input(cfg.data))]
    train_idx, held_idx = split_heldout(len(samples), cfg.heldout_fraction, ctx.seed)  # the rule every stage uses
    train, held = [samples[i] for i in train_idx], [samples[i] for i in held_idx]
    make_rows = packing.pack if cfg.packing else packing.unpacked
    rows = make_rows(train, cfg.max_seq_len, tok.pad_token_id)
    held_rows = make_rows(held, cfg.max_seq_len, tok.pad_token_id) if held else []
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_rows)
    return _Data(rows, held_rows, len(train), steps_per_epoch, steps_per_epoch * cfg.epochs,
                 packing.padding_fraction(rows))


def run(cfg: Config, ctx) -> dict:
    from ringctl.pipeline.context import Artifact
    from ringctl.train import determinism, packing
    from ringctl.train.checkpoint import EPOCH_INFO, epoch_dir
    from ringctl.train.engine import OptimSpec, barrier, build_engine
    from ringctl.train.models import enable_activation_checkpointing, load_model_and_tokenizer
    from ringctl.train.numerics import NonFiniteGuard
    from ringctl.train.runtime import StageRuntime

    # -- set-up ---------------------------------------------------------------------------------------------------
    rt = StageRuntime(ctx, "sft")
    world = ctx.world_size
    model, tok = load_model_and_tokenizer(ctx.recipe.model, seed=ctx.seed)
    ckpt = enable_activation_checkpointing(model, cfg.checkpointing(ctx.recipe))
    model.to(rt.device)
    data = _data(cfg, ctx, tok)
    spec = OptimSpec(lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup_ratio * data.total_steps),
                     total_steps=data.total_steps, schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio,
                     max_grad_norm=cfg.max_grad_norm,
                     micro_batches=math.ceil(cfg.batch_rows // world / cfg.micro_batch_rows))
    train_engine = build_engine(model, spec, ctx.recipe.backends, world)
    guard = NonFiniteGuard(ctx.stage_name, cfg.on_nonfinite)
    ckpt_root = ctx.outputs_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    rt.log(f"{data.samples} samples -> {len(data.rows)} rows of {cfg.max_seq_len} (padding {data.padding:.1%}), "
           f"{data.steps_per_epoch} steps/epoch x {cfg.epochs} epochs, world {world}, checkpointing {ckpt}")
    c = {"epoch": 0, "batch_idx": 0, "step": 0, "tokens_seen": 0, "input_tokens": 0}  # the resumable counters

    def outputs() -> dict:
        return {"checkpoints": Artifact(ckpt_root, {"epochs": cfg.epochs}),
                "final": Artifact(epoch_dir(ckpt_root, cfg.epochs), {"epoch": cfg.epochs,
                                                                     "sft_tokens": c["tokens_seen"]})}

    state = rt.resume(STATE_FILE)
    if state is not None:
        train_engine.load_state(state.directory / "engine")
        c.update({k: state.head.get(k, 0) for k in c})
        guard.skipped = state.head.get("skipped_steps", 0)
        rng = state.head["rng"]
        determinism.set_rng_state(rng[ctx.rank] if isinstance(rng, list) else rng)
        ctx.tracker.rewind(c["step"])
        if c["epoch"] >= cfg.epochs:  # killed after its last state, before returning: only the outputs are left
            if not epoch_dir(ckpt_root, cfg.epochs).exists():
                raise RuntimeError(f"resume would do zero steps: the state is at step {c['step']} of "
                                   f"{data.total_steps} ({c['epoch']} of {cfg.epochs} epochs done) but "
                                   f"{epoch_dir(ckpt_root, cfg.epochs)} is missing")
            return outputs()
        rt.log(f"resumed at epoch {c['epoch'] + 1}, batch {c['batch_idx']}, step {c['step']}")

    def save_state() -> None:
        rt.save_state(f"step-{c['step']:07d}", train_engine, STATE_FILE,
                      {**c, "skipped_steps": guard.skipped, "rng": determinism.get_rng_state()})

    # -- train ----------------------------------------------------------------------------------------------------
    while c["epoch"] < cfg.epochs:
        order = packing.epoch_order(len(data.rows), c["epoch"], ctx.seed)
        while c["batch_idx"] < data.steps_per_epoch:
            batch = order[c["batch_idx"] * cfg.batch_rows:(c["batch_idx"] + 1) * cfg.batch_rows]
            metrics = _train_step(train_engine, data, batch, cfg, spec.micro_batches, guard.at(c["step"] + 1), rt.device,
                                  ctx.rank, world)
            c["step"] += 1
            c["batch_idx"] += 1
            c["tokens_seen"] += metrics.pop("global_loss_tokens")
            c["input_tokens"] += metrics["real_tokens"]
            ctx.heartbeat()
            _log_step(ctx, rt, c, metrics, data, guard)
            if c["step"] % cfg.save_every == 0 or ctx.should_stop():
                save_state()
            if ctx.should_stop():
                return {}
        c["epoch"] += 1
        c["batch_idx"] = 0
        rt.save_hf(train_engine, tok, epoch_dir(ckpt_root, c["epoch"]), files={EPOCH_INFO: json.dumps(
            {"epoch": c["epoch"], "sft_tokens": c["tokens_seen"], "step": c["step"]}, indent=2)})
        metrics = _epoch_metrics(train_engine.module, tok, data.held_rows, ctx, cfg, rt.device) if ctx.is_main else {}
        barrier()
        ctx.tracker.log_metrics(c["step"], **metrics)
        save_state()
    return outputs()


def _log_step(ctx, rt, c: dict, metrics: dict, data: _Data, guard) -> None:
    # train/tokens: loss (assistant) tokens so far, the SFT cost token efficiency reads;
    # train/input_tokens: all non-padding tokens fed, the count TRL's num_input_tokens_seen reports
    ctx.tracker.log_metrics(c["step"], **{
        "train/loss": metrics["loss"], "train/tokens": c["tokens_seen"], "train/input_tokens": c["input_tokens"],
        "train/tokens_per_s": metrics["tokens_per_s"], "train/padding_fraction": data.padding,
        "grad_norm": metrics["grad_norm"], "lr": metrics["lr"], "epoch": c["epoch"] + 1, **guard.metrics()})
    if c["step"] % 10 == 0 or c["step"] == 1:
        rt.log(f"epoch {c['epoch'] + 1} step {c['step']}/{data.total_steps} loss {metrics['loss']:.4f} "
               f"{metrics['tokens_per_s']:,.0f} tok/s")


def _train_step(train_engine, data: _Data, batch: list[int], cfg: Config, micro_batches: int, at, device, rank: int,
                world: int) -> dict:
    """One optimizer step over the global batch `batch` (row indices): this rank's rows in micro-batches, the
    loss normalised by the global batch's token count. Returns the step's metrics (and its global loss tokens)."""
    t0 = time.perf_counter()
    rows = data.rows
    mine = batch[rank::world]
    global_loss_tokens = sum(rows[i].loss_tokens for i in batch)
    train_engine.model.train()
    loss_sum = 0.0
    chunks = [mine[i:i + cfg.micro_batch_rows] for i in range(0, len(mine), cfg.micro_batch_rows)]
    n_real = len(chunks)
    # a short last batch leaves some ranks with fewer micro-batches: they run zero-weight passes on a real row, so
    # every rank does the same number of forward/backward passes (DDP and ZeRO reduce in backward)
    chunks += [[batch[0]]] * (micro_batches - n_real)
    lockstep = _lockstep_chunks(train_engine, rows, chunks, cfg.logprob_chunk_tokens)
    for k, chunk in enumerate(chunks):
        s, _ = _row_loss_sum(train_engine, [rows[i] for i in chunk], device, cfg.logprob_chunk_tokens, lockstep[k])
        s = at.inject(s)
        # normalised by the global token count; x world because gradients are averaged over ranks
        train_engine.backward(s * (world / global_loss_tokens if k < n_real else 0.0))
        loss_sum += float(s.detach()) if k < n_real else 0.0
    lr = train_engine.lr()  # the rate this step uses (step() advances the schedule)
    # a non-finite loss or gradient norm stops the stage here or withholds the update (on_nonfinite)
    grad_norm = train_engine.step(check=at.check(loss_sum / global_loss_tokens))
    real = sum(rows[i].real_tokens for i in batch)
    loss = _all_reduce_sum(loss_sum) / global_loss_tokens
    return {"loss": loss, "grad_norm": grad_norm, "lr": lr, "real_tokens": real,
            "tokens_per_s": real / (time.perf_counter() - t0), "global_loss_tokens": global_loss_tokens}


def _epoch_metrics(model, tok, held_rows, ctx, cfg: Config, device) -> dict:
    """eval/loss on held-out rows; eval/entropy: mean token entropy of the model's samples on RL prompts."""
    import torch

    from ringctl.train.models import mean_token_entropy

    out: dict = {}
    model.eval()
    with torch.no_grad():
        if held_rows:
            total, count = 0.0, 0
            for i in range(0, len(held_rows), 8):
                s, n = _row_loss_sum(model, held_rows[i:i + 8], device, cfg.logprob_chunk_tokens)
                total, count = total + float(s), count + n
            out["eval/loss"] = total / max(count, 1)
        if cfg.eval_prompts is not None and cfg.eval_num_prompts:
            from ringctl.data.records import iter_jsonl
            from ringctl.rollout.generation import Decoding, build_rollout_engine, sample

            prompts = [r for _, r in zip(range(cfg.eval_num_prompts), iter_jsonl(ctx.input(cfg.eval_prompts)))]
            decoding = Decoding(max_new_tokens=cfg.eval_max_new_tokens, max_prompt_tokens=cfg.max_seq_len // 2)
            rollouts = sample(model, tok, build_rollout_engine(model, tok, None), prompts, decoding, 1, ctx.seed)
            out["eval/entropy"] = mean_token_entropy(model, [r.prompt_ids for r in rollouts],
                                                     [r.response_ids for r in rollouts], pad_id=tok.pad_token_id)
            out["eval/response_length"] = sum(len(r.response_ids) for r in rollouts) / max(len(rollouts), 1)
    return out
