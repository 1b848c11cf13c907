"""Which adapter answers a request in its client's API, target by target: a chat or
embeddings request the target's own adapter, a ``/v1/messages`` request ``messages.py``'s
choice, a ``/v1/responses`` request ``responses.py``'s."""

from __future__ import annotations

from aigateway.providers import messages, responses
from aigateway.providers.base import ChatAdapter
from aigateway.wire import ApiRequest

__all__ = ["answering"]


def answering(request: ApiRequest, adapter: ChatAdapter) -> ChatAdapter:
    if request.operation == "messages":
        return messages.answering(request, adapter)
    if request.operation == "responses":
        return responses.answering(request, adapter)
    return adapter
