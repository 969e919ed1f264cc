"""Command-line options made from the config tree: one default and one help text per setting.

``option(ClassifierConfig, "epochs")`` is ``--epochs`` with the field's default and description,
so ``--help`` shows exactly what a study config would use. :func:`settings` builds a config
model from the options a command received and turns a pydantic error into one line naming the
flag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from dermsynth.config import GENERATORS, GeneratorSettings, format_errors, generator_config
from dermsynth.errors import DermsynthError

Model = TypeVar("Model", bound=BaseModel)


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def default_of(model: type[BaseModel], name: str) -> Any:
    """The default of a config field (a factory's value for mutable defaults)."""
    return model.model_fields[name].get_default(call_default_factory=True)


def option(
    model: type[BaseModel], name: str, *flags: str, help: str | None = None, **kw: Any
) -> Any:
    """A typer option with the config field's default and description."""
    info = model.model_fields[name]
    return typer.Option(
        default_of(model, name), *(flags or (flag(name),)), help=help or info.description, **kw
    )


def backend_option(name: str, *flags: str, **kw: Any) -> Any:
    """A generator option whose default depends on the backend: None here, and the help lists
    each backend's default."""
    defaults = []
    for backend, model in GENERATORS.items():
        if name in model.model_fields:
            defaults.append(f"{backend} {default_of(model, name)}")
    description = next(
        (m.model_fields[name].description for m in GENERATORS.values() if name in m.model_fields),
        "",
    )
    text = f"{description} [default: {', '.join(defaults)}]" if defaults else description
    return typer.Option(None, *(flags or (flag(name),)), help=text, show_default=False, **kw)


def settings(model: type[Model], **values: Any) -> Model:
    """``model`` validated from command-line values (None: not given); errors name the flags."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        lines = [_as_flags(line) for line in format_errors(exc)]
        raise DermsynthError("; ".join(lines)) from None


def _as_flags(line: str) -> str:
    where, _, message = line.partition(": ")
    head = where.split(".")[0]
    return f"{flag(head)}{where[len(head) :]}: {message}" if head != "(top level)" else message


def generator_settings(**values: Any) -> GeneratorSettings:
    """The generator settings of the chosen backend from command-line values (None: not given)."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return generator_config(**given)
    except ValidationError as exc:
        lines = [_as_flags(line) for line in format_errors(exc)]
        raise DermsynthError(
            f"--backend {given.get('backend', 'diffusers')}: " + "; ".join(lines)
        ) from None


def finite_in(low: float, high: float | None = None) -> Callable[[float | None], float | None]:
    """Option callback: a finite number from ``low`` (to ``high``); click's own range check
    would call NaN "more than the maximum"."""

    def check(value: float | None) -> float | None:
        value = finite(value)
        if value is None:
            return value
        if high is None and value < low:
            raise typer.BadParameter(f"must be at least {low:g}, got {value:g}")
        if high is not None and not low <= value <= high:
            raise typer.BadParameter(f"must be from {low:g} to {high:g}, got {value:g}")
        return value

    return check


def finite(value: float | None) -> float | None:
    """Option callback: refuse NaN and infinities (they would poison a run and its resume key)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value
