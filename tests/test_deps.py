from __future__ import annotations

import inspect

from app.api import deps


def test_dependencies_run_on_the_event_loop_not_in_the_thread_pool() -> None:
    # FastAPI sends a plain `def` dependency to its thread pool: a thread hop per request each.
    for dependency in (deps.get_registry, deps.get_app_settings):
        assert inspect.iscoroutinefunction(dependency), dependency.__name__
