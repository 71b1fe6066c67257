"""Command-line overrides of a recipe: ``section.key=value`` strings applied to its YAML tree."""

from __future__ import annotations

from typing import Any

import yaml

from distgan.errors import ConfigError


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
