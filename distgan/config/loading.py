"""Recipes by name, their YAML, and one-line messages for schema errors.

:func:`parse_config` checks a recipe against the schema only (distgan/config/schema.py); the
checks that need the family and the evaluators run above this package, in
:func:`distgan.recipe.check_recipe`.
"""

from __future__ import annotations

import difflib
import reprlib
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distgan.config.schema import SHORTHANDS, Config
from distgan.errors import ConfigError
from distgan.overrides import apply_overrides


def recipe_names() -> list[str]:
    files = resources.files("distgan") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe's YAML as a dict (``name`` set from the file name if the YAML has none), with
    the command line's ``section.key=value`` overrides applied."""
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
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"recipe '{name}' is not valid YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"recipe '{name}' is a YAML {type(raw).__name__}, not a mapping of sections "
            "(name, family, data, train, …)"
        )
    check_expanded_size(raw, f"recipe '{name}'")
    raw.setdefault("name", path.stem if name.endswith((".yaml", ".yml")) else name)
    return apply_overrides(raw, overrides or [])


# A recipe holds a few hundred values. YAML aliases (``*a``) share one node, so a file of 600
# bytes can stand for 9⁹ values (a "billion laughs"): anything that walks it — an error message's
# repr, a dump — would exhaust memory. Such a tree is refused before anything walks it.
MAX_VALUES = 100_000


def check_expanded_size(raw: Any, where: str) -> None:
    """Refuse a tree that, with its shared (aliased) parts expanded, holds more than
    ``MAX_VALUES`` values, or contains itself; counted in time proportional to its distinct
    nodes."""
    try:
        size = _expanded_size(raw, {}, set())
    except RecursionError:
        size = MAX_VALUES + 1
    if size > MAX_VALUES:
        raise ConfigError(
            f"{where} expands to more than {MAX_VALUES} values (or contains itself) through YAML "
            "aliases (*name); refused: write the values out"
        )


def _expanded_size(value: Any, memo: dict[int, int], open_nodes: set[int]) -> int:
    if not isinstance(value, dict | list | tuple):
        return 1
    key = id(value)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        return MAX_VALUES + 1  # a node inside itself (``&a [*a]``)
    open_nodes.add(key)
    total = 1
    for item in value.values() if isinstance(value, dict) else value:
        total += _expanded_size(item, memo, open_nodes)
        if total > MAX_VALUES:
            break
    open_nodes.discard(key)
    memo[key] = total
    return total


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxtuple = 3, 6, 6, 6
_BRIEF.maxstring, _BRIEF.maxother = 80, 80


# --------------------------------------------------------------------------- validation


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid key names at ``loc`` inside ``model`` (for error messages); follows sections and
    mappings of sections (``optim.G.lr``)."""
    parts = list(loc[:-1])
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is dict:  # dict[str, Section]: skip the key
            annotation = typing.get_args(annotation)[1]
            if parts:
                parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(field.alias or name for name, field in model.model_fields.items())


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
    given = _BRIEF.repr(first.get("input"))  # bounded: the value may be huge
    message = str(first["msg"]).removeprefix("Value error, ")[:300]
    return f"bad value for '{key}': {given} — {message}"


def _apply_shorthands(raw: dict[str, Any]) -> None:
    """``train.lr_g=X`` → ``optim.G.lr=X`` (a shorthand given on the command line wins)."""
    train = raw.get("train")
    if not isinstance(train, dict):
        return
    for key, (network, field) in SHORTHANDS.items():
        if key in train:
            optim = raw.setdefault("optim", {})
            if not isinstance(optim, dict) or not isinstance(optim.setdefault(network, {}), dict):
                raise ConfigError(f"'optim.{network}' must be a section (lr, betas, decay_start)")
            optim[network][field] = train.pop(key)


def validate_section(schema: type[BaseModel], values: Any, prefix: str) -> BaseModel:
    """A section validated by ``schema`` (e.g. a family's ``model:``); a mistake is one line
    whose keys start with ``prefix``."""
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, schema, prefix)) from None


def parse_config(raw: dict[str, Any]) -> Config:
    """A recipe's mapping checked against the schema (shorthands applied); ``model:`` and
    ``loss:`` stay mappings until :func:`distgan.recipe.check_recipe` hands them to the family."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a recipe is a YAML mapping of sections, not {type(raw).__name__}")
    check_expanded_size(raw, "the configuration")  # (also a checkpoint's)
    _apply_shorthands(raw)
    return validate_section(Config, raw, "")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
