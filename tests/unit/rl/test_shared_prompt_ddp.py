"""The shared-prompt training forward under DDP (2 CPU processes, gloo): the prompt pass through the bare module,
the responses through the DDP wrapper, one backward; the all-reduced gradient equals the plain full-row forward's
on every rank."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    import transformers

    from ringctl.rl.loss import LossCoefficients, policy_loss
    from ringctl.train.engine import OptimSpec, TorchEngine, init_distributed
    from ringctl.train.logprobs import build_training_batch, response_logprobs

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_distributed("gloo")
    config = transformers.Qwen3MoeConfig(
        vocab_size=32, hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
        max_position_embeddings=128, eos_token_id=2, pad_token_id=0)
    g = torch.Generator().manual_seed(100 + rank)  # each rank trains on its own rows; prompts repeat K=3 times
    prompts = [[1] + torch.randint(3, 32, (int(n),), generator=g).tolist() for n in (3, 5)]
    rows_p = [p for p in prompts for _ in range(3)]
    rows_r = [torch.randint(3, 32, (int(n),), generator=g).tolist() for n in (4, 2, 6, 5, 3, 1)]
    batch = build_training_batch(rows_p, rows_r)
    adv = torch.randn(len(rows_r), generator=g)
    grads = []
    for share in (False, True):
        torch.manual_seed(0)
        model = transformers.Qwen3MoeForCausalLM(config).train()
        engine = TorchEngine(model, OptimSpec(lr=1e-2, max_grad_norm=100.0), world_size=world)
        out = response_logprobs(engine.model, batch, share_prompts=share, output_router_logits=True)
        loss, _ = policy_loss(out["logprobs"], out["logprobs"].detach() - 0.1, adv, batch.loss_mask,
                              token_budget=20, entropy=out["entropy"],
                              # router terms in the graph but weighted 0: they count shared prompt tokens once
                              coefs=LossCoefficients(kl_beta=0.0, load_balance_coef=0.0, z_loss_coef=0.0),
                              router_logits=out["router_logits"], router_token_mask=out["router_token_mask"],
                              router_top_k=2)
        engine.backward(loss)  # DDP all-reduces (averages) the gradients here
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
        engine.step()
    results[rank] = (grads[0], grads[1])
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_shared_prompt_forward_under_ddp_matches_full_rows():
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world, _free_port(), results), nprocs=world, join=True)
        got = dict(results)
    plain0, shared0 = got[0]
    plain1, shared1 = got[1]
    # the gradients were averaged over the ranks: both hold the same, whichever forward they used
    torch.testing.assert_close(plain0, plain1, atol=0, rtol=0)
    torch.testing.assert_close(shared0, shared1, atol=0, rtol=0)
    assert plain0.abs().max() > 0
    torch.testing.assert_close(shared0, plain0, atol=1e-6, rtol=1e-4)
