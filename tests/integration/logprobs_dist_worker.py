"""One rank of the chunked-vs-full-vocab log-prob check (run by tests/integration/test_logprobs_distributed.py
through torch.distributed.run): the same RL loss through response_logprobs with chunk_tokens=0 (full [N, R, V]
logits) and with small chunks, under DeepSpeed ZeRO-3 or torch DDP on gloo; rank 0 saves both runs' full
gradients and the parameters after one optimizer step.

    python -m torch.distributed.run --nproc_per_node=2 tests/integration/logprobs_dist_worker.py zero3 tied OUT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def _batch(rank: int, vocab: int):
    from ringctl.train.logprobs import build_training_batch

    g = torch.Generator().manual_seed(100 + rank)  # each rank its own rows; prompts repeat K=3 times
    prompts = [[1] + torch.randint(3, vocab, (int(n),), generator=g).tolist() for n in (3, 5)]
    rows_p = [p for p in prompts for _ in range(3)]
    rows_r = [torch.randint(3, vocab, (int(n),), generator=g).tolist() for n in (4, 2, 6, 5, 3, 1)]
    return build_training_batch(rows_p, rows_r), torch.randn(len(rows_r), generator=g)


def run(mode: str, tied: bool, chunk_tokens: int, share: bool, rank: int, world: int) -> dict:
    from ringctl.rl.loss import LossCoefficients, policy_loss
    from ringctl.train.config import DeepSpeedConfig, ModelConfig
    from ringctl.train.engine import DeepSpeedEngine, OptimSpec, TorchEngine
    from ringctl.train.logprobs import response_logprobs
    from ringctl.train.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(ModelConfig(), seed=0)
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 1.5)
    model.train()
    spec = OptimSpec(lr=1e-3, max_grad_norm=1e9)
    if mode == "zero3":
        engine = DeepSpeedEngine(model, spec, DeepSpeedConfig(zero_stage=3), world)
    else:
        engine = TorchEngine(model, spec, world)
    batch, adv = _batch(rank, model.config.vocab_size)
    out = response_logprobs(engine.model, batch, temperature=0.8, with_entropy=True, output_router_logits=True,
                            share_prompts=share, chunk_tokens=chunk_tokens)
    loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach() - 0.1, adv, batch.loss_mask, token_budget=20,
                          entropy=out["entropy"], router_logits=out["router_logits"],
                          router_token_mask=out["router_token_mask"], router_top_k=model.config.num_experts_per_tok,
                          coefs=LossCoefficients(kl_beta=0.0, entropy_coef=0.05, load_balance_coef=1e-2,
                                                 z_loss_coef=1e-3))
    result = {"logprobs": out["logprobs"].detach().clone(), "entropy": out["entropy"].detach().clone(),
              "loss": loss.detach().clone()}
    names = [n for n, _ in engine.module.named_parameters()]
    if mode == "zero3":
        import deepspeed
        from deepspeed.utils import safe_get_full_grad

        engine.ds.backward(loss)
        result["grads"] = {n: safe_get_full_grad(p).detach().clone() for n, p in engine.module.named_parameters()}
        engine.ds.step()
        params = list(engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            result["params"] = {n: p.detach().clone() for n, p in zip(names, params, strict=True)}
    else:
        engine.backward(loss)
        result["grads"] = {n: p.grad.detach().clone() for n, p in engine.module.named_parameters()
                           if p.grad is not None}
        engine.step()
        result["params"] = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    return result


def main() -> None:
    mode, tie, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if mode == "ddp":
        from ringctl.train.engine import init_distributed

        init_distributed("gloo")
    runs = {}
    shares = (False,) if mode == "zero3" else (False, True)  # DeepSpeedEngine never shares the prompt forward
    for share in shares:
        for chunk in (0, 1, 5):
            runs[(share, chunk)] = run(mode, tie == "tied", chunk, share, rank, world)
    torch.save(runs, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
