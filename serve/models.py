"""The models this API serves: SERVE_MODELS (`churn@champion,price@champion`), each with its own holder.

Each entry has its own `ModelHolder` and poll thread, so each model swaps on its own alias without touching
the others. POST /v1/predict serves the default model: SERVE_MODEL_NAME when SERVE_MODELS lists it (or
SERVE_MODELS is empty), else the first entry of SERVE_MODELS.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from serve.errors import NotFound
from serve.model_loader import ModelHolder, ServingModel

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str


def parse_models(text: str, default_alias: str = "champion") -> list[ModelRef]:
    """`name@alias,name@alias` (alias optional: the default alias); names are unique."""
    refs: list[ModelRef] = []
    for item in (i.strip() for i in text.replace("\n", ",").split(",")):
        if not item:
            continue
        name, _, alias = item.partition("@")
        name, alias = name.strip(), (alias.strip() or default_alias)
        if not NAME.match(name) or not NAME.match(alias):
            raise ValueError(
                f"SERVE_MODELS: '{item[:80]}' is not 'name@alias' "
                "(letters, digits, . _ -; e.g. churn@champion)"
            )
        if any(r.name == name for r in refs):
            raise ValueError(f"SERVE_MODELS names model '{name}' twice; each model is served once")
        refs.append(ModelRef(name, alias))
    return refs


def served_refs(models: str, default_name: str, default_alias: str) -> tuple[list[ModelRef], str]:
    """(every served model, the default's name) from the settings."""
    refs = parse_models(models, default_alias)
    if not refs:
        return [ModelRef(default_name, default_alias)], default_name
    names = [r.name for r in refs]
    return refs, (default_name if default_name in names else names[0])


class ServedModels:
    """Name -> holder; iteration order is the order of SERVE_MODELS."""

    def __init__(self, holders: dict[str, ModelHolder], default: str):
        self.holders = holders
        self.default_name = default

    @classmethod
    def build(
        cls,
        refs: list[ModelRef],
        default: str,
        make: Callable[[ModelRef], ModelHolder],
    ) -> ServedModels:
        return cls({r.name: make(r) for r in refs}, default)

    @property
    def default(self) -> ModelHolder:
        return self.holders[self.default_name]

    def holder(self, name: str) -> ModelHolder:
        try:
            return self.holders[name]
        except KeyError:
            raise NotFound(
                f"model '{name[:200]}' is not served here; served models: {', '.join(self.holders)} "
                "(GET /v1/models)"
            ) from None

    def get(self, name: str) -> ServingModel:
        return self.holder(name).get()

    def __iter__(self) -> Iterator[ModelHolder]:
        return iter(self.holders.values())

    def loaded(self) -> list[ServingModel]:
        return [h.current for h in self if h.current is not None]

    def refresh_all(self) -> None:
        for h in self:
            h.refresh()

    def start_polling(self) -> None:
        for h in self:
            h.start_polling()

    def stop(self) -> None:
        for h in self:
            h.stop()
