"""The schema of a run's configuration: one pydantic section per top-level key of a recipe.

The ``model:`` and ``loss:`` sections belong to the recipe's family, which owns their schemas:
here they are mappings, and :func:`distgan.recipe.check_recipe` replaces each by the family's
validated section (its ``ModelConfig`` / ``LossConfig``, defaults filled in). ``optim:`` is keyed
by the family's network names, so adding a family never touches this package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from distgan.config.sections import (
    AugConfig,
    EvalConfig,
    InitConfig,
    LogConfig,
    _Section,
)


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from ``3600``, ``"90m"``, ``"1h30m"``, ``"45s"`` or SLURM-style ``"01:30:00"``."""
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    text = text.strip()
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}", text):
        seconds = 0.0
        for part in text.split(":"):
            seconds = seconds * 60 + int(part)
        return seconds
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"'{text}' is not a duration (e.g. 3600, 90m, 1h30m, 01:30:00)")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


class RunConfig(_Section):
    dir: str = Field("runs/{name}", description="run folder; {name} is the recipe name")

    @field_validator("dir")
    @classmethod
    def _only_name_placeholder(cls, value: str) -> str:
        try:
            value.format(name="name")
        except (KeyError, IndexError, ValueError, AttributeError):
            raise ValueError(
                "the only placeholder run.dir may hold is {name} (write other braces twice: {{ }})"
            ) from None
        return value

    keep_last: int = Field(3, ge=1, description="checkpoints kept in run.dir/checkpoints")
    overwrite: bool = Field(
        False,
        description="start afresh in a run.dir that holds a run: move it to "
        "<run.dir>.replaced-<time> first",
    )


class DataConfig(_Section):
    shards: str | dict[str, str] = Field(
        ...,
        description="folder with WebDataset *.tar shards + manifest.json, or one folder per "
        "named stream for families that read several (e.g. {A: DIR, B: DIR})",
    )
    num_workers: int = Field(2, ge=0, description="logical loader workers per rank (data order)")
    loader_processes: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="processes reading them (divides num_workers; 0: the trainer; "
        "auto: by cores, never the data order)",
    )
    decode_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="threads decoding each reading process's images (auto: the rank's cores "
        "shared by its loader processes; 1 on ranks with ≤ 2 cores); never the data order",
    )
    shuffle_buffer: int = Field(1000, ge=1, description="samples held for shuffling per worker")
    verify: bool = Field(False, description="check every shard's sha256 against the manifest")
    mode: Literal["epoch", "resampled"] = Field(
        "epoch",
        description="epoch: every sample once per epoch (shards, or ranges of them when there are "
        "fewer than ranks × workers, dealt to the ranks' workers); "
        "resampled: shards drawn with replacement, any number of shards",
    )
    flip: bool = Field(False, description="random horizontal flip (image and target alike)")
    crop: float = Field(
        1.0,
        gt=0,
        le=1,
        description="random square crop of this fraction of the side, resized back; 1 = off",
    )
    grayscale: bool = Field(False, description="convert RGB images to one channel (luma)")
    lab: bool = Field(False, description="CIE L*a*b* instead of RGB, scaled L/50-1, a/110, b/110")
    resolution: int | None = Field(
        None,
        ge=1,
        description="image size the recipe's networks are built for, checked against the "
        "shards' manifest; null: whatever the shards hold",
    )

    subset: int | None = Field(
        None,
        ge=1,
        description="train on a fixed N samples of the shards (stratified by class when "
        "labelled), the same for any seed, world size, workers and resume; the evaluation's "
        "reference on these shards is the rest",
    )
    subset_seed: int = Field(0, ge=0, description="picks another data.subset")
    exclude: list[str] = Field(
        default_factory=list,
        description="sample keys never trained on (e.g. leave-one-out); with eval on these "
        "shards, they are the reference",
    )

    @field_validator("subset", "exclude")
    @classmethod
    def _one_folder(cls, value: Any, info) -> Any:
        if value and isinstance(info.data.get("shards"), dict):
            raise ValueError(
                "data.subset and data.exclude need one shard folder, not named streams"
            )
        return value

    @field_validator("lab")
    @classmethod
    def _one_colour_space(cls, lab: bool, info) -> bool:
        if lab and info.data.get("grayscale"):
            raise ValueError("data.grayscale and data.lab exclude each other; pick one")
        return lab


class TrainConfig(_Section):
    steps: int = Field(
        ..., ge=1, description="training steps: each takes one batch and runs the phases due"
    )
    batch_size: int = Field(64, ge=1, description="per process; global = this × processes")
    seed: int = Field(0, ge=0, lt=2**32, description="0 … 2³²−1")
    precision: Literal["no", "bf16", "fp16", "auto"] = Field(
        "no", description="no (fp32) | bf16 | fp16 (CUDA) | auto: the fastest for the device"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # `precision: no` in YAML 1.1 is False

    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="decay of the family's EMA copies; 0 copies every step"
    )
    ema_kimg: float | None = Field(
        None,
        gt=0,
        description="EMA half-life in thousands of images seen (StyleGAN2-ADA); replaces ema_decay",
    )
    ema_rampup: float | None = Field(
        None,
        gt=0,
        description="with ema_kimg: half-life at most this × the images seen so far (e.g. 0.05)",
    )

    @field_validator("ema_rampup")
    @classmethod
    def _rampup_needs_a_half_life(cls, rampup: float | None, info) -> float | None:
        if rampup is not None and info.data.get("ema_kimg") is None:
            raise ValueError("train.ema_rampup applies to train.ema_kimg: set that too")
        return rampup

    accumulate: int = Field(
        1,
        ge=1,
        description="micro-batches of batch_size per optimizer step (gradient accumulation); "
        "global batch = batch_size × accumulate × processes",
    )
    checkpoint_every: int = Field(500, ge=1)
    max_skipped_steps: int = Field(
        50, ge=1, description="fp16: stop after this many optimizer steps in a row were skipped"
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the networks' plain passes (auto: off until a GPU run has "
        "shown it works and pays; a pass that fails to compile falls back to eager)",
    )
    deterministic: bool = Field(
        False,
        description="deterministic GPU kernels (cuDNN, cuBLAS, use_deterministic_algorithms) for "
        "exact GPU resume; slower. CPU runs are deterministic anyway",
    )
    device: Literal["auto", "cpu"] = Field(
        "auto",
        description="auto: the GPUs when usable (a machine whose GPUs cannot be used is refused); "
        "cpu: train on the CPU even where GPUs are present",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC memory format for conv nets (auto: when it measured faster)"
    )
    fused_optimizers: bool | Literal["auto"] = Field(
        "auto", description="fused Adam kernels (auto: on)"
    )
    num_processes: int | None = Field(
        None, ge=1, description="expected world size; default: what the launcher asked for"
    )
    time_limit: str | float | None = Field(
        None, description="stop cleanly (checkpoint, exit 75) after this long: 3600, 90m, 1h30m"
    )
    stop_check_every: int = Field(
        5, ge=1, description="steps between the ranks' checks for signals and the time limit"
    )
    collective_timeout: float = Field(
        600, gt=0, description="seconds a collective may wait before a dead rank fails the job"
    )

    @field_validator("time_limit")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        seconds = parse_duration(value)  # raises ValueError with the accepted forms
        if seconds is not None and not 0 < seconds < float("inf"):
            raise ValueError("a time limit must be positive (null: no limit)")
        return value


class OptimConfig(_Section):
    """Adam for one network (``optim.<network>.*``), with an optional linear decay."""

    lr: float = Field(2e-4, gt=0, description="learning rate")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam's (β1, β2), each in [0, 1)")

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("Adam's betas must each lie in [0, 1)")
        return betas

    decay_start: float = Field(
        1.0,
        ge=0,
        le=1,
        description="fraction of train.steps after which lr decays linearly to 0 at the last "
        "step (pix2pix/CycleGAN: 0.5); 1 = constant",
    )


# Documented shorthands of the two-player families: train.lr_g=X means optim.G.lr=X.
SHORTHANDS = {
    "lr_g": ("G", "lr"),
    "lr_d": ("D", "lr"),
    "betas_g": ("G", "betas"),
    "betas_d": ("D", "betas"),
}


class Config(_Section):
    name: str = Field(..., description="recipe name")
    family: str = Field(
        ..., description="a module in distgan/families/, or an importable module path"
    )
    run: RunConfig = RunConfig()
    data: DataConfig
    train: TrainConfig
    optim: dict[str, OptimConfig] = Field(
        default_factory=dict, description="per trained network, e.g. optim.G.lr, optim.D.betas"
    )
    loss: dict[str, Any] = Field(
        default_factory=dict, description="the family's losses (checked: its LossConfig)"
    )
    aug: AugConfig = AugConfig()
    log: LogConfig = LogConfig()
    eval: EvalConfig = EvalConfig()
    model: dict[str, Any] = Field(
        default_factory=dict, description="the family's networks (checked: its ModelConfig)"
    )
    resume: str = Field("auto", description="auto | never | PATH to a checkpoint")
    init: InitConfig = InitConfig()

    @model_validator(mode="after")
    def _one_way_to_start(self) -> Config:
        if self.init.from_ is not None and self.resume not in ("auto", "never"):
            raise ValueError(
                "init.from (new weights, a new lineage) and resume=PATH (continue a run) exclude "
                "each other; give one"
            )
        return self

    # ``model``/``loss`` hold a mapping as read, and the family's validated section once
    # distgan.recipe.check_recipe has run; either dumps as a mapping (YAML, checkpoints).
    @field_validator("model", "loss", mode="wrap")
    @classmethod
    def _family_section(cls, value: Any, handler: Any) -> Any:
        return value if isinstance(value, BaseModel) else handler(value)

    @field_serializer("model", "loss")
    def _dump_family_section(self, value: Any, info: Any) -> Any:
        return value.model_dump(mode=info.mode) if isinstance(value, BaseModel) else value

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir.format(name=self.name))

    def optimizer(self, network: str) -> OptimConfig:
        """``optim.<network>``, or Adam's defaults when the recipe does not set it."""
        return self.optim.get(network) or OptimConfig()
