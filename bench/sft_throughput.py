"""SFT training throughput: ringctl's SFT stage vs TRL's SFTTrainer (packing on) and the plain HF Trainer.

    .venv/bin/python bench/sft_throughput.py --json

Same model (the tiny Qwen3-MoE, saved once in Hugging Face format and loaded by all three), same data (synthetic
long-CoT records from ringctl.data.synth, all domains), same sequence length, rows per step, optimizer (AdamW,
constant lr, clipping 1.0), sdpa attention, fp32, threads, one epoch, loss on the assistant turn only, run back to
back in one process.
- ringctl: stages/sft.py, best-fit-decreasing packing into rows of --max-seq-len, position ids restart per sample.
- TRL: SFTTrainer with packing=True (its default "bfd" strategy, padding-free: a step's rows are flattened into
  one sequence), prompt-completion conversational data (completion-only loss). Without flash-attention (CPU,
  sdpa) that one sequence of batch_rows x max_seq_len tokens gets a dense block-diagonal mask, so its attention
  cost grows with the square of the whole step; ringctl keeps rows of max_seq_len and resets position ids.
- TRL unpacked (reference, not the anchor): the same SFTTrainer with packing=False, one sample per row.
- HF Trainer: one sample per row, dynamic padding (DataCollatorForSeq2Seq), --batch-rows samples per step.
tokens/s = non-padding input tokens (prompt + response) / training-loop seconds: for ringctl from the stage's
per-step metrics (train/input_tokens, train/tokens_per_s), for the trainers from `num_input_tokens_seen`
(include_num_input_tokens_seen="non_padding") / train_runtime. End-to-end figures (tokenization, packing, model
load, checkpoint) are reported too.
Last stdout line with --json: {"bench": "sft_throughput", "metric": "tokens_per_s", "ringctl": x, "trl": y,
"ratio": x / y, "hf_trainer": z, "ratio_hf_trainer": x / z, ...details}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._tiny_start import add_common_args, parse_args  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def make_data(path: Path, n: int, seed: int, difficulty: int) -> list[dict]:
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import DOMAINS, generate_sft

    records = [dict(r) for r in generate_sft(n, seed, domains=DOMAINS, difficulty=difficulty)]
    write_jsonl(path, records)
    return records


def run_ringctl(model_dir: Path, data: Path, work: Path, args) -> dict:
    import stages.sft as sft
    from ringctl.pipeline.context import StageContext
    from ringctl.recipe.schema import ResourcesConfig
    from ringctl.train.config import BackendsConfig, ModelConfig

    recipe = SimpleNamespace(model=ModelConfig(name_or_path=str(model_dir), attn_implementation="sdpa"),
                             backends=BackendsConfig(), resources=ResourcesConfig(), seed=args.seed,
                             deterministic=False)
    ctx = StageContext.for_test(work, "sft", inputs={"data.sft": data}, recipe=recipe, seed=args.seed)
    cfg = sft.Config(data="data.sft", epochs=1, lr=args.lr, weight_decay=0.0, warmup_ratio=0.0, schedule="constant",
                     max_seq_len=args.max_seq_len, batch_rows=args.batch_rows, micro_batch_rows=args.batch_rows,
                     save_every=10**6, heldout_fraction=0.0, eval_num_prompts=0)
    t0 = time.perf_counter()
    sft.run(cfg, ctx)
    wall = time.perf_counter() - t0
    steps = [r for r in ctx.tracker.history() if "train/loss" in r]
    tokens, seconds, prev = 0.0, 0.0, 0.0
    for r in steps:
        fed = r["train/input_tokens"] - prev
        prev = r["train/input_tokens"]
        tokens += fed
        seconds += fed / r["train/tokens_per_s"]
    return {"tokens_per_s": tokens / seconds, "tokens": int(tokens), "train_s": seconds, "steps": len(steps),
            "end_to_end_s": wall, "end_to_end_tokens_per_s": tokens / wall,
            "padding_fraction": steps[0]["train/padding_fraction"],
            "first_loss": steps[0]["train/loss"], "last_loss": steps[-1]["train/loss"]}


def _trainer_result(trainer, build_s: float) -> dict:
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    tokens = int(trainer.state.num_input_tokens_seen)
    runtime = float(out.metrics["train_runtime"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": tokens / runtime, "tokens": tokens, "train_s": runtime,
            "steps": int(trainer.state.global_step), "end_to_end_s": build_s + wall,
            "end_to_end_tokens_per_s": tokens / (build_s + wall),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def _common_args(args, out_dir: Path) -> dict:
    return dict(output_dir=str(out_dir), per_device_train_batch_size=args.batch_rows, gradient_accumulation_steps=1,
                num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                use_cpu=True, seed=args.seed, dataloader_num_workers=0, disable_tqdm=True,
                include_num_input_tokens_seen="non_padding")


def _load_model(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model, AutoTokenizer.from_pretrained(model_dir)


def run_trl(model_dir: Path, records: list[dict], work: Path, args, packing: bool = True) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = _load_model(model_dir)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                  "completion": [{"role": "assistant", "content": r["solution"]}]} for r in records])
    t0 = time.perf_counter()
    config = SFTConfig(**_common_args(args, work / "trl"), max_length=args.max_seq_len, packing=packing,
                       completion_only_loss=True, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok)
    return _trainer_result(trainer, time.perf_counter() - t0)


def run_hf_trainer(model_dir: Path, records: list[dict], work: Path, args) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from ringctl.train.packing import encode_chat

    model, tok = _load_model(model_dir)
    t0 = time.perf_counter()
    samples = [encode_chat(tok, r["prompt"], r["solution"], args.max_seq_len) for r in records]
    dataset = Dataset.from_list([{"input_ids": s.input_ids, "labels": s.labels} for s in samples])
    trainer = Trainer(model=model, args=TrainingArguments(**_common_args(args, work / "hf")), train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    return _trainer_result(trainer, time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--difficulty", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--batch-rows", type=int, default=8, help="rows (packed) or samples (HF Trainer) per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--skip-hf-trainer", action="store_true")
    p.add_argument("--skip-unpacked", action="store_true", help="skip the extra TRL run without packing")
    add_common_args(p, start=False)
    args = parse_args(p)
    import torch

    from ringctl.train.config import ModelConfig
    from ringctl.train.models import save_tiny

    # the stage and the trainers print progress on stdout: keep stdout for the results
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp, contextlib.redirect_stdout(sys.stderr):
        work = Path(tmp)
        model_dir = save_tiny(ModelConfig(attn_implementation="sdpa"), work / "model", seed=args.seed)
        records = make_data(work / "sft.jsonl", args.samples, args.seed, args.difficulty)
        log(f"{len(records)} records, rows of {args.max_seq_len}, {args.batch_rows} rows/step, "
            f"{args.threads} threads")
        results = {}
        log("ringctl SFT stage ...")
        results["ringctl"] = run_ringctl(model_dir, work / "sft.jsonl", work, args)
        log(f"ringctl: {results['ringctl']['tokens_per_s']:,.0f} tokens/s")
        torch.manual_seed(args.seed)
        log("TRL SFTTrainer (packing) ...")
        results["trl"] = run_trl(model_dir, records, work, args)
        log(f"TRL: {results['trl']['tokens_per_s']:,.0f} tokens/s")
        if not args.skip_unpacked:
            torch.manual_seed(args.seed)
            log("TRL SFTTrainer (no packing, for reference) ...")
            results["trl_unpacked"] = run_trl(model_dir, records, work, args, packing=False)
            log(f"TRL unpacked: {results['trl_unpacked']['tokens_per_s']:,.0f} tokens/s")
        if not args.skip_hf_trainer:
            torch.manual_seed(args.seed)
            log("HF Trainer (no packing, dynamic padding) ...")
            results["hf_trainer"] = run_hf_trainer(model_dir, records, work, args)
            log(f"HF Trainer: {results['hf_trainer']['tokens_per_s']:,.0f} tokens/s")

    x, y = results["ringctl"]["tokens_per_s"], results["trl"]["tokens_per_s"]
    doc = {"bench": "sft_throughput", "metric": "tokens_per_s", "ringctl": round(x, 1), "trl": round(y, 1),
           "ratio": round(x / y, 3)}
    if "hf_trainer" in results:
        z = results["hf_trainer"]["tokens_per_s"]
        doc.update(hf_trainer=round(z, 1), ratio_hf_trainer=round(x / z, 3))
    if "trl_unpacked" in results:
        doc.update(trl_unpacked=round(results["trl_unpacked"]["tokens_per_s"], 1))
    doc.update(samples=args.samples, max_seq_len=args.max_seq_len, batch_rows=args.batch_rows, threads=args.threads,
               details=results)
    for name, r in results.items():
        print(f"{name:>11}: {r['tokens_per_s']:9,.0f} tokens/s  ({r['tokens']:,} tokens, {r['steps']} steps, "
              f"{r['train_s']:.1f} s train, {r['end_to_end_s']:.1f} s end to end)")
    print(f"ratio ringctl / TRL SFTTrainer: {x / y:.2f}x" +
          (f", ringctl / HF Trainer: {doc['ratio_hf_trainer']:.2f}x" if "hf_trainer" in doc else ""))
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
