"""Peak memory of one SFT and one RL training step at long lengths, before and after, measured vs predicted.

    .venv/bin/python bench/long_context_memory.py --json                 # 2K, 8K and 16K tokens (CPU, ~20 min)
    .venv/bin/python bench/long_context_memory.py --tokens 2048 --json   # one length
    .venv/bin/python bench/long_context_memory.py --device cuda --dtype bfloat16 --tokens 32768 --hidden 2048 ...

A Qwen3-MoE built from a config (random weights, nothing downloaded), trained through ringctl's own code: SFT's
loss is `ringctl.train.logprobs.token_loss_sum` (packed row, position ids), RL's is `response_logprobs` +
`policy_loss` (entropy bonus on, so the entropy has a graph), both on ringctl's TorchEngine (AdamW). Variants:
`full` (the full-vocab head, chunk 0) without activation checkpointing, what ringctl did before; `chunked` (the
default head) without; `full+ckpt`; `chunked+ckpt` (the long-context setting). Each row is one optimizer step on
one micro-batch of `tokens` tokens, taken after a warm-up step (AdamW's states exist) with the gradients already
allocated (the state of every micro-batch after the first of a step, which the model assumes).

Measured: on CUDA torch.cuda.max_memory_allocated; on CPU the peak of the bytes of all live tensor storages
(every storage an operator creates is counted until it is freed, plus the parameters, gradients and optimizer
states present at the start): the quantity the CUDA figure reports, without the allocator's caching.
Predicted: `ringctl.train.memory.estimate` from the model's config alone (what `ringctl plan` prints).

Output: one row per (stage, tokens, variant) with measured_mib, predicted_mib, error (predicted / measured - 1)
and, per (stage, tokens), `saving`: full / chunked+ckpt peak. --json prints {"rows": [...], "summary": {...}}.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = {"full": (0, False), "chunked": (None, False), "full+ckpt": (0, True), "chunked+ckpt": (None, True)}
PROMPT, RESPONSE = 128, 896  # RL rows: tokens per prompt and per response


def live_bytes_tracker():
    """A TorchDispatchMode counting the bytes of live tensor storages (CPU's stand-in for max_memory_allocated)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self, existing):
            super().__init__()
            self.live, self.peak, self._refs = 0, 0, {}
            for t in existing:
                self._track(t)

        def _track(self, t) -> None:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                return
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._refs:
                return
            n = storage.nbytes()
            self.live += n
            self.peak = max(self.peak, self.live)
            self._refs[key] = weakref.ref(storage, lambda _, key=key, n=n: self._gone(key, n))

        def _gone(self, key: int, n: int) -> None:
            self.live -= n
            self._refs.pop(key, None)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                self._track(t)
            return out

    return LiveBytes


def model_config(args) -> dict:
    return {"vocab_size": args.vocab, "hidden_size": args.hidden, "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "head_dim": args.head_dim,
            "moe_intermediate_size": args.expert_inter, "intermediate_size": 2 * args.expert_inter,
            "num_experts": args.experts, "num_experts_per_tok": args.top_k, "tie_word_embeddings": False,
            "max_position_embeddings": max(args.tokens) + 1}


def _build(args, checkpointing: bool):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from ringctl.train.engine import OptimSpec, TorchEngine
    from ringctl.train.models import apply_experts_implementation, enable_activation_checkpointing

    torch.manual_seed(0)
    config = Qwen3MoeConfig(**model_config(args))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=getattr(torch, args.dtype))
    apply_experts_implementation(model, "auto")
    enable_activation_checkpointing(model, checkpointing)
    model.to(args.device).train()
    return model, TorchEngine(model, OptimSpec(lr=1e-4, total_steps=10))


def _sft_loss(engine, tokens: int, chunk, device):
    import torch

    from ringctl.train.logprobs import token_loss_sum

    g = torch.Generator().manual_seed(tokens)
    ids = torch.randint(3, engine.module.config.vocab_size, (1, tokens), generator=g).to(device)
    positions = torch.arange(tokens, device=device)[None]
    targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
    loss, count = token_loss_sum(engine, ids, positions, targets, -100, chunk)
    return loss / count


def _rl_loss(engine, tokens: int, chunk, device):
    import torch

    from ringctl.rl.loss import LossCoefficients, policy_loss
    from ringctl.train.logprobs import build_training_batch, response_logprobs

    rows = max(1, tokens // (PROMPT + RESPONSE))
    g = torch.Generator().manual_seed(tokens)
    vocab = engine.module.config.vocab_size
    prompts = [torch.randint(3, vocab, (PROMPT,), generator=g).tolist() for _ in range(rows)]
    responses = [torch.randint(3, vocab, (RESPONSE,), generator=g).tolist() for _ in range(rows)]
    batch = build_training_batch(prompts, responses).to(device)
    out = response_logprobs(engine.model, batch, 1.0, with_entropy=True, chunk_tokens=chunk)
    adv = torch.randn(rows, generator=g).to(device)
    loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach(), adv, batch.loss_mask,
                          token_budget=rows * RESPONSE, coefs=LossCoefficients(kl_beta=0.0, entropy_coef=1e-3,
                                                                               load_balance_coef=0.0, z_loss_coef=0.0),
                          entropy=out["entropy"])
    return loss


def measure(args, stage: str, tokens: int, variant: str) -> dict:
    """One optimizer step of `stage` at `tokens` tokens: (measured peak bytes, predicted bytes, parts)."""
    import torch

    chunk, ckpt = VARIANTS[variant]
    if chunk is None:
        chunk = getattr(args, "chunk_tokens", None)  # None: ringctl's default size
    model, engine = _build(args, ckpt)
    loss_fn = _sft_loss if stage == "sft" else _rl_loss
    engine.backward(loss_fn(engine, 64 if stage == "sft" else PROMPT + RESPONSE, chunk, args.device))
    engine.step()  # warm-up: AdamW's states exist, the lazily built code paths ran
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # a later micro-batch of the step: gradients are allocated
    gc.collect()
    t0 = time.perf_counter()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        engine.backward(loss_fn(engine, tokens, chunk, args.device))
        engine.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        existing = [*model.parameters(), *(p.grad for p in model.parameters())]
        existing += [t for s in engine.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        with live_bytes_tracker()(existing) as tracker:
            engine.backward(loss_fn(engine, tokens, chunk, args.device))
            engine.step()
        peak = tracker.peak
    seconds = time.perf_counter() - t0
    predicted = predict(args, model.config.to_dict(), stage, tokens, chunk, ckpt)
    del model, engine
    gc.collect()
    return {"stage": stage, "tokens": tokens, "variant": variant, "measured_mib": round(peak / 2**20, 1),
            "predicted_mib": round(predicted.total_bytes / 2**20, 1),
            "error": round(predicted.total_bytes / peak - 1, 3), "seconds": round(seconds, 1),
            "predicted_parts_mib": {k: round(v / 2**20, 1) for k, v in {**predicted.parts,
                                                                         **predicted.transient}.items()}}


def predict(args, config: dict, stage: str, tokens: int, chunk, ckpt: bool):
    from ringctl.train.memory import DTYPE_BYTES, ModelShape, Setup, Workload, estimate

    shape = ModelShape.from_config(config)
    if stage == "sft":
        work = Workload(tokens=tokens, head_tokens=tokens)
    else:
        rows = max(1, tokens // (PROMPT + RESPONSE))
        work = Workload(tokens=rows * (PROMPT + RESPONSE), head_tokens=rows * RESPONSE, entropy_grad=True)
    return estimate(shape, work, Setup(dtype_bytes=DTYPE_BYTES[args.dtype], checkpointing=ckpt, chunk_tokens=chunk))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=lambda s: [int(x) for x in s.split(",")], default=[2048, 8192, 16384])
    ap.add_argument("--stages", default="sft,rl")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--expert-inter", type=int, default=512)
    ap.add_argument("--sizes", default="512x4,256x8",
                    help="model sizes, hidden x layers (the other dimensions from the options above); the sizes "
                         "after the first with --top-k doubled (the expert term checked at another weight) and only "
                         "at the --tokens up to --more-sizes-up-to")
    ap.add_argument("--more-sizes-up-to", type=int, default=8192,
                    help="longest micro-batch for the sizes after the first (keeps the default run near 20 minutes)")
    ap.add_argument("--chunk-tokens", type=int, default=None, help="the chunked variants' chunk (default: ringctl's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, models = [], {}
    for n, size in enumerate(args.sizes.split(",")):
        hidden, layers = (int(x) for x in size.split("x"))
        sized = argparse.Namespace(**{**vars(args), "hidden": hidden, "layers": layers,
                                      "top_k": args.top_k * (2 if n else 1)})
        models[size] = model_config(sized)
        for stage in args.stages.split(","):
            for tokens in [t for t in args.tokens if n == 0 or t <= args.more_sizes_up_to]:
                for variant in args.variants.split(","):
                    row = {"model": size, **measure(sized, stage, tokens, variant)}
                    rows.append(row)
                    print(f"[long-context] {size} {stage} {tokens:>6} {variant:<13} measured "
                          f"{row['measured_mib']:>9.1f} MiB predicted {row['predicted_mib']:>9.1f} MiB "
                          f"({row['error']:+.1%}) {row['seconds']}s", file=sys.stderr, flush=True)
    summary = summarize(rows)
    doc = {"device": args.device, "dtype": args.dtype, "models": models, "rows": rows, "summary": summary}
    if args.json:
        print(json.dumps(doc))
    else:
        print(json.dumps(summary, indent=2))
    return doc


def summarize(rows: list[dict]) -> dict:
    """Per (stage, tokens): the full path's peak over the long-context setting's (chunked head + checkpointing);
    the largest prediction error over all rows."""
    peaks = {(r.get("model", ""), r["stage"], r["tokens"], r["variant"]): r["measured_mib"] for r in rows}
    saving = {f"{m}:{s}@{t}": round(peaks[(m, s, t, "full")] / peaks[(m, s, t, "chunked+ckpt")], 2)
              for (m, s, t, v) in peaks if v == "full" and (m, s, t, "chunked+ckpt") in peaks}
    worst = max((abs(r["error"]) for r in rows), default=0.0)
    return {"saving_full_over_chunked_ckpt": saving, "max_abs_prediction_error": worst,
            "all_within_25_percent": worst <= 0.25}


if __name__ == "__main__":
    main()
