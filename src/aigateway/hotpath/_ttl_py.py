"""How long to cache an answer (pure-Python twin).

This module is the executable specification of ``ext/_ttl_c.pyx``: both define the same
names with the same signatures and must give the same result for every input.

``compute_ttl(request, provider, default_ttl_s, policy)`` applies these rules to an
OpenAI-format chat body, with the thresholds and TTLs of ``policy``
(``DEFAULT_TTL_POLICY`` when ``None``); every rule that applies proposes a TTL:

* exactly one message whose role is not a system role (``system``, ``developer``): a
  single question, ``single_message_ttl_s`` (2 h);
* more than ``long_conversation_messages`` (10) messages: ``long_conversation_ttl_s``
  (15 min);
* temperature >= ``high_temperature`` (0.8): ``high_temperature_ttl_s`` (10 min);
* temperature <= ``low_temperature`` (0.2): ``low_temperature_ttl_s`` (4 h);
* a content part of any message whose ``type`` is not a text type (an image, audio, a
  file; a part that is not an object counts too, a bare string does not):
  ``attachment_ttl_s`` (20 min).

The shortest proposal wins; with none, the TTL is ``default_ttl_s``.  The result is then
multiplied by ``policy.provider_factors.get(provider, 1.0)``.

A temperature that is absent, ``null`` or not a number counts as the provider's default
(``policy.provider_temperatures.get(provider, policy.default_temperature)``, 1.0).  A
message that is not an object counts as a non-system message without attachments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._ttl_policy import DEFAULT_TTL_POLICY, TTLPolicy

__all__ = ("DEFAULT_TTL_POLICY", "TTLPolicy", "compute_ttl")


def compute_ttl(
    request: Mapping[str, Any],
    provider: str,
    default_ttl_s: float,
    policy: TTLPolicy | None = None,
) -> float:
    """Seconds to keep the answer to ``request`` (from ``provider``) in the cache."""
    if policy is None:
        policy = DEFAULT_TTL_POLICY
    ttl = math.inf

    messages = request.get("messages")
    if isinstance(messages, list | tuple):
        if len(messages) > policy.long_conversation_messages:
            ttl = min(ttl, policy.long_conversation_ttl_s)
        questions = 0
        attachment = False
        for message in messages:
            if not isinstance(message, Mapping):
                questions += 1
                continue
            role = message.get("role")
            if not (isinstance(role, str) and role in policy.system_roles):
                questions += 1
            if attachment:
                continue
            content = message.get("content")
            if isinstance(content, list | tuple):
                for part in content:
                    if isinstance(part, str):
                        continue
                    kind = part.get("type") if isinstance(part, Mapping) else None
                    if not (isinstance(kind, str) and kind in policy.text_part_types):
                        attachment = True
                        break
        if questions == 1:
            ttl = min(ttl, policy.single_message_ttl_s)
        if attachment:
            ttl = min(ttl, policy.attachment_ttl_s)

    temperature = request.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        temperature = policy.provider_temperatures.get(provider, policy.default_temperature)
    if temperature >= policy.high_temperature:
        ttl = min(ttl, policy.high_temperature_ttl_s)
    if temperature <= policy.low_temperature:
        ttl = min(ttl, policy.low_temperature_ttl_s)

    if ttl == math.inf:
        ttl = default_ttl_s
    return ttl * policy.provider_factors.get(provider, 1.0)
