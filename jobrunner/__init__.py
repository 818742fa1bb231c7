"""jobrunner: run parameterised notebooks through one execution path and record every run.

Public surface:
    execute(...)        run a notebook now, in a fresh kernel, and record it in MLflow
    read_schema(path)   the notebook's parameter contract
    get_settings()      the settings of this process
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "execute", "get_settings", "read_schema"]

if TYPE_CHECKING:  # pragma: no cover
    from jobrunner.config import get_settings
    from jobrunner.execution.executor import execute
    from jobrunner.execution.params import read_schema


def __getattr__(name: str) -> Any:
    # Lazy: `import jobrunner` inside a notebook kernel must stay cheap (no papermill, no MLflow).
    if name == "execute":
        from jobrunner.execution.executor import execute

        return execute
    if name == "read_schema":
        from jobrunner.execution.params import read_schema

        return read_schema
    if name == "get_settings":
        from jobrunner.config import get_settings

        return get_settings
    raise AttributeError(name)
