"""Training: the family-agnostic Trainer, its callbacks, and what it owns (optimisers, checkpoints, DDP)."""

from .callbacks import Callback, ClassShareMonitor, EarlyStopping, Previews, TensorBoard
from .trainer import Trainer, TrainResult

__all__ = ["Callback", "ClassShareMonitor", "EarlyStopping", "Previews", "TensorBoard", "Trainer", "TrainResult"]
