"""The optional sections of a run's configuration: where figures go (``log:``), the augmentation
stage (``aug:``), evaluation (``eval:``) and transfer learning (``init:``). distgan/config/schema.py
composes them into :class:`~distgan.config.schema.Config`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)


class _Section(BaseModel):
    # unknown keys are errors; no float setting may be inf or NaN
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _comma_list(value: Any) -> Any:
    """``key=a,b`` on the command line is the list [a, b]."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class LogConfig(_Section):
    """Where a run's figures go. The W&B keys left unset (null) leave W&B's own environment
    variables in charge (WANDB_PROJECT, WANDB_NAME, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_TAGS,
    WANDB_NOTES); without either, the project is "distgan" and the name the recipe's."""

    trackers: list[Literal["wandb", "tensorboard"]] = Field(
        default_factory=lambda: ["wandb"],
        description="wandb (mode: log.wandb) and/or tensorboard (run.dir/tensorboard/)",
    )
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str | None = Field(None, description="W&B project (unset: WANDB_PROJECT, distgan)")
    name: str | None = Field(None, description="W&B run name (unset: WANDB_NAME, the recipe)")
    entity: str | None = Field(None, description="W&B entity (unset: WANDB_ENTITY)")
    group: str | None = Field(None, description="W&B run group (unset: WANDB_RUN_GROUP)")
    tags: list[str] | None = Field(None, description="W&B tags, e.g. [a, b] (unset: WANDB_TAGS)")
    notes: str | None = Field(None, description="W&B notes (unset: WANDB_NOTES)")
    artifacts: bool = Field(
        False, description="log checkpoints/best.pt and the final export as W&B artifacts"
    )

    every: int = Field(25, ge=1, description="scalar logging interval in steps")
    sample_every: int = Field(250, ge=1, description="preview-grid interval in steps")
    samples_per_class: int = Field(
        10, ge=1, description="grid columns: samples per class (conditional), or per row"
    )

    @field_validator("trackers", "tags", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _comma_list(value)  # log.trackers=wandb,tensorboard on the command line

    @field_validator("trackers")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class AugConfig(_Section):
    """The augmentation stage: what the family's declared inputs (``Family.augments``, e.g. D's
    real and fake images) pass through, differentiably and seeded (distgan/augment.py)."""

    diffaug: list[str] = Field(
        default_factory=list,
        description="DiffAugment policies applied in this order: color, translation, cutout; "
        "empty: off (the identity)",
    )
    ada: bool = Field(
        False, description="ADA: adapt p every ada_interval steps towards E[sign D(real)] = target"
    )
    ada_target: float = Field(0.6, gt=0, lt=1, description="ADA's target for E[sign D(real)]")
    ada_kimg: float = Field(500, gt=0, description="ADA: thousands of images for p to move by 1")
    ada_interval: int = Field(4, ge=1, description="ADA: steps between updates of p")
    ada_pipeline: Literal["bgc", "bg", "b", "c"] = Field(
        "bgc", description="ADA's ops: b(lit) g(eometry) c(olour)"
    )
    p: float = Field(
        0.0, ge=0, le=1, description="ADA's probability per op: fixed (aug.ada=false) or initial"
    )

    @property
    def active(self) -> bool:
        """Whether any image passes through the stage (DiffAugment, ADA or a fixed p)."""
        return bool(self.diffaug) or self.ada or self.p > 0

    @field_validator("diffaug", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)  # aug.diffaug=color,translation on the command line

    @field_validator("diffaug")
    @classmethod
    def _known_policies(cls, value: list[str]) -> list[str]:
        from distgan.augment import POLICIES

        unknown = [name for name in value if name not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policy {unknown[0]!r}; valid: {', '.join(POLICIES)}")
        return value


# figures eval.best can track → (the eval.metrics entry that computes it, higher is better)
BEST = {
    "fid": ("fid", False),
    "kid": ("kid", False),
    "is": ("is", True),
    "precision": ("pr", True),
    "recall": ("pr", True),
    "digits_accuracy": ("digits", True),
    "digits_fd": ("digits", False),
    "moments_distance": ("moments", False),
    "ab_l1": ("colorization", False),
    "psnr": ("l1_psnr", True),
}


class EvalConfig(_Section):
    every: int = Field(0, ge=0, description="evaluate every N steps and at the end; 0: never")
    n: int = Field(500, ge=1, description="samples per evaluation, over all ranks")
    metrics: list[str] = Field(["moments"], description="evaluators (distgan/evaluation/)")
    batch_size: int = Field(100, ge=1, description="per process")
    shards: str | dict[str, str] | None = Field(
        None, description="held-out shards (like data.shards); default: data.shards"
    )
    extractor: Literal["inception", "random"] = Field(
        "inception", description="features of fid/kid/is/pr (random: weights-free fallback)"
    )
    weights: str | None = Field(
        None, description="Inception weights file (default: $DISTGAN_INCEPTION); never fetched"
    )
    best: str | None = Field(
        None, description="keep checkpoints/best.pt at the best value of this figure, e.g. fid"
    )


class InitConfig(_Section):
    """Transfer learning: a new run (its own lineage) that starts from another run's weights."""

    model_config = ConfigDict(
        **_Section.model_config, validate_by_name=True, serialize_by_alias=True
    )

    from_: str | None = Field(
        None,
        alias="from",
        description="checkpoint (or run folder: its newest) whose weights start this run: every "
        "network and EMA copy (the source's G when it kept no EMA); not its optimizers, step, "
        "data position or lineage. The run's own checkpoints take precedence (resume=auto)",
    )
    freeze_d: int = Field(
        0,
        ge=0,
        description="FreezeD: keep D's first K blocks from the image input side fixed "
        "(no gradients, not optimized, statistics kept)",
    )
