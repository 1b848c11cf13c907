from __future__ import annotations

import types

import pytest

from aigateway import hotpath


@pytest.fixture(scope="session", params=["python", "cython"], ids=["python", "cython"])
def hotpath_impl(request: pytest.FixtureRequest) -> types.ModuleType:
    """Each implementation of ``aigateway.hotpath`` in turn: the pure twins, then the compiled.

    The compiled one is skipped only when ``AIGATEWAY_NO_EXTENSIONS`` is set; otherwise a
    missing build fails the tests that use it.
    """
    name: str = request.param
    if name == "cython" and hotpath.NO_EXTENSIONS:
        pytest.skip("AIGATEWAY_NO_EXTENSIONS is set: the compiled twins are not used")
    try:
        return hotpath.load(name)
    except ImportError as exc:
        pytest.fail(f"{exc}\n(set AIGATEWAY_NO_EXTENSIONS=1 to test the pure twins only)")
