"""Publisher settings: the shared `ServiceSettings`.

GitHub settings arrive with the stage.
"""

from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Built once, in `main.py`."""
