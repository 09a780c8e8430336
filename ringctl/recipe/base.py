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
    """Fields every stage has, and the stage contract's hooks: what the loader, `plan`, the input and sandbox
    checks and other stages ask a stage's config before anything runs. A stage module subclasses this as its
    `Config` with `kind: Literal[KIND]` and overrides the hooks that apply to it; every hook has a default here, so
    callers call them plainly (no stage is asked for an attribute it may lack).

    Hooks that take `recipe` get the whole validated recipe (its `stages`, `resources`, `backends`, ...).
    """

    kind: str
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    description: str | None = None

    # -- validation (`ringctl validate`, and every command that loads a recipe) -----------------------------
    def validate_for(self, recipe: Any, world_size: int) -> list:
        """Cross-field checks that need the whole recipe (batch divisibility, lengths vs budget).

        Returns human-readable problems, each a message about the stage or a (field path inside the stage,
        message) pair; the loader turns them into errors located at this stage (or that field).
        """
        return []

    # -- inputs from outside the run ------------------------------------------------------------------------
    def external_files(self) -> list[str]:
        """Files outside the run that the stage reads (datasets, benchmark files). Their size and modification
        time are part of the fingerprint, so editing a data file reruns the stage instead of reusing stale output;
        the input check (`ringctl validate/plan/run`) requires each to exist."""
        return []

    def external_file_location(self, file: str) -> tuple | None:
        """Field path inside the stage that names `file` (one of `external_files()`) when the recipe does not
        spell the path itself (a benchmark preset names its file), for a located error; None: find it by value."""
        return None

    def may_read_domain(self, domain: str) -> bool:
        """Can records this stage reads from outside the run (data files, demo or generated data) have `domain`?
        Records of upstream stages' outputs do not count: their own stage answers. Default: it reads none."""
        return False

    # -- what the stage's outputs hold, known from the recipe alone -----------------------------------------
    def declared_records(self, output: str, recipe: Any) -> set[tuple[str, str]] | None:
        """The (domain, source) pairs of the records in `output` when the recipe alone determines them
        (synthetic data), else None (known only once the data is read, or the output holds no records)."""
        return None

    def declared_domains(self, output: str, recipe: Any) -> set[str] | None:
        """The domains of the records in `output` when the recipe alone determines them (see
        `declared_records`); None: unknown before the data is read. Lets an RL stage check before anything runs
        that every domain of its prompts has a reward source."""
        records = self.declared_records(output, recipe)
        return None if records is None else {domain for domain, _ in records}

    def is_reward_model(self, output: str) -> bool:
        """Does `output` hold a reward model (a sequence classifier) that a reward source can score with?"""
        return False

    def chat_template_problem(self, output: str) -> str | None:
        """Why the model in `output` cannot format (prompt, response) with its tokenizer's chat template, when
        that is known before the stage runs; None when it can, or when only the run will tell."""
        return None

    def trained_max_length(self) -> tuple[str, int] | None:
        """(field, tokens): the longest sequence the model this stage trains saw in training, and the field that
        sets it (sft: max_seq_len); positions beyond it were never trained. None: no such limit."""
        return None

    def passes_model_through(self) -> bool:
        """Is the model this stage outputs one of an upstream stage's models (a checkpoint selection)? Checks of
        a model then follow this stage's references upstream."""
        return False

    def sequence_need(self) -> tuple[str, int] | None:
        """(what, tokens): the longest sequence (prompt + response) this stage feeds the model it starts from,
        checked by `ringctl plan` against that model's `trained_max_length()`. None: nothing to check."""
        return None

    # -- what the stage runs ----------------------------------------------------------------------------------
    def scored_domains(self) -> list[str] | None:
        """Domains of the records this stage scores with the domain verifiers (RL rewards, a selection probe, a
        difficulty filter): [] (the default) when it scores none, None when it scores whatever domains its records
        have. With records of domain `code`, a stage that scores them runs model-written code (the sandbox)."""
        return []

    def scores_code(self) -> bool:
        """Does the stage run model-written code whatever the recipe's data holds (a code benchmark of its own)?
        Then the code sandbox must work where it runs."""
        return False

    # -- `ringctl plan` -----------------------------------------------------------------------------------------
    def memory_workload(self, recipe: Any, world_size: int) -> dict | None:
        """A training stage's largest micro-batch for the pre-flight memory model (ringctl.train.memory.Workload's
        fields: tokens, head_tokens, entropy_grad, lm_head), plus "reference" (an RL reference model), "rollout"
        (generation colocated with training), "fields" (the stage fields that shrink the micro-batch, named when it
        does not fit) and optionally "chunk_tokens" / "checkpointing" (else the stage's own settings) with
        "checkpointing_field" (the setting that turns it on). None: the stage trains nothing."""
        return None

    def preflight(self, recipe: Any, world_size: int) -> list[dict]:
        """The stage's pre-flight checks, which `ringctl plan` shows before any GPU is allocated:
        [{"check": name, "ok": bool, "detail": text}]."""
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
