"""The pre-flight memory model: peak device memory per rank of a training stage, before anything is allocated.

    shape = ModelShape.from_config(config_json_dict)          # or from the tiny config / resources.model_config
    est = estimate(shape, Workload(tokens=32768, head_tokens=32768, ...), Setup(...))
    est.total_bytes, est.parts                                 # {"weights": ..., "activations": ..., ...}

What it counts, per rank, in bytes (pure arithmetic: no torch, `ringctl plan` stays fast):
- model states: weights, gradients and AdamW's states, partitioned by the ZeRO stage (fp32 training: 4 + 4 + 8 B
  per parameter; bf16 under DeepSpeed: 2 + 2 + 12, the fp32 master weights with m and v), minus what is offloaded;
  under ZeRO-3 the gathered parameters of the layers in flight (two layers, prefetch);
- the RL reference model (kl_beta > 0): a frozen copy, partitioned like the weights under ZeRO-3;
- activations of one micro-batch of T tokens, saved for the backward. Per token and decoder layer, in elements
  of the model's dtype (the Hugging Face implementation: RMSNorm, q/k-norm, rotary, SDPA or flash attention,
  eager MoE experts that gather each routed token):
      a = 6 h + 4 q + 4 kv + k (4 I + 3 h) + 4 I_shared + E         (MoE layer; a dense layer: 4 I + 3 h)
  (h hidden size, q = heads x head_dim, kv = kv heads x head_dim, k experts per token of size I, E experts).
  The coefficients were measured on CPU (bench/long_context_memory.py, float32): varying one dimension at a time
  the per-layer activations matched the formula within 1%. With activation checkpointing a layer keeps only its
  input (h per token) and one layer at a time is recomputed in full (its a);
- the loss head: the chunked head holds one chunk's [chunk, V] float32 logits, log-softmax and their gradients
  (4 such blocks) and accumulates the head weight's gradient over the chunks (up to 3 [V, h] blocks in flight);
  the full-vocab path holds the [T, V] logits (in the model's dtype, plus a float32 copy below 4 bytes), the
  log-softmax and two gradients of that size;
- vLLM colocated on the same device (the rollout phase of RL): gpu_memory_utilization of the device (weights +
  KV cache); while it sleeps (enable_sleep_mode) it holds neither, so the training phase does not count it.

Peak = model states + reference + saved activations + the larger of the head and the recomputed layer (training); RL also checks the rollout phase
(model states + reference + vLLM's share). What the model cannot see: allocator fragmentation and caching (a GPU
caching allocator reserves more than is live: keep a margin, the plan asks for 10%), CUDA context and kernels'
workspaces, NCCL buffers, vLLM's CUDA graphs, remote-code models whose layers differ from the formula, and
sequence-length-dependent attention memory of eager attention (T^2; flash / SDPA have none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GIB = 2**30
CHUNK_ELEMENTS = 1 << 26  # as ringctl.train.logprobs.DEFAULT_CHUNK_ELEMENTS (kept free of torch here)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}


@dataclass
class ModelShape:
    """The dimensions the memory model reads (Hugging Face config.json names in `from_config`)."""

    hidden: int
    layers: int
    vocab: int
    q_dim: int
    kv_dim: int
    experts: int = 0
    top_k: int = 1
    expert_inter: int = 0
    shared_inter: int = 0
    dense_inter: int = 0
    dense_layers: int = 0
    tied: bool = False
    params: float = 0.0

    @classmethod
    def from_config(cls, c: dict[str, Any], params: float | None = None) -> ModelShape:
        """From config.json's fields; a config without hidden_size / num_hidden_layers / vocab_size (e.g. a
        multimodal one that nests them) raises ValueError naming what is missing."""
        if "hidden_size" not in c and isinstance(c.get("text_config"), dict):
            c = c["text_config"]
        missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if not c.get(k)]
        if missing:
            raise ValueError(f"the model config has no {', '.join(missing)}")
        h, layers = int(c["hidden_size"]), int(c["num_hidden_layers"])
        heads = int(c.get("num_attention_heads") or 1)
        head_dim = int(c.get("head_dim") or h // heads)
        kv_heads = int(c.get("num_key_value_heads") or heads)
        experts = int(c.get("num_experts") or c.get("num_local_experts") or c.get("n_routed_experts") or 0)
        shared = int(c.get("num_shared_experts") or c.get("n_shared_experts") or 0)
        moe_inter = int(c.get("moe_intermediate_size") or c.get("intermediate_size") or 4 * h)
        dense = 0 if experts else layers
        if experts:
            dense = int(c.get("first_k_dense_replace") or 0) + len(c.get("mlp_only_layers") or [])
        shape = cls(hidden=h, layers=layers, vocab=int(c["vocab_size"]), q_dim=heads * head_dim,
                    kv_dim=kv_heads * head_dim, experts=experts, top_k=int(c.get("num_experts_per_tok") or 1),
                    expert_inter=moe_inter if experts else 0, shared_inter=shared * moe_inter,
                    dense_inter=int(c.get("intermediate_size") or 4 * h), dense_layers=dense,
                    tied=bool(c.get("tie_word_embeddings", False)))
        shape.params = float(params) if params else shape.count_parameters()
        return shape

    def count_parameters(self) -> float:
        h = self.hidden
        attn = h * self.q_dim * 2 + h * self.kv_dim * 2
        moe = self.experts * 3 * h * self.expert_inter + h * self.experts + 3 * h * self.shared_inter
        dense = 3 * h * self.dense_inter
        embed = self.vocab * h * (1 if self.tied else 2)
        return float(embed + self.layers * attn + self.dense_layers * dense + (self.layers - self.dense_layers) * moe)

    def layer_activations(self, moe: bool = True) -> float:
        """Saved activations per token of one decoder layer, in elements (see the module docstring)."""
        h = self.hidden
        attention = 6 * h + 4 * self.q_dim + 4 * self.kv_dim
        if moe and self.experts:
            return attention + self.top_k * (4 * self.expert_inter + 3 * h) + 4 * self.shared_inter + self.experts
        return attention + 4 * self.dense_inter + 3 * h

    def largest_layer_params(self) -> float:
        h = self.hidden
        attn = h * self.q_dim * 2 + h * self.kv_dim * 2
        moe = self.experts * 3 * h * self.expert_inter + 3 * h * self.shared_inter if self.experts else 0
        return float(attn + max(moe, 3 * h * self.dense_inter))


@dataclass
class Setup:
    """How the stage trains: engine, precision, partitioning, checkpointing, the loss head, the colocated engine."""

    dtype_bytes: int = 4
    engine: str = "torch"  # torch | deepspeed
    zero_stage: int = 0
    world: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    checkpointing: bool = False
    chunk_tokens: int | None = None  # None: CHUNK_ELEMENTS // vocab; 0: the full-vocab path
    reference: bool = False
    vllm_share_bytes: float = 0.0  # colocated rollout engine (RL), during rollouts
    vllm_sleeps: bool = True


@dataclass
class Workload:
    """One micro-batch: `tokens` through the model, `head_tokens` of them scored by the head."""

    tokens: int
    head_tokens: int
    entropy_grad: bool = False  # RL with an entropy bonus: the entropy's graph is kept too
    lm_head: bool = True  # False: a sequence classifier (score head [tokens, 1])


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # bytes per rank held through the training phase
    # transient, one after the other in the backward (the head first, then the recomputed layers): the larger counts
    transient: dict[str, float] = field(default_factory=dict)
    rollout_bytes: float = 0.0  # RL: model states + reference + vLLM's share while generating

    @property
    def total_bytes(self) -> float:
        return sum(self.parts.values()) + max(self.transient.values(), default=0.0)

    @property
    def peak_bytes(self) -> float:
        return max(self.total_bytes, self.rollout_bytes)


def per_param_bytes(s: Setup) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per parameter on one rank, after ZeRO partitioning and offload."""
    mixed = s.engine == "deepspeed" and s.dtype_bytes < 4
    weights, grads, optim = (2.0, 2.0, 12.0) if mixed else (float(s.dtype_bytes), float(s.dtype_bytes),
                                                           2.0 * s.dtype_bytes)
    zero, world = (s.zero_stage, s.world) if s.engine == "deepspeed" else (0, 1)
    if zero >= 1:
        optim /= world
    if zero >= 2:
        grads /= world
    if zero >= 3:
        weights /= world
    if s.offload_optimizer and s.engine == "deepspeed":
        optim = 0.0
    if s.offload_params and zero >= 3:
        weights = 0.0
    return weights, grads, optim


def model_states(shape: ModelShape, s: Setup) -> dict[str, float]:
    weights, grads, optim = per_param_bytes(s)
    p, zero = shape.params, s.zero_stage if s.engine == "deepspeed" else 0
    out = {"weights": p * weights, "gradients": p * grads, "optimizer": p * optim}
    if zero >= 3:  # the layers in flight, gathered whole (ZeRO-3 prefetches the next one)
        out["zero3_gathered"] = 2 * shape.largest_layer_params() * s.dtype_bytes
    return out


def saved_activations(shape: ModelShape, w: Workload, s: Setup) -> float:
    """What the forward keeps for the backward: every layer's activations, or with checkpointing every layer's
    input; plus the embeddings, the final norm and the head's input."""
    b, t, h = s.dtype_bytes, w.tokens, shape.hidden
    if s.checkpointing:
        return t * b * (shape.layers * h + 4 * h)
    moe_layers = shape.layers - shape.dense_layers
    per_token = moe_layers * shape.layer_activations(True) + shape.dense_layers * shape.layer_activations(False)
    return t * b * (per_token + 4 * h)


def recomputed_layer(shape: ModelShape, w: Workload, s: Setup) -> float:
    """With checkpointing: one layer's activations, rebuilt in the backward (0 without)."""
    if not s.checkpointing:
        return 0.0
    return w.tokens * s.dtype_bytes * max(shape.layer_activations(True), shape.layer_activations(False))


def loss_head(shape: ModelShape, w: Workload, s: Setup) -> float:
    """The head's transient peak: a chunk's (or, full path, all head tokens') float32 [tokens, V] blocks - logits,
    log-softmax and their gradients, 3 of them, 5 when the entropy is differentiated too - and, over several
    chunks, the head weight's gradient summed chunk by chunk (2 more [V, h] blocks); a float32 copy of
    lower-precision logits."""
    if not w.lm_head:
        return 0.0
    v, h, b = shape.vocab, shape.hidden, s.dtype_bytes
    blocks = 5 if w.entropy_grad else 3
    if s.chunk_tokens == 0:
        return w.head_tokens * v * (blocks * 4 + (b if b < 4 else 0))
    chunk = min(s.chunk_tokens or max(1, CHUNK_ELEMENTS // v), max(1, w.head_tokens))
    chunks = -(-w.head_tokens // chunk)
    return chunk * v * (blocks * 4 + (b if b < 4 else 0)) + (2 * v * h * b if chunks > 1 else 0)


def estimate(shape: ModelShape, w: Workload, s: Setup) -> Estimate:
    states = model_states(shape, s)
    parts = dict(states)
    if s.reference:
        parts["reference"] = states["weights"]
    parts["activations"] = saved_activations(shape, w, s)
    if s.vllm_share_bytes and not s.vllm_sleeps:
        parts["vllm"] = s.vllm_share_bytes
    transient = {"loss_head": loss_head(shape, w, s)}
    if s.checkpointing:
        transient["recomputed_layer"] = recomputed_layer(shape, w, s)
    rollout = 0.0
    if s.vllm_share_bytes:
        rollout = states["weights"] + states["optimizer"] + parts.get("reference", 0.0) + s.vllm_share_bytes
    return Estimate(parts, transient, rollout)
