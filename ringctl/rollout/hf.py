"""Rollouts with a Hugging Face causal LM: our own batched sampling loop over the model's KV cache.

Why not `model.generate`: RL needs the sampling log-prob of every token, control over the randomness (seeded,
reproducible on CPU) and a batch that shrinks as sequences finish. The loop:

1. prefill: each distinct prompt once, left-padded into one batch, attention mask + position ids (cumsum of the
   mask, so padding does not shift positions), a `DynamicCache`; the cache rows are then copied to the K samples
   of their prompt (`DynamicCache.batch_select_indices` with repeated indices), so K samples cost one prefill;
2. decode one token per step for the active rows, feeding the new token, the grown attention mask and the next
   position; sampling is temperature + top-p by inverse CDF with our own uniform draws;
3. rows that emitted a stop token leave the batch: `DynamicCache.batch_select_indices` (transformers 5.x,
   cache_utils.py: every DynamicLayer keeps keys/values[indices]) and the same index on the mask and positions.

The loop runs under torch.inference_mode, its KV cache and attention mask are preallocated (viewed up to the
current length), and on CPU the one-query decode steps use a leaner attention than sdpa's: see
ringctl/rollout/decode.py.

Randomness: the uniform draw for the t-th token of rollout row j is element j of a vector drawn from a generator
seeded with (seed, t). A row's sample therefore depends only on (seed, row, t) and the model, never on which
other rows are still in the batch or how the rows are chunked, so dropping finished rows changes nothing. Under
data parallelism a rank passes its rows' place in the global batch (SamplingParams.row_offset / total_rows), so
the ranks together draw exactly the samples one process would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ringctl.rollout.base import Rollout, SamplingParams
from ringctl.rollout.decode import cpu_decode_attention, preallocated_cache

_STEP_SEED_STRIDE = 1_000_003  # keeps (seed, step) pairs apart when mixed into one generator seed


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row from logits [B, V] with uniforms [B] in [0, 1).

    Returns (tokens [B], log-probs [B]) where the log-prob is log_softmax(logits / temperature)[token] (before
    top-p truncation; temperature 0 = greedy, log-prob of the untempered distribution).
    Inverse CDF: the token is the first one whose cumulative (top-p-truncated) probability exceeds u * total.
    """
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    probs = logprobs.exp()
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
        probs = torch.where(probs.cumsum(-1) - probs < top_p, probs, torch.zeros_like(probs))
    else:
        order = None
    cdf = probs.cumsum(dim=-1)
    targets = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    positions = torch.searchsorted(cdf, targets, right=True).clamp_max(cdf.shape[-1] - 1)
    tokens = positions.squeeze(-1) if order is None else order.gather(-1, positions).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _restore_inference_buffers(model: Any) -> None:
    """Buffers that a forward re-registered inside torch.inference_mode (e.g. a dynamic RoPE's inv_freq once the
    sequence outgrows it) are inference tensors, which training may not update in place: copy them out."""
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_inference():
                module._buffers[name] = buffer.clone()


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


class HFRolloutEngine:
    """RolloutEngine over a transformers causal LM (CPU or one GPU).

    model: the policy to sample from; it may be the training model itself (then update_weights(model) is free).
    max_batch_rows: rows (prompt x sample) decoded together; larger batches are processed in chunks.
    drop_finished: remove finished rows from the batch and the KV cache (True, the fast path); False keeps them
    decoding and ignores their output (only useful to check that dropping changes nothing).
    """

    def __init__(self, model: Any, *, pad_token_id: int | None = None, stop_token_ids: Sequence[int] | None = None,
                 max_batch_rows: int = 256, drop_finished: bool = True) -> None:
        self.model = model
        config = model.config
        generation_config = getattr(model, "generation_config", None)
        eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
        self.stop_token_ids = tuple(stop_token_ids) if stop_token_ids is not None else (
            _token_ids(eos) or _token_ids(getattr(config, "eos_token_id", None)))
        if pad_token_id is None:
            pad_token_id = getattr(config, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = self.stop_token_ids[0] if self.stop_token_ids else 0
        self.pad_token_id = int(pad_token_id)
        self.max_batch_rows = max_batch_rows
        self.drop_finished = drop_finished
        self._device = next(model.parameters()).device
        self._asleep = False

    # -- RolloutEngine -------------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> list[Rollout]:
        if self._asleep:
            raise RuntimeError("generate() on a sleeping engine: call wake() first")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        rows = [(p, s) for p in range(len(prompts)) for s in range(n)]
        stop = params.stop_token_ids if params.stop_token_ids is not None else self.stop_token_ids
        was_training = self.model.training
        self.model.eval()
        try:
            rollouts: list[Rollout] = []
            total = params.total_rows if params.total_rows is not None else params.row_offset + len(rows)
            if params.row_offset + len(rows) > total:
                raise ValueError(f"rows {params.row_offset}..{params.row_offset + len(rows)} exceed total_rows {total}")
            with cpu_decode_attention(self.model) as mask_4d:
                for start in range(0, len(rows), self.max_batch_rows):
                    chunk = list(range(start, min(start + self.max_batch_rows, len(rows))))
                    rollouts += self._generate_rows(prompts, rows, chunk, total, params, stop, mask_4d)
            return rollouts
        finally:
            self.model.train(was_training)
            _restore_inference_buffers(self.model)

    def update_weights(self, source: Any | Mapping[str, Any]) -> None:
        if source is self.model:
            return  # the engine samples from the training model itself
        if hasattr(source, "named_parameters") and any(hasattr(p, "ds_id") for p in source.parameters()):
            self._load_zero3(source)
            return
        state = source.state_dict() if hasattr(source, "state_dict") else source
        with torch.no_grad():
            self.model.load_state_dict(dict(state), strict=True)

    def _load_zero3(self, source: Any) -> None:
        """Copy a ZeRO-3 partitioned module's weights into this engine's own (unpartitioned) model, one parameter
        gathered at a time (collective: every rank calls it). Under ZeRO-3 the HF engine samples from such a copy,
        so that ranks decoding different lengths never wait for each other's parameter gathers."""
        import deepspeed

        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, param in source.named_parameters():
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    own[name].copy_(param.data.to(own[name].device, own[name].dtype))
            own_buffers = dict(self.model.named_buffers())
            for name, buffer in source.named_buffers():
                if name in own_buffers:
                    own_buffers[name].copy_(buffer)

    def sleep(self) -> None:
        """On GPU move the weights to host memory and free the cache; on CPU there is nothing to release."""
        if self._device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()
        self._asleep = True

    def wake(self) -> None:
        if self._device.type == "cuda":
            self.model.to(self._device)
        self._asleep = False

    # -- sampling loop -------------------------------------------------------------------------------------------

    def _uniforms(self, seed: int, step: int, total_rows: int) -> torch.Tensor:
        generator = torch.Generator(device=self._device)
        generator.manual_seed((seed * _STEP_SEED_STRIDE + step) % (2**63 - 1))
        return torch.rand(total_rows, generator=generator, device=self._device)

    @torch.inference_mode()
    def _generate_rows(self, prompts: Sequence[Sequence[int]], rows: list[tuple[int, int]], chunk: list[int],
                       total_rows: int, params: SamplingParams, stop: Sequence[int], mask_4d: bool
                       ) -> list[Rollout]:
        device, batch = self._device, len(chunk)
        # prefill each distinct prompt once, then give each of its samples a copy of its KV cache row
        distinct = list(dict.fromkeys(rows[j][0] for j in chunk))
        slot = {p: i for i, p in enumerate(distinct)}
        expand = torch.tensor([slot[rows[j][0]] for j in chunk], dtype=torch.long, device=device)
        width = max(len(prompts[p]) for p in distinct)
        max_new = params.max_new_tokens
        input_ids = torch.full((len(distinct), width), self.pad_token_id, dtype=torch.long, device=device)
        # the attention mask of every position the rows will have: ones after the prompt, viewed up to `seen`
        attention = torch.ones((len(distinct), width + max_new), dtype=torch.long, device=device)
        attention[:, :width] = 0
        for i, p in enumerate(distinct):
            prompt = prompts[p]
            input_ids[i, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long, device=device)
            attention[i, width - len(prompt):] = 1
        positions = (attention[:, :width].cumsum(-1) - 1).clamp_min(0)

        response = torch.full((batch, max_new), self.pad_token_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((batch, max_new), dtype=torch.float32, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        stop_ids = torch.tensor(list(stop), dtype=torch.long, device=device)
        # global row index (across ranks), for the uniforms
        row_ids = torch.tensor(chunk, dtype=torch.long, device=device) + params.row_offset

        cache = preallocated_cache(self.model.config, width + max_new)
        seen = width  # positions in the cache (and columns of the mask in use)
        out = self.model(input_ids=input_ids, attention_mask=attention[:, :seen], position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        if len(distinct) < batch:
            cache.batch_select_indices(expand)
        last_logits = out.logits[expand, -1]
        attention, next_position = attention[expand], positions[expand, -1] + 1
        if mask_4d:  # the decode steps' mask as the attention reads it: [rows, 1, 1, positions], True = attend
            attention = attention.bool()[:, None, None, :]
        active = torch.arange(batch, device=device)  # chunk rows still in the batch, in batch order
        alive = torch.ones(batch, dtype=torch.bool, device=device)  # rows still producing output
        for step in range(max_new):
            uniforms = self._uniforms(params.seed, step, total_rows)[row_ids[active]]
            tokens, token_logprobs = sample_tokens(last_logits, uniforms, params.temperature, params.top_p)
            writing = alive[active]
            rows_out = active[writing]
            response[rows_out, step] = tokens[writing]
            logprobs[rows_out, step] = token_logprobs[writing]
            lengths[rows_out] += 1
            stopped = torch.isin(tokens, stop_ids) & writing
            finished[active[stopped]] = True
            alive[active[stopped]] = False
            if step == max_new - 1 or not bool(alive.any()):
                break
            if self.drop_finished and bool(stopped.any()):
                keep = (~stopped).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, tokens = active[keep], tokens[keep]
                attention, next_position = attention[keep], next_position[keep]
            seen += 1
            out = self.model(input_ids=tokens.unsqueeze(-1), attention_mask=attention[..., :seen],
                             position_ids=next_position.unsqueeze(-1), past_key_values=cache, use_cache=True)
            last_logits = out.logits[:, -1]
            next_position = next_position + 1

        lengths_list, response_list, logprob_list = lengths.tolist(), response.tolist(), logprobs.tolist()
        results = []
        for b, j in enumerate(chunk):
            prompt_index, sample_index = rows[j]
            length = lengths_list[b]
            results.append(Rollout(prompt_index=prompt_index, sample_index=sample_index,
                                   prompt_ids=list(prompts[prompt_index]), response_ids=response_list[b][:length],
                                   logprobs=logprob_list[b][:length], finished=bool(finished[b])))
        return results
