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

`sample_pieces` is the one loop that turns event draws into pieces of whole bars; `sample`,
genlab.tasks.compose and the music evaluation all draw through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.music import EventVocabulary, Piece
from ..errors import GenlabError, warn
from ..limits import MAX_CLI_NEW_TOKENS
from ..registry import register_family
from .base import check_sample_count
from .rnn import LSTM, LSTMConfig
from .transformer import GPT, GPTConfig

SAMPLE_BARS = 8  # length of each piece drawn by `sample` (genlab.sample)
BEATS_PER_BAR = 4  # pieces are in 4/4
EVENTS_PER_STEP_CAP = 12  # an event model that never moves the time on is stopped after this many per step
# A new note still sounding a whole note after it began ends there. An event model forgets a
# note-off easily once the note-on has slid out of its context window, and the note would
# otherwise hang on to the end of the piece (Magenta's performance models cap notes the same way).
MAX_NOTE_QUARTERS = 4


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


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_pieces(model, n: int, *, bars: int, generator: torch.Generator | None = None, temperature: float = 1.0,
                  top_p: float | None = None, seed: int = 0, prompt: Piece | None = None) -> list[Piece]:
    """n pieces from an event model: the prompt (if any) then `bars` new 4/4 bars each."""
    from ..sampling import GenerationConfig, generate_tokens

    vocabulary: EventVocabulary = model.vocabulary
    steps_per_bar = BEATS_PER_BAR * model.steps_per_quarter
    if prompt is not None:
        prompt_tokens = torch.from_numpy(vocabulary.encode(prompt)).long()
        prompt_steps = prompt.length
    else:
        prompt_tokens, prompt_steps = torch.tensor([vocabulary.START]), 0
    window = model.context_window
    if window is not None and len(prompt_tokens) > window:
        bars_in_window = window / max(1.0, len(prompt_tokens) / max(prompt_steps / steps_per_bar, 1e-9))
        raise GenlabError(
            f"the prompt is {len(prompt_tokens)} events long ({prompt_steps / steps_per_bar:.1f} bars), longer than the "
            f"model's context window of {window} events",
            f"use a shorter prompt (about {max(1, int(bars_in_window))} bars of it fit), or a model with a longer "
            "context (data.block_size)",
        )
    target = prompt_steps + bars * steps_per_bar
    shift_steps = vocabulary.shift_steps().to(model.device)
    max_new = min((target - prompt_steps) * EVENTS_PER_STEP_CAP + 64, MAX_CLI_NEW_TOKENS)  # the warning below covers running out
    # The n rows come from the batch below (generate_tokens draws one token per row), not num_return_sequences.
    config = GenerationConfig(max_new_tokens=max_new, temperature=float(temperature), top_p=top_p, seed=seed,
                              suppress_tokens=(vocabulary.START,))
    batch = prompt_tokens.to(model.device).repeat(n, 1)
    time = torch.full((n,), prompt_steps, dtype=torch.long, device=model.device)
    drawn = []
    steps = generate_tokens(model, batch, config, generator)
    try:
        for tokens in steps:
            drawn.append(tokens)
            time += shift_steps[tokens]
            if bool((time >= target).all()):
                break
        else:
            warn(f"the model drew {max_new} events without reaching bar {bars}; the rest of the piece is silent")
    finally:
        steps.close()
    sequences = torch.cat([batch, torch.stack(drawn, 1)], 1).cpu() if drawn else batch.cpu()
    return [vocabulary.decode(row, model.steps_per_quarter, length=target, quarters_per_bar=BEATS_PER_BAR,
                              max_note_steps=MAX_NOTE_QUARTERS * model.steps_per_quarter, max_note_from=prompt_steps)
            for row in sequences]


# ----------------------------------------------------------------------------- the families


class EventModel:
    """What the GPT and LSTM music families share (a mixin in front of the text family)."""

    data_kind = "music"
    needs_tokenizer = False  # token ids are events: the vocabulary comes from the config
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
