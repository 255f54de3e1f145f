"""kboot: one command from a declarative profile to a verified Keras environment."""

from __future__ import annotations

__version__ = "0.1.0"
