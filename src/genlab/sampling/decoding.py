"""Decoding: turning an autoregressive model's next-token logits into token sequences.

Works on token ids with any model that has forward(tokens, cache), new_cache(batch) and
context_window (see models/autoregressive.py); text lives in sampling/text.py.

Sampling. At each step the logits of the next token are processed in the order of
Hugging Face `generate`:

  1. repetition penalty (Keskar et al. 2019): the logit of every token already in the
     sequence, prompt included, is divided by the penalty where positive and multiplied by
     it where negative, so a penalty > 1 makes repeats less likely
  2. temperature T: logits / T. T = 0 means greedy decoding (the argmax), as in the OpenAI API
  3. top-k: only the k highest logits stay
  4. top-p, the nucleus (Holtzman et al. 2020): only the smallest set of most likely tokens
     whose probabilities add up to at least p stays

and the token is drawn from the softmax of what is left, with a seeded torch.Generator.

Beam search keeps the num_beams sequences with the highest total log-probability (after
the repetition penalty), expanding each by every token and keeping the best num_beams of
the results. The sequences have no end token, so all have the same length and need no
length normalisation. With one beam it is greedy decoding.

The context window. A GPT reads at most block_size tokens. While a sequence fits, each step
reads all of it. Once it would overflow, the context restarts from the sequence's last
3/4 window: the KV cache is refilled with those tokens in one pass and then grows again
for a quarter window of cheap steps. Without the cache (use_cache=False) each step re-reads
exactly the same context from scratch, so both paths give the same tokens and the cache is
a pure speed-up. (Re-reading the last full window every step, nanoGPT's way, would give a
little more context but make every step past the window as slow as no cache at all.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from ..tensors import eval_mode


@dataclass
class GenerationConfig:
    max_new_tokens: int = 200
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None  # keep the k most likely tokens; None = all
    top_p: float | None = None  # nucleus mass in (0, 1]; None = all
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the sequence; 1 = off
    num_return_sequences: int = 1
    num_beams: int = 1  # > 1: beam search (deterministic) instead of sampling
    stop: tuple[str, ...] = ()  # text stops before the first of these strings (not included)
    seed: int = 0
    use_cache: bool = True  # False re-reads the whole context every step (same tokens, slower)
    suppress_tokens: tuple[int, ...] = ()  # token ids never generated (e.g. a music model's START)

    def __post_init__(self):
        def check(ok: bool, message: str, hint: str | None = None):
            if not ok:
                raise GenlabError(message, hint)

        check(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        check(math.isfinite(self.temperature) and self.temperature >= 0,
              f"temperature must be >= 0, got {self.temperature}",
              "0 is greedy decoding; 0.7 to 1.0 are typical for sampling")
        check(self.top_k is None or self.top_k >= 1, f"top_k must be at least 1 (or unset), got {self.top_k}")
        check(self.top_p is None or (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0),
              f"top_p must be in (0, 1], got {self.top_p}", "e.g. 0.9 or 0.95; 1 keeps every token")
        check(math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
              f"repetition_penalty must be positive, got {self.repetition_penalty}",
              "1 is off; 1.1 to 1.3 discourage repeats")
        check(self.num_return_sequences >= 1, f"num_return_sequences must be at least 1, got {self.num_return_sequences}")
        check(self.num_beams >= 1, f"num_beams must be at least 1, got {self.num_beams}")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        # One string is one stop string; tuple("END") would be three one-letter ones.
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        check(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings")
        self.suppress_tokens = tuple(self.suppress_tokens)
        check(all(isinstance(t, int) and t >= 0 for t in self.suppress_tokens), "suppress_tokens must be token ids >= 0")
        if self.num_beams > 1:
            check(self.top_k is None and self.top_p is None and self.temperature in (0.0, 1.0),
                  "beam search is deterministic: temperature, top_k and top_p do not apply to it",
                  "drop them, or sample with num_beams=1")
            check(self.num_return_sequences <= self.num_beams,
                  f"beam search returns at most num_beams ({self.num_beams}) sequences, "
                  f"not {self.num_return_sequences}")
        elif self.temperature == 0:
            check(self.num_return_sequences == 1,
                  "greedy decoding (temperature 0) gives one sequence; more would be identical copies",
                  "sample with a temperature > 0, or use beam search (num_beams) for several deterministic ones")


# ----------------------------------------------------------------------------- logits processing


def apply_repetition_penalty(logits: torch.Tensor, sequences: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V], sequences [B, L] of the tokens so far."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, sequences)
    return logits.scatter(1, sequences, torch.where(seen > 0, seen / penalty, seen * penalty))


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits
    kth_best = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_best, -math.inf)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens with total probability >= p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token stays if the tokens ranked above it hold less than p. The top token always
    # stays (nothing above it), so the nucleus is never empty.
    mass_above = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_above >= p
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def suppress(logits: torch.Tensor, tokens: tuple[int, ...]) -> torch.Tensor:
    """Make the given tokens impossible (Hugging Face's suppress_tokens)."""
    if not tokens:
        return logits
    logits = logits.clone()
    logits[:, list(tokens)] = -math.inf
    return logits


def next_token_logits(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """The processed logits [B, V] that the next token is drawn from (steps 1-4 above; suppressed tokens first)."""
    logits = apply_repetition_penalty(suppress(logits.float(), config.suppress_tokens), sequences,
                                      config.repetition_penalty)
    if config.temperature == 0:
        return logits
    logits = logits / config.temperature
    if config.top_k is not None:
        logits = apply_top_k(logits, config.top_k)
    if config.top_p is not None:
        logits = apply_top_p(logits, config.top_p)
    return logits


def choose_next_tokens(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig,
                       generator: torch.Generator | None) -> torch.Tensor:
    """One next token per row, [B]: the argmax when greedy, else a draw from the processed distribution."""
    processed = next_token_logits(logits, sequences, config)
    if config.temperature == 0:
        return processed.argmax(dim=-1)
    return torch.multinomial(processed.softmax(dim=-1), 1, generator=generator).squeeze(1)


# ----------------------------------------------------------------------------- the context


def context_start(start: int, length: int, window: int | None) -> int:
    """Where the context of a `length`-token sequence begins, given it began at `start`."""
    if window is None or length - start <= window:
        return start
    return length - max(1, window - window // 4)


class NextTokenLogits:
    """The model's next-token logits for a growing batch of sequences, through the cache if enabled."""

    def __init__(self, model, use_cache: bool):
        self.model = model
        self.use_cache = use_cache
        self.window = model.context_window
        self.start = 0
        self.cache = None

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        start = context_start(self.start, sequences.shape[1], self.window)
        if not self.use_cache:
            logits = self.model(sequences[:, start:])
        elif self.cache is None or start != self.start:  # first step, or the context restarted
            self.cache = self.model.new_cache(sequences.shape[0])
            logits = self.model(sequences[:, start:], self.cache)
        else:  # the cache holds all but the newest token
            logits = self.model(sequences[:, -1:], self.cache)
        self.start = start
        return logits[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.select(rows)


def _as_batch(prompt: torch.Tensor, device: torch.device) -> torch.Tensor:
    prompt = torch.as_tensor(prompt, dtype=torch.long, device=device)
    prompt = prompt[None] if prompt.dim() == 1 else prompt
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise GenlabError("the prompt must hold at least one token", "give a non-empty prompt")
    return prompt


# ----------------------------------------------------------------------------- decoding


@torch.no_grad()
def generate_tokens(model, prompt: torch.Tensor, config: GenerationConfig | None = None,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, [B], for up to config.max_new_tokens steps.

    `prompt` is [T] or [B, T] token ids; stop consuming to stop early. The model runs in eval
    mode (no dropout) while the iterator is live. `generator` defaults to one seeded with
    config.seed on the model's device.
    """
    config = config or GenerationConfig()
    if config.num_beams > 1:
        raise GenlabError("generate_tokens samples or decodes greedily; for num_beams > 1 use beam_search")
    sequences = _as_batch(prompt, model.device)
    if generator is None:
        generator = torch.Generator(model.device).manual_seed(config.seed)
    next_logits = NextTokenLogits(model, config.use_cache)
    with eval_mode(model):
        for _ in range(config.max_new_tokens):
            tokens = choose_next_tokens(next_logits(sequences), sequences, config, generator)
            sequences = torch.cat([sequences, tokens[:, None]], dim=1)
            yield tokens


@torch.no_grad()
def beam_search(model, prompt: torch.Tensor, config: GenerationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The config.num_return_sequences best of config.num_beams beams for one prompt [T]:
    (sequences [n, T + max_new_tokens] including the prompt, total log-probabilities [n]), best first."""
    prompt = _as_batch(prompt, model.device)
    if prompt.shape[0] != 1:
        raise GenlabError("beam search continues one prompt at a time")
    beams = config.num_beams
    sequences = prompt.repeat(beams, 1)
    # The beams start as copies of the prompt: only one may be live, or the beam would fill
    # up with the same continuation several times.
    scores = torch.full((beams,), -math.inf, device=model.device)
    scores[0] = 0.0
    next_logits = NextTokenLogits(model, config.use_cache)
    with eval_mode(model):
        for _ in range(config.max_new_tokens):
            logits = apply_repetition_penalty(suppress(next_logits(sequences).float(), config.suppress_tokens), sequences,
                                              config.repetition_penalty)
            candidates = (scores[:, None] + F.log_softmax(logits, dim=-1)).flatten()
            scores, flat = candidates.topk(beams)
            parents, tokens = flat // logits.shape[1], flat % logits.shape[1]
            sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
            next_logits.select(parents)
    n = config.num_return_sequences
    return sequences[:n], scores[:n]
