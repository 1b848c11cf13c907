"""Which provider and model answer a request.

A model may name its provider explicitly as ``provider/model``; any other name
goes to the default provider. (Model families, aliases and fallback chains come
with the providers issue.)
"""

from __future__ import annotations

from collections.abc import Collection

from aigateway.core.types import Target
from aigateway.errors import InvalidRequest


class Router:
    def __init__(self, providers: Collection[str], default_provider: str) -> None:
        self._providers = frozenset(providers)
        self._default = default_provider

    def targets(self, model: str) -> list[Target]:
        prefix, slash, rest = model.partition("/")
        if slash and prefix in self._providers:
            if not rest:
                raise InvalidRequest(
                    f"model {model!r} names provider {prefix!r} but no model; "
                    f"use '{prefix}/<model>'",
                    param="model",
                    code="model_not_found",
                )
            return [Target(prefix, rest)]
        return [Target(self._default, model)]
