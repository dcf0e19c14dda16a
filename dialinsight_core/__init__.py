"""dialinsight core: pure-Python stages of the Dial-insight data platform (no Airflow import)."""

from __future__ import annotations

__version__ = "0.1.0"
