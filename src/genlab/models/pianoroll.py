"""Piano-roll frame model: an RNN over frames with an independent or a NADE output.

Data. A piece is a sequence of frames v_1 .. v_T, each a binary vector over the n_keys piano
keys (88: MIDI 21..108); key k of a frame is 1 when MIDI pitch lowest_pitch + k sounds.

Method. The piece is modelled one frame at a time,

    log p(v_1 .. v_T) = sum_t log p(v_t | v_<t),

by a recurrent network (LSTM or GRU, n_layer layers) that reads the previous frame (and, at
t = 1, a start flag in place of a frame) and summarises the past in its hidden state h_t.
From h_t, one of two output distributions over the frame (`model.output`):

    independent   88 sigmoids: p(v_t | h_t) = prod_k Bernoulli(v_tk; s(w_k . h_t + b_k)),
                  the read-out of Bai et al. 2018 (LSTM/GRU/TCN on JSB). Cheap, but the keys
                  of one chord cannot inform each other: given h_t, C, E and G are drawn
                  independently, so the model cannot put its mass on "a C-major triad".

    nade          RNN-NADE (Boulanger-Lewandowski et al. 2012): the frame's keys are drawn
                  low to high, each given the keys below it, by a NADE (Larochelle & Murray
                  2011) whose biases come from the RNN state:
                      a_k = c(h_t) + W[:, <k] v_t,<k         (NADE hidden pre-activation)
                      p(v_tk = 1 | v_t,<k, h_t) = s(b_k(h_t) + V_k . s(a_k))
                  The product over k is an exact, normalised distribution over all 2^88
                  frames, so log p(v_t | h_t) is exact, not a bound. All 88 conditionals of a
                  known frame come from one cumulative sum (training and scoring are
                  parallel); drawing a frame takes 88 sequential steps.

Training minimises the mean NLL per real frame of the batch (pieces are padded to the
longest, with a mask). Validation reports the benchmark's frame-level NLL: nats per frame,
averaged over all frames of the split (`nll_per_frame`), and the same without each piece's
first frame (`nll_per_frame_after_first`), which is what locuslab/TCN's poly_music scores
(it predicts frames 2..T from the frames before them).

Sampling carries the RNN state forward, one frame per step; temperature divides every
key's logit (0 = the most likely value of each key in turn). `sample_piano_roll` returns
frames indexed by MIDI pitch (128 columns), ready for genlab.tasks.compose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..metrics.pianoroll import independent_frame_log_prob
from ..registry import register_family
from .base import GenerativeModel, check_sample_count, eval_mode, rand

CELLS = ("lstm", "gru")
OUTPUTS = ("independent", "nade")
MIDI_PITCHES = 128
SAMPLE_BARS = 16  # length of each piece drawn by `sample` (genlab.sample)
PREVIEW_SAMPLES, PREVIEW_FRAMES = 8, 64
MAX_FRAMES = 100_000  # a sanity cap on one draw (at quarter notes, ~14 hours of music)


@dataclass
class PianoRollConfig:
    n_keys: int = 88  # filled in from the data: keys of the piano roll
    lowest_pitch: int = 21  # filled in from the data: MIDI pitch of key 0
    frame_seconds: float = 0.5  # filled in from the data: seconds per frame at 120 bpm
    frames_per_bar: int = 4  # filled in from the data: frames per 4/4 bar
    cell: str = "lstm"  # lstm | gru
    hidden_size: int = 256
    n_layer: int = 1
    dropout: float = 0.3  # between RNN layers and on the state before the output
    input_dropout: float = 0.0  # drops keys of the input frames (training only): a regulariser
    output: str = "independent"  # independent (88 sigmoids) | nade (exact within-frame autoregressive)
    nade_hidden: int = 128  # hidden units of the NADE output

    def __post_init__(self):
        for name in ("n_keys", "hidden_size", "n_layer", "nade_hidden", "frames_per_bar"):
            if getattr(self, name) < 1:
                raise GenlabError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.lowest_pitch or self.lowest_pitch + self.n_keys > MIDI_PITCHES:
            raise GenlabError(f"the keys {self.lowest_pitch}..{self.lowest_pitch + self.n_keys - 1} are not all MIDI pitches (0..127)")
        if not self.frame_seconds > 0:
            raise GenlabError(f"model.frame_seconds must be positive, got {self.frame_seconds}")
        if self.cell not in CELLS:
            raise GenlabError(f"unknown model.cell {self.cell!r}", f"use one of {', '.join(CELLS)}")
        if self.output not in OUTPUTS:
            raise GenlabError(f"unknown model.output {self.output!r}", f"use one of {', '.join(OUTPUTS)}")
        for name in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise GenlabError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


@register_family("pianoroll")
class PianoRollRNN(GenerativeModel):
    config_class = PianoRollConfig
    data_kind: ClassVar[str] = "pianoroll"
    capabilities = frozenset({"sample", "log_likelihood", "compose"})

    def __init__(self, config: PianoRollConfig):
        super().__init__(config)
        k, h = config.n_keys, config.hidden_size
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        # Input: the previous frame plus a start flag (1 only at t = 1, where there is no
        # previous frame; a silent frame of zeros is a real frame, a rest).
        self.rnn = rnn(k + 1, h, num_layers=config.n_layer, batch_first=True,
                       dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        if config.output == "independent":
            self.key_logits = nn.Linear(h, k)
        else:
            n = config.nade_hidden
            self.nade_visible_bias = nn.Linear(h, k)  # b(h_t)
            self.nade_hidden_bias = nn.Linear(h, n)  # c(h_t)
            self.nade_w = nn.Parameter(torch.randn(n, k) * 0.01)  # key k -> hidden (read by keys above k)
            self.nade_v = nn.Parameter(torch.randn(k, n) * 0.01)  # hidden -> key k's logit

    # -- the properties compose needs ---------------------------------------------------
    @property
    def frame_seconds(self) -> float:
        return float(self.config.frame_seconds)

    @property
    def frames_per_bar(self) -> int:
        return int(self.config.frames_per_bar)

    # -- the network ------------------------------------------------------------------------
    def _inputs(self, frames: torch.Tensor) -> torch.Tensor:
        """RNN inputs for frames [B, T, K]: [start flag, 0...] then frames 1..T-1: [B, T, K + 1]."""
        b, t, k = frames.shape
        start = torch.zeros(b, 1, k + 1, device=frames.device)
        start[:, 0, k] = 1.0
        previous = F.pad(frames[:, :-1], (0, 1))
        if self.training and self.config.input_dropout:
            previous = F.dropout(previous, self.config.input_dropout)
        return torch.cat([start, previous], 1)

    def _nade_log_prob(self, state: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Exact log p(v | h) of frames [N, K] given RNN outputs [N, H], under the NADE: [N]."""
        return independent_frame_log_prob(self._nade_logits(state, frames), frames)

    def _nade_logits(self, state: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The logit of p(v_k = 1 | v_<k, h) for every key k of frames [N, K]: [N, K]."""
        visible_bias = self.nade_visible_bias(state)  # [N, K]
        hidden_bias = self.nade_hidden_bias(state)  # [N, Hn]
        # a_k = c + sum_{j<k} W[:, j] v_j for every k at once: an exclusive cumulative sum over keys.
        contributions = frames[:, :, None] * self.nade_w.t()[None]  # [N, K, Hn]
        pre_activation = hidden_bias[:, None, :] + contributions.cumsum(1) - contributions
        return visible_bias + (torch.sigmoid(pre_activation) * self.nade_v[None]).sum(-1)

    def frame_log_probs(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(v_t | v_<t) in nats for frames x [B, T, K] (0 where mask is False): [B, T]."""
        x = x.float()
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        out, _ = self.rnn(self._inputs(x))
        out = self.dropout(out)
        log_p = torch.zeros(x.shape[:2], device=x.device)
        if self.config.output == "independent":
            log_p[mask] = independent_frame_log_prob(self.key_logits(out[mask]), x[mask])
        else:  # only the real frames go through the (K x Hn per frame) NADE
            log_p[mask] = self._nade_log_prob(out[mask], x[mask])
        return log_p

    def log_likelihood(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The "log_likelihood" capability: exact log p(piece) in nats for each piece, [B]."""
        return self.frame_log_probs(x, mask).sum(1)

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        # AdamW: decoupled weight decay, a regulariser that does not fight Adam's scaling.
        return {"main": torch.optim.AdamW(self.parameters(), lr=train.lr, weight_decay=train.weight_decay)}

    def training_step(self, batch: dict, step: int, optimizers: dict) -> dict[str, float]:
        log_p = self.frame_log_probs(batch["x"], batch["mask"])
        loss = -log_p.sum() / batch["mask"].sum()  # mean NLL per real frame
        optimizers["main"].step(loss)
        return {"nll_per_frame": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict[str, float]:
        # Sums divided by the number of pieces: the Trainer weights these means by pieces, so
        # summarize_validation's ratios are totals over the split, i.e. exact per-frame means.
        log_p = self.frame_log_probs(batch["x"], batch["mask"]).double()
        pieces = len(log_p)
        return {"nll_sum": -log_p.sum().item() / pieces, "frames": batch["mask"].sum().item() / pieces,
                "first_frame_nll": -log_p[:, 0].sum().item() / pieces}

    def summarize_validation(self, means: dict[str, float]) -> dict[str, float]:
        if not means:
            return means
        # Every piece has exactly one first frame, so "frames - 1" counts the frames after it.
        return {"nll_per_frame": means["nll_sum"] / means["frames"],
                "nll_per_frame_after_first": (means["nll_sum"] - means["first_frame_nll"]) / (means["frames"] - 1)}

    # -- sampling ---------------------------------------------------------------------------
    def _draw(self, logits: torch.Tensor, generator: torch.Generator | None, temperature: float) -> torch.Tensor:
        if temperature == 0:
            return (logits > 0).float()
        return (rand(logits.shape, generator, logits.device) < torch.sigmoid(logits / temperature)).float()

    def _draw_frame(self, state: torch.Tensor, generator, temperature: float) -> torch.Tensor:
        """One frame [B, K] from RNN outputs [B, H]."""
        if self.config.output == "independent":
            return self._draw(self.key_logits(state), generator, temperature)
        visible_bias = self.nade_visible_bias(state)
        pre_activation = self.nade_hidden_bias(state)  # grows by W[:, k] v_k as keys are drawn
        frame = torch.zeros_like(visible_bias)
        for k in range(self.config.n_keys):
            logit = visible_bias[:, k] + torch.sigmoid(pre_activation) @ self.nade_v[k]
            frame[:, k] = self._draw(logit, generator, temperature)
            pre_activation = pre_activation + frame[:, k : k + 1] * self.nade_w[:, k]
        return frame

    @torch.no_grad()
    def sample_frames(self, n: int, n_frames: int, *, generator: torch.Generator | None = None,
                      temperature: float = 1.0, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """n pieces of n_frames frames over the model's keys, continuing `prompt` (frames [P, K]
        given to every piece) when given: float 0/1 [n, n_frames, K] (the prompt not included)."""
        k = self.config.n_keys
        start = torch.zeros(n, 1, k + 1, device=self.device)
        start[:, 0, k] = 1.0
        state = None
        rnn_input = start
        if prompt is not None and len(prompt):
            # The prompt's frames are read as if the model had drawn them; its last frame's
            # output state predicts the first new frame.
            frames = prompt.to(self.device).float()[None].expand(n, -1, -1)
            rnn_input = torch.cat([start, F.pad(frames, (0, 1))], 1)
            out, state = self.rnn(rnn_input[:, :-1])
            rnn_input = rnn_input[:, -1:]
        drawn = torch.zeros(n, n_frames, k, device=self.device)
        for t in range(n_frames):
            out, state = self.rnn(rnn_input, state)
            frame = self._draw_frame(out[:, -1], generator, temperature)
            drawn[:, t] = frame
            rnn_input = F.pad(frame, (0, 1))[:, None]
        return drawn

    def _to_midi_columns(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames over the model's keys [..., K] -> bool [..., 128] indexed by MIDI pitch."""
        low = self.config.lowest_pitch
        midi = torch.zeros(*frames.shape[:-1], MIDI_PITCHES, dtype=torch.bool, device=frames.device)
        midi[..., low : low + self.config.n_keys] = frames > 0.5
        return midi

    def _prompt_keys(self, prompt) -> torch.Tensor:
        """A prompt piano roll [P, 128] (bool or 0/1, indexed by MIDI pitch) -> frames [P, K]."""
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] != MIDI_PITCHES:
            shape = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            raise GenlabError(f"a piano-roll prompt must be a tensor [frames, 128] indexed by MIDI pitch, got {shape}",
                              "e.g. a bool tensor with prompt[t, 60] = True where middle C sounds in frame t")
        if prompt.is_floating_point() and not torch.isfinite(prompt).all():
            raise GenlabError("the piano-roll prompt holds NaN or infinite values", "use 0/1 or bool entries")
        sounding = prompt.detach().cpu() != 0
        low, high = self.config.lowest_pitch, self.config.lowest_pitch + self.config.n_keys
        outside = sounding.any(0).nonzero().flatten()
        outside = outside[(outside < low) | (outside >= high)]
        if len(outside):
            raise GenlabError(f"the prompt plays MIDI pitch {int(outside[0])}, outside this model's keys {low}..{high - 1}",
                              "transpose the prompt or drop those notes")
        return sounding[:, low:high].float()

    @torch.no_grad()
    def sample_piano_roll(self, n_frames: int, *, generator: torch.Generator | None = None, temperature: float = 1.0,
                          prompt: torch.Tensor | None = None) -> torch.Tensor:
        """One piece of n_frames new frames, continuing `prompt` if given: bool [n_frames, 128]
        indexed by MIDI pitch (the prompt's frames are not repeated in it)."""
        if not isinstance(n_frames, int) or isinstance(n_frames, bool) or not 1 <= n_frames <= MAX_FRAMES:
            raise GenlabError(f"n_frames must be an integer in 1..{MAX_FRAMES}, got {n_frames!r}",
                              f"e.g. {SAMPLE_BARS * self.frames_per_bar} frames for {SAMPLE_BARS} bars")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < float("inf"):
            raise GenlabError(f"temperature must be a finite number >= 0, got {temperature!r}",
                              "1.0 samples the model's own distribution; lower is more conservative; 0 is greedy")
        keys = self._prompt_keys(prompt) if prompt is not None else None
        with eval_mode(self):
            frames = self.sample_frames(1, n_frames, generator=generator, temperature=float(temperature), prompt=keys)
        return self._to_midi_columns(frames[0]).cpu()

    @staticmethod
    def as_images(frames: torch.Tensor) -> torch.Tensor:
        """Frames [n, T, K] -> piano-roll pictures [n, 1, K, T] in [0, 1]: time left to right,
        high keys on top."""
        return frames.transpose(1, 2).flip(1)[:, None].float()

    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n pieces of SAMPLE_BARS bars at temperature 1, as piano-roll pictures [n, 1, K, frames]
        (so `genlab sample` writes a grid of them); for MIDI-indexed frames use sample_piano_roll,
        for a MIDI file genlab compose."""
        check_sample_count(n)
        if condition is not None:
            raise GenlabError("a piano-roll model samples unconditionally; for a prompt use sample_piano_roll(prompt=...)",
                              "or genlab compose MODEL --prompt piece.mid")
        return self.as_images(self.sample_frames(n, SAMPLE_BARS * self.frames_per_bar, generator=generator)).cpu()

    @torch.no_grad()
    def preview(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Sampled piano rolls as pictures for samples.png."""
        return {"samples": self.as_images(self.sample_frames(PREVIEW_SAMPLES, PREVIEW_FRAMES, generator=generator))}
