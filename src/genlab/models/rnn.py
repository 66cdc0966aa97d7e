"""LSTM language model (char-rnn; Graves 2013, Karpathy 2015).

Method. Each token id is embedded and read, one position at a time, by a stack of n_layer
LSTM layers (Hochreiter & Schmidhuber 1997) with dropout between them; a linear read-out of
the top layer's hidden state gives the next-token logits. Everything the network knows
about the past is its state (h, c), so the context has no fixed length: generation carries
the state forward and each new token costs one LSTM step, whatever came before.

Training reads random windows of the text, each from a zero state (truncated
backpropagation through time over the window); windows are independent, so a resumed run
replays them exactly. At generation time the state is the cache (`LSTMState`); without it,
each step re-reads the whole sequence from the start, which gives the same tokens slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import GenlabError
from ..registry import register_family
from .autoregressive import AutoregressiveModel


@dataclass
class LSTMConfig:
    vocab_size: int = 65  # filled in from the data's tokenizer
    n_embd: int = 128  # token embedding size
    hidden_size: int = 512
    n_layer: int = 2
    dropout: float = 0.1  # on the embeddings, between LSTM layers and before the read-out

    def __post_init__(self):
        for name in ("vocab_size", "n_embd", "hidden_size", "n_layer"):
            if getattr(self, name) < 1:
                raise GenlabError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise GenlabError(f"model.dropout must be in [0, 1), got {self.dropout}")


class LSTMState:
    """The LSTM's (h, c), each [layers, B, hidden]; None before the first token."""

    def __init__(self):
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def select(self, rows: torch.Tensor) -> None:
        if self.state is not None:
            h, c = self.state
            self.state = (h[:, rows], c[:, rows])


@register_family("lstm")
class LSTM(AutoregressiveModel):
    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.n_embd, config.hidden_size, num_layers=config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, tokens: torch.Tensor, cache: LSTMState | None = None) -> torch.Tensor:
        x = self.dropout(self.embedding(tokens))
        out, state = self.lstm(x, cache.state if cache is not None else None)
        if cache is not None:
            cache.state = state
        return self.head(self.dropout(out))

    def new_cache(self, batch_size: int) -> LSTMState:
        return LSTMState()
