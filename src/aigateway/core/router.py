"""Which providers and models may answer a request, in the order to try them.

A request names its target in one of these ways, checked in this order:

1. the native API's ``provider`` field, with ``model`` as that provider's model name;
2. ``provider/model``, where ``provider`` is a configured provider's name;
3. an alias from the configuration file: an ordered fallback chain, whose weighted
   entries spread load (the first target is drawn by weight, the rest follow in order);
4. a bare model name listed under a configured provider's ``models``;
5. a model-name family of a built-in provider (``provider_specs.BUILT_IN``), such as
   gpt-* → openai, gemini-* → google, claude-* → anthropic;
6. the configuration file's ``default_provider``.

Anything else is a 404 (`model_not_found`, as OpenAI answers) that says how to name a
target.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence

from aigateway.config import AliasTarget
from aigateway.errors import NotFound
from aigateway.provider_specs import BUILT_IN
from aigateway.provider_specs import families as spec_families
from aigateway.wire import Target


class Router:
    def __init__(
        self,
        providers: Collection[str],
        *,
        aliases: Mapping[str, Sequence[AliasTarget]] | None = None,
        models: Mapping[str, str] | None = None,
        default_provider: str | None = None,
        families: Sequence[tuple[str, str]] = spec_families(BUILT_IN),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._providers = frozenset(providers)
        self._families = tuple(families)  # (model-name prefix, provider), first match wins
        self._aliases = dict(aliases or {})
        self._models = dict(models or {})  # bare model name -> provider
        self._default = default_provider
        self._rand = rand

    def targets(self, model: str, provider: str | None = None) -> list[Target]:
        if provider is not None:
            if provider not in self._providers:
                raise NotFound(
                    f"unknown provider {provider!r}; configured providers: {self._names()}",
                    param="provider",
                    code="provider_not_found",
                )
            return [Target(provider, model)]
        prefix, slash, rest = model.partition("/")
        if slash and prefix in self._providers:
            if not rest:
                raise NotFound(
                    f"model {model!r} names provider {prefix!r} but no model; "
                    f"use '{prefix}/<model>'",
                    param="model",
                    code="model_not_found",
                )
            return [Target(prefix, rest)]
        chain = self._aliases.get(model)
        if chain is not None:
            return self._expand(chain)
        owner = self._models.get(model) or self._family(model) or self._default
        if owner is not None and owner in self._providers:
            return [Target(owner, model)]
        raise NotFound(
            f"unknown model {model!r}: name a target as 'provider/model' (providers: "
            f"{self._names()}), use an alias"
            + (f" ({', '.join(sorted(self._aliases))})" if self._aliases else "")
            + f", or a model of a known family ({self._family_names()})",
            param="model",
            code="model_not_found",
        )

    def is_alias(self, model: str) -> bool:
        return model in self._aliases

    def _expand(self, chain: Sequence[AliasTarget]) -> list[Target]:
        ordered = list(chain)
        weighted = [entry for entry in chain if entry.weight > 0]
        if len(weighted) > 1:
            point = self._rand() * sum(entry.weight for entry in weighted)
            first = weighted[-1]
            for entry in weighted:
                point -= entry.weight
                if point < 0:
                    first = entry
                    break
            ordered.remove(first)
            ordered.insert(0, first)
        targets = []
        for entry in ordered:
            provider, _, model = entry.target.partition("/")
            targets.append(Target(provider, model))
        return targets

    def _names(self) -> str:
        return ", ".join(sorted(self._providers))

    def _family(self, model: str) -> str | None:
        for prefix, provider in self._families:
            if model.startswith(prefix):
                return provider
        return None

    def _family_names(self) -> str:
        return ", ".join(f"{prefix}*" for prefix, p in self._families if p in self._providers)
