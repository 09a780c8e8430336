"""Base classes every recipe and stage config builds on.

Kept free of heavy imports: `ringctl validate` imports this and every stage's Config.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

_REF_RE = re.compile(r"^(?P<stage>[A-Za-z_][A-Za-z0-9_\-]*)\.(?P<output>[A-Za-z_][A-Za-z0-9_]*)$")


class Strict(BaseModel):
    """Frozen, typo-proof config object: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StageRef(str):
    """A typed reference to another stage's output: ``<stage>.<output>`` (e.g. ``filter.sft``).

    The DAG is built from every StageRef found in the stage configs.
    """

    @property
    def stage(self) -> str:
        return self.split(".", 1)[0]

    @property
    def output(self) -> str:
        return self.split(".", 1)[1]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        def validate(value: str) -> StageRef:
            if not _REF_RE.match(value):
                raise ValueError(
                    f"a stage reference must look like '<stage>.<output>' (e.g. 'filter.sft'), got {value!r}"
                )
            return cls(value)

        return core_schema.no_info_after_validator_function(
            validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler):
        out = handler(schema)
        out.update({"pattern": _REF_RE.pattern, "description": "reference to '<stage>.<output>'"})
        return out


RECOVERY_KEYS = ("retries", "retry_backoff_s", "hang_timeout")  # in `launch` and `resources`


class LaunchConfig(Strict):
    """How a stage's processes are started. Defaults come from the recipe's `resources`."""

    launcher: Literal["local", "torchrun", "deepspeed", "slurm"] | None = Field(
        None, description="local: one process; torchrun / deepspeed / slurm (srun inside an allocation): "
                          "nproc_per_node x nnodes processes"
    )
    nproc_per_node: int | None = Field(None, ge=1)
    nnodes: int | None = Field(None, ge=1)
    # how the runner recovers the stage (resources.retries / retry_backoff_s / hang_timeout for this stage only);
    # not part of the stage's fingerprint: they do not change what it computes
    retries: int | None = Field(None, ge=0)
    retry_backoff_s: float | None = Field(None, ge=0)
    hang_timeout: float | None = Field(None, gt=0)


class StageConfig(Strict):
    """Fields every stage has. A stage module subclasses this as its `Config` with `kind: Literal[KIND]`."""

    kind: str
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    description: str | None = None

    def external_files(self) -> list[str]:
        """Files outside the run that the stage reads (datasets, benchmark files). Their size and modification
        time are part of the fingerprint, so editing a data file reruns the stage instead of reusing stale output."""
        return []

    def validate_for(self, recipe: Any, world_size: int) -> list[str]:
        """Cross-field checks that need the whole recipe (batch divisibility, lengths vs budget).

        Returns human-readable problems; the loader turns them into errors located at this stage.
        """
        return []


def iter_refs(value: Any, path: tuple = ()):
    """Yield (field_path, StageRef) for every reference inside a config value (models, lists, dicts)."""
    if isinstance(value, StageRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_refs(getattr(value, name), path + (name,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from iter_refs(item, path + (i,))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from iter_refs(item, path + (k,))
