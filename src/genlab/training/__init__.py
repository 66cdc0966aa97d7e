"""Training: the family-agnostic Trainer and what it owns (optimisers, checkpoints, DDP)."""

from .trainer import Trainer, TrainResult

__all__ = ["Trainer", "TrainResult"]
