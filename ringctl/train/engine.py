"""Training engines behind one interface: plain torch (one process or DDP) and DeepSpeed (ZeRO 0-3).

    engine = build_engine(model, OptimSpec(...), backends, world_size)
    for micro_batch in step: engine.backward(loss)      # loss already normalised by the caller
    grad_norm = engine.step(check)                      # clip, optimizer + schedule step, zero grads
    engine.save_state(dir) / engine.load_state(dir)     # model + optimizer + schedule (resumable)
    engine.save_hf(dir, tokenizer)                      # consolidated Hugging Face checkpoint (rank 0 writes)

The caller normalises the loss so that micro-batches add up to the step's loss (sum over tokens / tokens in the
global batch); both engines average gradients over ranks, so callers multiply by world_size for a sum.
`check` (optional, ringctl.train.numerics) sees the gradient norm after the gradients are reduced and before the
update: it may withhold the update (skipped: gradients zeroed, schedule advanced) or raise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class OptimSpec:
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    total_steps: int = 1
    schedule: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    micro_batches: int = 1  # backward() calls per step()


def lr_at(spec: OptimSpec, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant or cosine decay."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return spec.lr
    span = max(spec.total_steps - spec.warmup_steps, 1)
    progress = min((step - spec.warmup_steps) / span, 1.0)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def init_distributed(backend_hint: str | None = None) -> tuple[int, int]:
    """Initialise torch.distributed from torchrun/deepspeed env vars when WORLD_SIZE > 1: gloo on CPU, nccl on GPU."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = backend_hint or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return int(os.environ.get("RANK", "0")), world


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class TorchEngine:
    """AdamW on a plain module, wrapped in DDP when there are several ranks."""

    # RL's shared-prompt forward (ringctl.train.logprobs) runs the prompt through `module` and the responses through
    # `model`: fine for a plain module and for DDP (gradient hooks on the parameters)
    shares_prompt_forward = True

    def __init__(self, model, spec: OptimSpec, world_size: int = 1):
        import torch

        self.spec, self.world_size, self.steps = spec, world_size, 0
        self.module = model
        self.model = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(model, find_unused_parameters=True)
        decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=lr_at(spec, 0),
                                           betas=spec.betas, foreach=False)
        self._micro = 0

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def close(self) -> None:
        """Drop the optimizer state and the DDP wrapper (select_sft's probe builds one engine per candidate)."""
        self.optimizer = self.model = None

    def lr(self) -> float:
        return lr_at(self.spec, self.steps)

    def backward(self, loss) -> None:
        loss.backward()
        self._micro += 1

    def accumulate(self, loss, last: bool, check=None) -> float | None:
        """Backward of one micro-batch whose loss is already scaled for the whole optimizer step (no division by
        a micro-batch count here); on `last` the optimizer steps (`check` as in `step`) and the gradient norm is
        returned. Every rank must call it the same number of times (gradients are all-reduced in each backward)."""
        loss.backward()
        return self.step(check) if last else None

    def step(self, check=None) -> float:
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.spec, self.steps)
        norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.spec.max_grad_norm))
        if check is None or check(norm, True):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        self._micro = 0
        return norm

    def save_state(self, directory: Path) -> None:
        import torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "steps": self.steps}, directory / "engine.pt")

    def load_state(self, directory: Path) -> None:
        import torch

        state = torch.load(Path(directory) / "engine.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]

    def save_hf(self, directory: Path, tokenizer=None) -> None:
        if int(os.environ.get("RANK", "0")) == 0:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.module.save_pretrained(directory, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(directory)


def deepspeed_config(ds_cfg, spec: OptimSpec | None = None, on_gpu: bool | None = None) -> dict[str, Any]:
    """The one DeepSpeed config dict of a run: `DeepSpeedEngine` trains with it and, under ZeRO-3,
    `ringctl.train.models.load_model_and_tokenizer` builds the model under `deepspeed.zero.Init` with it, so the
    partitioning at load time (zero_optimization, offload_param, bf16) is exactly the one the engine expects.

    spec: the optimizer settings (None when only the model is being built: optimizer and accumulation then take
    neutral values that zero.Init does not read).
    """
    import torch

    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    spec = spec or OptimSpec(lr=0.0)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": spec.micro_batches,
        "gradient_clipping": spec.max_grad_norm,
        "optimizer": {"type": "AdamW", "params": {"lr": lr_at(spec, 0), "betas": list(spec.betas),
                                                  "weight_decay": spec.weight_decay,
                                                  "torch_adam": not on_gpu}},
        "zero_optimization": {"stage": ds_cfg.zero_stage},
        "bf16": {"enabled": bool(ds_cfg.bf16 and on_gpu)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if ds_cfg.offload_optimizer:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    if ds_cfg.offload_params and ds_cfg.zero_stage == 3:
        config["zero_optimization"]["offload_param"] = {"device": "cpu"}
    return config


def init_deepspeed_distributed() -> None:
    """torch.distributed through DeepSpeed (nccl on GPU, gloo on CPU), once. Needed before `deepspeed.zero.Init`
    as well as before `deepspeed.initialize` (DeepSpeed's own default on a CPU accelerator is oneCCL)."""
    import deepspeed
    import torch

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


class DeepSpeedEngine:
    """DeepSpeed ZeRO 0/1/2/3 (optional CPU offload, bf16 on GPU). On CPU: gloo and torch AdamW."""

    # two forwards before one backward are not tested under ZeRO's parameter hooks: RL forwards full rows here
    shares_prompt_forward = False

    def __init__(self, model, spec: OptimSpec, ds_cfg, world_size: int = 1):
        import deepspeed

        self.spec, self.world_size, self.steps = spec, world_size, 0
        init_deepspeed_distributed()
        config = deepspeed_config(ds_cfg, spec)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                                             config=config)
        self.model = self.ds
        self.module = self.ds.module
        self.zero_stage = ds_cfg.zero_stage

    def __call__(self, *args, **kwargs):
        return self.ds(*args, **kwargs)

    def close(self) -> None:
        """Release the engine (DeepSpeedEngine.destroy: ZeRO's parameter hooks and partitions, the optimizer)."""
        self.ds.destroy()
        self.ds = self.model = self.optimizer = None

    def lr(self) -> float:
        return lr_at(self.spec, self.steps)

    def backward(self, loss) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.spec, self.steps)
        # DeepSpeed divides by gradient_accumulation_steps; the caller already normalised the loss
        self.ds.backward(loss * self.spec.micro_batches)
        self.ds.step()  # acts only at the accumulation boundary

    def accumulate(self, loss, last: bool, check=None) -> float | None:
        """TorchEngine.accumulate under DeepSpeed: the accumulation boundary is set by hand
        (set_gradient_accumulation_boundary), so a minibatch may have any number of micro-batches; the loss is not
        divided by gradient_accumulation_steps (scale_wrt_gas=False)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.spec, self.steps)
        self.ds.set_gradient_accumulation_boundary(last)
        self.ds.backward(loss, scale_wrt_gas=False)
        self.ds.step()  # an optimizer step only at the boundary
        return self.step(check) if last else None

    def step(self, check=None) -> float:
        """DeepSpeed has already stepped at the accumulation boundary; ZeRO 1-3 in fp32/fp16 withhold an update whose
        gradient norm is not finite themselves (reported as inf), so `check` can only confirm a skip DeepSpeed made:
        an update it applied (ZeRO 0, bf16) cannot be withheld any more (check's `can_skip` False)."""
        norm = self.ds.get_global_grad_norm()
        self.steps += 1
        if check is not None:
            check(float(norm) if norm is not None else None, not self.ds.was_step_applied())
        return float(norm) if norm is not None else float("nan")

    def save_state(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(directory), tag="ds", client_state={"steps": self.steps})

    def load_state(self, directory: Path) -> None:
        _, client = self.ds.load_checkpoint(str(directory), tag="ds")
        self.steps = int((client or {}).get("steps", 0))

    def save_hf(self, directory: Path, tokenizer=None) -> None:
        """Consolidate ZeRO shards into one Hugging Face checkpoint (all ranks take part, rank 0 writes)."""
        import deepspeed

        params = list(self.module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=self.zero_stage == 3):
            if int(os.environ.get("RANK", "0")) == 0:
                Path(directory).mkdir(parents=True, exist_ok=True)
                # one copy per storage: tied weights (embed_tokens / lm_head) stay one tensor, so save_pretrained
                # drops the duplicate as it does for an ordinary module
                copies: dict[tuple, Any] = {}
                state = {k: copies.setdefault((v.data_ptr(), tuple(v.shape), v.dtype), v.detach().cpu().clone())
                         for k, v in self.module.state_dict().items()}
                self.module.save_pretrained(directory, state_dict=state, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(directory)
        barrier()


def build_engine(model, spec: OptimSpec, backends=None, world_size: int = 1):
    if backends is not None and backends.train == "deepspeed":
        return DeepSpeedEngine(model, spec, backends.deepspeed, world_size)
    return TorchEngine(model, spec, world_size)
