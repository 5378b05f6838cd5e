"""Publisher settings: the shared `ServiceSettings`.

GitHub settings arrive with the stage.
"""

from __future__ import annotations

from shared.settings import WorkerSettings


class Settings(WorkerSettings):
    """Built once, in `main.py`."""
