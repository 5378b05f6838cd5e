"""Preflight settings: the shared `ServiceSettings`.

Stage-specific settings arrive with the stages.
"""

from __future__ import annotations

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Built once, in `main.py`."""
