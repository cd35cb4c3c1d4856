"""The error of a training run that cannot start or go on, said in words."""

from __future__ import annotations


class TrainError(ValueError):
    """A training run that cannot start, said in words."""
