"""Typed run configuration: named YAML recipes + dotted command-line overrides.

A recipe file (``distgan/configs/<name>.yaml``) is validated against :class:`Config`. The
``model`` section belongs to the GAN family (``family: dcgan`` → ``distgan/recipes/dcgan.py``),
which validates it with its own schema, so adding a family never touches this file.

Every mistake becomes a :class:`ConfigError` whose message names the offending key and the
allowed values; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A user mistake in a recipe name, key or value (exit code 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    dir: str = Field("runs/{name}", description="run folder; {name} is the recipe name")
    keep_last: int = Field(3, ge=1, description="checkpoints kept in run.dir/checkpoints")


class DataConfig(_Section):
    shards: str = Field(..., description="folder with WebDataset *.tar shards + manifest.json")
    num_workers: int = Field(2, ge=0, description="data-loader worker processes per rank")
    shuffle_buffer: int = Field(1000, ge=1, description="samples held for shuffling per worker")
    verify: bool = Field(False, description="check every shard's sha256 against the manifest")
    mode: Literal["epoch", "resampled"] = Field(
        "epoch",
        description="epoch: every sample once per epoch (needs shards ≥ ranks × workers); "
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

    @field_validator("lab")
    @classmethod
    def _one_colour_space(cls, lab: bool, info) -> bool:
        if lab and info.data.get("grayscale"):
            raise ValueError("data.grayscale and data.lab exclude each other; pick one")
        return lab


class TrainConfig(_Section):
    steps: int = Field(..., ge=1, description="optimizer steps of the generator schedule")
    batch_size: int = Field(64, ge=1, description="per process; global = this × processes")
    seed: int = 0
    precision: Literal["no", "bf16", "fp16", "auto"] = Field(
        "no", description="no (fp32) | bf16 | fp16 (CUDA) | auto: the fastest for the device"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # `precision: no` in YAML 1.1 is False

    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    betas_g: tuple[float, float] = (0.5, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of G; 0 copies G every step")
    checkpoint_every: int = Field(500, ge=1)
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the networks' passes (auto: on CUDA)"
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC memory format for conv nets (auto: when it measured faster)"
    )
    fused_optimizers: bool | Literal["auto"] = Field(
        "auto", description="fused Adam kernels (auto: on CUDA)"
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
        from distgan.engine.signals import parse_duration

        parse_duration(value)  # raises ValueError with the accepted forms
        return value


class LossConfig(_Section):
    """The generic loss section: adversarial loss, regularizers, schedule and "GAN hacks"
    (see distgan/losses.py and distgan/penalties.py)."""

    adversarial: Literal["minimax", "nonsaturating", "hinge", "wasserstein", "lsgan"] = Field(
        "nonsaturating", description="adversarial loss of D and G"
    )
    real_label: float = Field(
        1.0, gt=0, le=1, description="D's target for real images: one-sided smoothing, e.g. 0.9"
    )
    label_noise: float = Field(
        0.0, ge=0, lt=0.5, description="D's targets drawn from [real_label − a, real_label], [0, a]"
    )
    label_flip: float = Field(
        0.0, ge=0, lt=0.5, description="fraction of samples whose real/fake targets D sees swapped"
    )
    instance_noise: float = Field(
        0.0, ge=0, description="std of Gaussian noise on D's inputs, annealed linearly to 0"
    )
    gp_weight: float = Field(0.0, ge=0, description="WGAN-GP λ: λ·E[(‖∇D(x̂)‖ − 1)²]")
    r1_gamma: float = Field(0.0, ge=0, description="R1 γ: γ/2·E[‖∇D(x)‖²] on real images")
    reg_every: int = Field(
        1, ge=1, description="lazy regularization: the penalty on every k-th step, with gain k"
    )
    n_critic: int = Field(1, ge=1, description="D steps per G step (one D step per train step)")

    @model_validator(mode="after")
    def _targets_need_a_target_loss(self) -> LossConfig:
        hacks = self.real_label != 1.0 or self.label_noise or self.label_flip
        if hacks and self.adversarial in ("hinge", "wasserstein"):
            raise ValueError(
                f"loss.real_label/label_noise/label_flip need a loss with targets (minimax, "
                f"nonsaturating, lsgan), not loss.adversarial={self.adversarial}"
            )
        return self


class LogConfig(_Section):
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "distgan"
    every: int = Field(25, ge=1, description="scalar logging interval in steps")
    sample_every: int = Field(250, ge=1, description="sample-grid interval in steps")
    samples_per_class: int = Field(10, ge=1, description="grid columns (one row per class)")


class Config(_Section):
    name: str = Field(..., description="recipe name")
    family: str = Field(..., description="GAN family: a module in distgan/recipes/")
    run: RunConfig = RunConfig()
    data: DataConfig
    train: TrainConfig
    loss: LossConfig = LossConfig()
    log: LogConfig = LogConfig()
    model: dict[str, Any] = Field(default_factory=dict, description="family-specific networks")
    resume: str = Field("auto", description="auto | never | PATH to a checkpoint")

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir.format(name=self.name))


# --------------------------------------------------------------------------- recipes by name


def recipe_names() -> list[str]:
    files = resources.files("distgan") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_recipe(name: str) -> dict[str, Any]:
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.exists():
        text = path.read_text()
    else:
        names = recipe_names()
        if name not in names:
            hint = difflib.get_close_matches(name, names, n=1)
            maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"unknown recipe '{name}'{maybe}; valid recipes: {', '.join(names)} "
                "(or a path to a .yaml file)"
            )
        text = (resources.files("distgan") / "configs" / f"{name}.yaml").read_text()
    raw = yaml.safe_load(text) or {}
    raw.setdefault("name", path.stem if name.endswith((".yaml", ".yml")) else name)
    return raw


# --------------------------------------------------------------------------- overrides


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{dotted}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML scalars (``1e-4``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' is not of the form key=value (e.g. train.steps=100)"
            )
        key, text = item.split("=", 1)
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        _set_dotted(tree, key.strip(), parse_value(text))
    return tree


def parse_value(text: str) -> Any:
    """A command-line value: int, float, true/false, null, a [list] / {map}, else the string.

    Not plain YAML: YAML 1.1 reads ``no``/``yes``/``on``/``off`` as booleans, but
    ``train.precision=no`` must stay the string "no".
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


# --------------------------------------------------------------------------- validation


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid key names at ``loc`` inside ``model`` (for error messages)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def format_validation_error(err: ValidationError, schema: type[BaseModel], prefix: str = "") -> str:
    """The first error of a pydantic validation, as one line naming the key and the choices."""
    first = err.errors()[0]
    loc = first["loc"]
    key = prefix + ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        valid = _fields_of(schema, loc)
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{key}'{maybe}; valid keys here: {', '.join(valid)}"
    if first["type"] == "missing":
        return f"missing key '{key}'"
    if first["type"] == "value_error" and isinstance(first.get("input"), dict):
        return str(first["msg"]).removeprefix("Value error, ")  # a whole-section check
    given = first.get("input")
    return f"bad value for '{key}': {given!r} — {first['msg']}"


def validate(raw: dict[str, Any]) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, Config)) from None
    # The family validates (and fills defaults of) its own `model` section.
    from distgan.recipes import get_recipe

    recipe = get_recipe(cfg.family)
    try:
        model = recipe.ModelConfig.model_validate(cfg.model)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, recipe.ModelConfig, "model.")) from None
    cfg.model = model.model_dump()
    return cfg


def load_config(recipe: str, overrides: list[str] | None = None) -> Config:
    """Resolve a recipe name (or YAML path) plus overrides into a validated :class:`Config`."""
    raw = _read_recipe(recipe)
    apply_overrides(raw, overrides or [])
    return validate(raw)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
