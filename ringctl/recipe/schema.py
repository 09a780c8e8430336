"""The recipe schema: top-level sections plus the stages, discriminated by `kind`.

The stage union is assembled from the registry (built-in kinds plus any plugin kinds the recipe names),
so `ringctl schema` and validation always agree with the stage modules' own `Config` classes.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model, field_validator

from ringctl.recipe import registry
from ringctl.recipe.base import StageConfig, Strict
from ringctl.rewards.sandbox import SandboxConfig
from ringctl.train.config import BackendsConfig, ModelConfig


class TrackingConfig(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db in the working dir")
    experiment: str = "ringctl"
    log_checkpoints: Literal["none", "final", "all"] = Field(
        "final", description="which checkpoints are uploaded to MLflow as artifacts (paths+sha256 always logged)"
    )


class ResourcesConfig(Strict):
    """Default launch resources; a stage's `launch` section overrides them."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    launcher: Literal["local", "torchrun", "deepspeed", "slurm"] = Field(
        "local", description="local: one process; torchrun / deepspeed: nproc_per_node x nnodes processes; slurm: "
                             "inside an allocation, srun over its nodes (one torchrun each, c10d rendezvous on the "
                             "first node; `ringctl submit` writes the job)")
    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1, le=65535)
    hostfile: str | None = Field(None, description="DeepSpeed hostfile for multi-node runs")
    retries: int = Field(0, ge=0, description="times a stage whose processes were lost (a rank killed, a node lost, "
                                              "a hang) is resumed from its latest checkpoint without a person; 0: "
                                              "never (a stage's own errors are never retried)")
    retry_backoff_s: float = Field(10.0, ge=0, description="seconds before the first retry, doubled at each next one")
    hang_timeout: float | None = Field(None, gt=0, description="seconds without a training step on any rank after "
                                       "which the stage's stacks are logged, its processes killed and the stage "
                                       "retried (counts as a retry); None: no hang watchdog")
    ssh_port: int | None = Field(None, ge=1, le=65535, description="the port the DeepSpeed launcher reaches the "
                                 "hostfile's hosts on over ssh (default: ssh's own, 22)")
    gpu_memory_gb: float = Field(80.0, gt=0, description="per-GPU memory used by the pre-flight estimate")
    model_architecture: dict[str, Any] | None = Field(
        None, description="the model's config.json fields (hidden_size, num_hidden_layers, vocab_size, heads, experts, "
                          "...) for the pre-flight memory model when the model is not on this machine")
    model_parameters_b: float | None = Field(
        None, gt=0, description="total model parameters in billions, for the pre-flight memory estimate when the "
                                "model's config is not on this machine (e.g. 16.8 for Ling-lite-1.5)")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class RecipeBase(Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = 0
    deterministic: bool = Field(True, description="fixed seeds + deterministic CPU algorithms (exact resume)")
    workdir: str = Field("runs", description="run directories go to <workdir>/<run-id>/")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    backends: BackendsConfig = Field(default_factory=BackendsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="where model-written code runs (code "
                                   "rewards): backend auto | bwrap | unshare | unsafe-no-isolation, and its limits")
    vars: dict[str, Any] = Field(default_factory=dict, description="free-form values for ${vars.name} "
                                                                   "interpolation (data roots, shared settings)")


def _config_for_kind(kind: str) -> type[StageConfig]:
    cfg = registry.load_stage_module(kind).Config
    if registry.is_plugin_kind(kind):
        # a plugin's Config declares `kind: str`; pin it so the discriminated union can dispatch on it
        cfg = create_model(f"{cfg.__name__}_{kind.replace('.', '_')}", __base__=cfg,
                           kind=(Literal[kind], ...))  # type: ignore[valid-type]
    return cfg


@cache
def recipe_model(plugin_kinds: tuple[str, ...] = ()) -> type[RecipeBase]:
    """The Recipe model for the built-in kinds plus `plugin_kinds`."""
    kinds = registry.available_builtin_kinds() + list(plugin_kinds)
    configs = tuple(_config_for_kind(k) for k in kinds)
    if not configs:  # nothing importable: every stage is reported on its own; keep the model buildable
        stage_type: Any = StageConfig
    elif len(configs) == 1:
        stage_type: Any = configs[0]
    else:
        stage_type = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007

    class Recipe(RecipeBase):
        stages: dict[str, stage_type] = Field(..., description="ordered mapping: stage name -> stage config")

        @field_validator("stages")
        @classmethod
        def _names(cls, v: dict) -> dict:
            import re

            for name in v:
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_\-]*$", name):
                    raise ValueError(f"stage name {name!r} must be an identifier (letters, digits, _ and -)")
            if not v:
                raise ValueError("a recipe needs at least one stage")
            return v

    Recipe.__name__ = "Recipe"
    return Recipe


def json_schema() -> dict:
    return recipe_model().model_json_schema()
