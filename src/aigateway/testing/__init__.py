"""Test helpers bundled with aigateway: a mock LLM provider speaking OpenAI, Anthropic, Gemini.

Names are imported lazily, so ``python -m aigateway.testing.mock_provider`` runs without the
module being imported twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aigateway.testing.mock_provider import (
        MockOptions,
        add_mock_arguments,
        create_mock_app,
        main,
        run_mock_provider,
    )

__all__ = ["MockOptions", "add_mock_arguments", "create_mock_app", "main", "run_mock_provider"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aigateway.testing import mock_provider

        return getattr(mock_provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
