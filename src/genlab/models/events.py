"""Event models of music: the GPT and the LSTM of the text families, over music events.

Method. A piece is a sequence of events (genlab.data.music.EventVocabulary: START,
NOTE_ON p, NOTE_OFF p, TIME_SHIFT k, VELOCITY b) and is modelled one event at a time,
exactly as text is modelled one token at a time (models/autoregressive.py): the networks
are the text families' own `GPT` (models/transformer.py) and `LSTM` (models/rnn.py),
trained on windows of the chorales' event stream with the same next-token cross-entropy;
the loss is in nats per event. Decoding (temperature, top-p, the KV cache, the context
window) is genlab.sampling's. What this file adds is what makes them music models:

    data_kind "music"   recipes carry a MusicDataSpec (genlab.data.music)
    the vocabulary      the config records the grid and the event vocabulary
                        (steps_per_quarter, max_shift, velocity_bins), so a loaded model
                        turns its tokens back into notes without the data
    "compose"           genlab.tasks.compose draws pieces of a given length in bars,
                        continuing a MIDI prompt, and writes MIDI, WAV and a piano roll
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.music import EventVocabulary, Piece
from ..errors import GenlabError
from ..registry import register_family
from .base import check_sample_count
from .rnn import LSTM, LSTMConfig
from .transformer import GPT, GPTConfig

SAMPLE_BARS = 8  # length of each piece drawn by `sample` (genlab.sample)


@dataclass
class EventVocabularyFields:
    """What a music event model knows about its tokens; filled in from the data."""

    steps_per_quarter: int = 4
    max_shift: int = 16
    velocity_bins: int = 32

    def _check_vocabulary(self) -> None:
        if self.steps_per_quarter < 1:
            raise GenlabError(f"model.steps_per_quarter must be at least 1, got {self.steps_per_quarter}")
        expected = EventVocabulary(self.max_shift, self.velocity_bins).size
        if self.vocab_size != expected:
            raise GenlabError(f"model.vocab_size={self.vocab_size} does not match the event vocabulary of "
                              f"{expected} (max_shift={self.max_shift}, velocity_bins={self.velocity_bins})",
                              "remove model.vocab_size: the data decides it")


@dataclass
class MusicGPTConfig(GPTConfig, EventVocabularyFields):
    vocab_size: int = EventVocabulary().size
    block_size: int = 256

    def __post_init__(self):
        super().__post_init__()
        self._check_vocabulary()


@dataclass
class MusicLSTMConfig(LSTMConfig, EventVocabularyFields):
    vocab_size: int = EventVocabulary().size

    def __post_init__(self):
        super().__post_init__()
        self._check_vocabulary()


class EventModel:
    """What the GPT and LSTM music families share (a mixin in front of the text family)."""

    data_kind = "music"
    capabilities = frozenset({"sample", "log_likelihood", "compose"})

    @property
    def vocabulary(self) -> EventVocabulary:
        return EventVocabulary(self.config.max_shift, self.config.velocity_bins)

    @property
    def steps_per_quarter(self) -> int:
        return self.config.steps_per_quarter

    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None,
               bars: int = SAMPLE_BARS) -> list[Piece]:
        """n pieces of `bars` 4/4 bars at temperature 1 (genlab.tasks.compose for more control)."""
        from ..tasks.compose import sample_pieces

        check_sample_count(n)
        if condition is not None:
            raise GenlabError(f"a music {self.family} model samples unconditionally",
                              "continue a MIDI prompt with genlab.tasks.compose(model, prompt_midi=...)")
        return sample_pieces(self, n, bars=bars, generator=generator)

    @torch.no_grad()
    def preview(self, batch: dict, generator: torch.Generator) -> dict:
        return {}  # pieces are heard, not looked at: `genlab compose` writes MIDI, WAV and a piano roll


@register_family("gpt-music")
class MusicGPT(EventModel, GPT):
    config_class = MusicGPTConfig


@register_family("lstm-music")
class MusicLSTM(EventModel, LSTM):
    config_class = MusicLSTMConfig
