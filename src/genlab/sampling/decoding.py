"""Decoding: turning an autoregressive model's next-token logits into token sequences.

Works on token ids with any model that has forward(tokens, cache), new_cache(batch) and
context_window (see models/autoregressive.py); text lives in sampling/text.py.

Sampling. At each step the logits of the next token are processed in the order of
Hugging Face `generate`:

  0. no repeated n-grams (no_repeat_ngram_size = n > 0): a token that would complete an
     n-gram already in the sequence, prompt included, is made impossible
  1. repetition penalty (Keskar et al. 2019): the logit of every token already in the
     sequence, prompt included, is divided by the penalty where positive and multiplied by
     it where negative, so a penalty > 1 makes repeats less likely
  2. temperature T: logits / T. T = 0 means greedy decoding (the argmax), as in the OpenAI API
  3. top-k: only the k highest logits stay
  4. top-p, the nucleus (Holtzman et al. 2020): only the smallest set of most likely tokens
     whose probabilities add up to at least p stays

and the token is drawn from the softmax of what is left, with a seeded torch.Generator.

Numerical safety. Any setting GenerationConfig accepts gives a valid distribution:

  - a temperature below MIN_TEMPERATURE (1e-4) decodes greedily, exactly like temperature 0:
    at such temperatures sampling is the argmax anyway unless two logits lie within ~1e-3,
    and dividing by a smaller number would overflow float32 (1e-300 is 0 in float32)
  - temperature is applied as (logits - max) / T, the same softmax as logits / T, whose
    values are <= 0, so it cannot overflow to +inf (very negative ones become -inf: probability 0)
  - the repetition penalty is computed in float64 and the penalised logits clamped to
    +-LOGIT_BOUND (1e30), so neither 1e-300 nor 1e300 gives inf or 0 * inf = nan
  - top-p always keeps the most likely token, whatever p (1e-300 is 0 in float32)
  - if a row still has no valid distribution after all that (a model that returns nan or
    +inf logits, every token suppressed) that row falls back to the argmax of the raw logits

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
little more context but make every step past the window as slow as no cache at all.) A
sequence may pin its first `keep` tokens (a style model's control token): they stay at the
front of every context, and the window that slides is the rest, of block_size - keep tokens.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from ..limits import MAX_BEAMS, MAX_CLI_NEW_TOKENS, MAX_NO_REPEAT_NGRAM, MAX_SEED, MAX_TEXT_SAMPLES, check_range
from ..tensors import eval_mode

MIN_TEMPERATURE = 1e-4  # a temperature below this (0 included) decodes greedily: the argmax
MAX_TOP_K = 1_000_000  # more than any vocabulary; a top_k of at least the vocabulary keeps every token
LOGIT_BOUND = 1e30  # penalised logits are clamped to +-this; / MIN_TEMPERATURE it is still finite in float32


def _integer(name: str, value, low: int, high: int, hint: str | None = None) -> int:
    """value as an int in low..high, or a GenlabError naming the option and its bounds."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise GenlabError(f"{name} must be an integer in {low:,}..{high:,}, got {value!r}", hint, param=name)
    value = operator.index(value)
    check_range(name, value, low, high, hint)
    return value


def _number(name: str, value, hint: str | None = None) -> float:
    """value as a finite float, or a GenlabError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise GenlabError(f"{name} must be a number, got {value!r}", hint, param=name)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise GenlabError(f"{name} must be a finite number, got {value!r}", hint, param=name) from None
    if not math.isfinite(number):
        raise GenlabError(f"{name} must be a finite number, got {value!r}", hint, param=name)
    return number


@dataclass
class GenerationConfig:
    """What to generate and how. Every field is checked on construction, before any model is
    loaded or memory allocated: numbers against the bounds in genlab.limits (a GenlabError
    names the field and its bounds)."""

    max_new_tokens: int = 200  # 1..MAX_CLI_NEW_TOKENS
    temperature: float = 1.0  # >= 0; 0 (or anything below MIN_TEMPERATURE) = greedy
    top_k: int | None = None  # keep the k most likely tokens, 1..MAX_TOP_K; None = all
    top_p: float | None = None  # nucleus mass in (0, 1]; None = all
    repetition_penalty: float = 1.0  # > 0; > 1 discourages tokens already in the sequence; 1 = off
    no_repeat_ngram_size: int = 0  # 0..MAX_NO_REPEAT_NGRAM; n > 0: no n-gram of tokens twice in a sequence; 0 = off
    num_return_sequences: int = 1  # 1..MAX_TEXT_SAMPLES
    num_beams: int = 1  # 1..MAX_BEAMS; > 1: beam search (deterministic) instead of sampling
    stop: tuple[str, ...] = ()  # text stops before the first of these strings (not included)
    seed: int = 0  # 0..MAX_SEED (2^63 - 1)
    use_cache: bool = True  # False re-reads the whole context every step (same tokens, slower)
    suppress_tokens: tuple[int, ...] = ()  # token ids never generated (e.g. a music model's START)
    style: str | None = None  # text models trained with styles: write in this one (None: any)

    def __post_init__(self):
        def check(ok: bool, message: str, hint: str | None = None, param: str | None = None):
            if not ok:
                raise GenlabError(message, hint, param=param)

        self.max_new_tokens = _integer("max_new_tokens", self.max_new_tokens, 1, MAX_CLI_NEW_TOKENS,
                                       "the number of tokens to generate, e.g. 200")
        self.temperature = _number("temperature", self.temperature,
                                   "0 is greedy decoding; 0.7 to 1.0 are typical for sampling")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}",
              "0 is greedy decoding; 0.7 to 1.0 are typical for sampling", "temperature")
        if self.top_k is not None:
            self.top_k = _integer("top_k", self.top_k, 1, MAX_TOP_K, "e.g. 40; leave it unset to keep every token")
        if self.top_p is not None:
            self.top_p = _number("top_p", self.top_p, "e.g. 0.9 or 0.95; 1 keeps every token")
            check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}",
                  "e.g. 0.9 or 0.95; 1 keeps every token", "top_p")
        self.repetition_penalty = _number("repetition_penalty", self.repetition_penalty,
                                          "1 is off; 1.1 to 1.3 discourage repeats")
        check(self.repetition_penalty > 0, f"repetition_penalty must be positive, got {self.repetition_penalty}",
              "1 is off; 1.1 to 1.3 discourage repeats", "repetition_penalty")
        self.no_repeat_ngram_size = _integer("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, MAX_NO_REPEAT_NGRAM,
                                             "0 is off; 3 or 4 stop a looping output")
        self.num_return_sequences = _integer("num_return_sequences", self.num_return_sequences, 1, MAX_TEXT_SAMPLES)
        self.num_beams = _integer("num_beams", self.num_beams, 1, MAX_BEAMS, "1 samples; 2 to 8 beams are typical")
        self.seed = _integer("seed", self.seed, 0, MAX_SEED)
        # One string is one stop string; tuple("END") would be three one-letter ones.
        self.stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        check(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings", param="stop")
        self.suppress_tokens = tuple(self.suppress_tokens)
        check(self.style is None or isinstance(self.style, str) and self.style != "",
              f"style must be a style's name, got {self.style!r}", param="style")
        check(all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.suppress_tokens),
              "suppress_tokens must be token ids >= 0", param="suppress_tokens")
        if self.num_beams > 1:
            check(self.top_k is None and self.top_p is None and self.temperature in (0.0, 1.0),
                  "beam search is deterministic: temperature, top_k and top_p do not apply to it",
                  "drop them, or sample with num_beams=1")
            check(self.num_return_sequences <= self.num_beams,
                  f"beam search returns at most num_beams ({self.num_beams}) sequences, "
                  f"not {self.num_return_sequences}", param="num_return_sequences")
        elif self.temperature == 0:
            check(self.num_return_sequences == 1,
                  "greedy decoding (temperature 0) gives one sequence; more would be identical copies",
                  "sample with a temperature > 0, or use beam search (num_beams) for several deterministic ones",
                  "num_return_sequences")

    @property
    def greedy(self) -> bool:
        """Whether tokens are the argmax (temperature 0, or below MIN_TEMPERATURE) rather than drawn."""
        return self.temperature < MIN_TEMPERATURE


# ----------------------------------------------------------------------------- logits processing


def apply_repetition_penalty(logits: torch.Tensor, sequences: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [B, V], sequences [B, L] of the tokens so far. Computed in float64 and clamped to
    +-LOGIT_BOUND, so any penalty > 0 gives finite logits (-inf ones, suppressed tokens, stay -inf)."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, sequences)
    wide = seen.double()
    penalised = torch.where(wide > 0, wide / penalty, wide * penalty).clamp(-LOGIT_BOUND, LOGIT_BOUND)
    penalised = torch.where(torch.isfinite(seen), penalised.to(seen.dtype), seen)
    return logits.scatter(1, sequences, penalised)


def ban_repeated_ngrams(logits: torch.Tensor, sequences: torch.Tensor, n: int) -> torch.Tensor:
    """Hugging Face's no_repeat_ngram_size: logits [B, V] with -inf for every token that would
    complete an n-gram already in its row of sequences [B, L] (n = 1: every token already there)."""
    if n <= 0 or sequences.shape[1] < n:
        return logits
    grams = sequences.unfold(1, n, 1)  # [B, L - n + 1, n], every n-gram so far
    suffix = sequences[:, sequences.shape[1] - n + 1 :]  # the n - 1 tokens a new n-gram would start with
    repeats = (grams[:, :, :-1] == suffix[:, None, :]).all(dim=2)  # [B, L - n + 1]
    banned = torch.zeros(logits.shape, device=logits.device).scatter_add_(1, grams[:, :, -1], repeats.float()) > 0
    return logits.masked_fill(banned, -math.inf)


def apply_sequence_rules(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Steps 0 and 1 above, the rules that read the sequence so far: no repeated n-grams, then
    the repetition penalty. Every decoder (sampling, beam search, encoder-decoder) applies them here."""
    logits = ban_repeated_ngrams(logits, sequences, config.no_repeat_ngram_size)
    return apply_repetition_penalty(logits, sequences, config.repetition_penalty)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits whose softmax is softmax(logits / T), computed as (logits - max) / T: values <= 0,
    so no overflow to +inf however small T is (callers decode greedily below MIN_TEMPERATURE)."""
    if temperature == 1.0:
        return logits
    top = logits.amax(dim=-1, keepdim=True)
    shifted = logits - torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all -inf rows stay -inf
    return shifted / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits
    kth_best = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_best, -math.inf)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens with total probability >= p (never empty)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token stays if the tokens ranked above it hold less than p. The top token always
    # stays: nothing is above it, and it is kept explicitly since a tiny p (1e-300) is 0 in float32.
    mass_above = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_above >= p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def suppress(logits: torch.Tensor, tokens: tuple[int, ...]) -> torch.Tensor:
    """Make the given tokens impossible (Hugging Face's suppress_tokens)."""
    if not tokens:
        return logits
    if max(tokens) >= logits.shape[-1]:
        raise GenlabError(f"suppress_tokens holds token id {max(tokens)}, but the vocabulary has "
                          f"{logits.shape[-1]} tokens (ids 0..{logits.shape[-1] - 1})", param="suppress_tokens")
    logits = logits.clone()
    logits[:, list(tokens)] = -math.inf
    return logits


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """The argmax of each row with nan counting as -inf (torch's argmax would pick a nan)."""
    return torch.nan_to_num(logits, nan=-math.inf).argmax(dim=-1)


def next_token_logits(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """The processed logits [B, V] that the next token is drawn from (steps 0-4 above; suppressed tokens
    first). When greedy they are the penalised logits, not divided by the temperature. Temperature is
    applied as (logits - max) / T: the same softmax as logits / T, a different offset."""
    logits = apply_sequence_rules(suppress(logits.float(), config.suppress_tokens), sequences, config)
    if config.greedy:
        return logits
    logits = apply_temperature(logits, config.temperature)
    if config.top_k is not None:
        logits = apply_top_k(logits, config.top_k)
    if config.top_p is not None:
        logits = apply_top_p(logits, config.top_p)
    return logits


def _distribution(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig):
    """(probabilities [B, V] to draw from, or None when greedy; the greedy tokens [B] for the rows
    that need them). A row without a valid distribution falls back to the argmax of its raw logits."""
    if config.greedy:
        return None, _argmax(next_token_logits(logits, sequences, config))
    probs = next_token_logits(logits, sequences, config).softmax(dim=-1)
    invalid = ~torch.isfinite(probs).all(dim=-1) | ~(probs.sum(dim=-1) > 0)
    if bool(invalid.any()):
        fallback = _argmax(suppress(logits.float(), config.suppress_tokens))
        probs = torch.where(invalid[:, None], F.one_hot(fallback, probs.shape[-1]).to(probs.dtype), probs)
    return probs, None


def next_token_probabilities(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """The distribution [B, V] the next token is drawn from (one-hot on the argmax when greedy):
    softmax(processed logits), always finite and summing to 1."""
    probs, greedy = _distribution(logits, sequences, config)
    if probs is None:
        probs = F.one_hot(greedy, logits.shape[-1]).float()
    return probs


def choose_next_tokens(logits: torch.Tensor, sequences: torch.Tensor, config: GenerationConfig,
                       generator: torch.Generator | None) -> torch.Tensor:
    """One next token per row, [B]: the argmax when greedy, else a draw from the processed distribution."""
    probs, greedy = _distribution(logits, sequences, config)
    if probs is None:
        return greedy
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ----------------------------------------------------------------------------- the context


def context_start(start: int, length: int, window: int | None) -> int:
    """Where the context of a `length`-token sequence begins, given it began at `start`."""
    if window is None or length - start <= window:
        return start
    return length - max(1, window - window // 4)


class NextTokenLogits:
    """The model's next-token logits for a growing batch of sequences, through the cache if enabled."""

    def __init__(self, model, use_cache: bool, keep: int = 0):
        self.model = model
        self.use_cache = use_cache
        self.window = model.context_window
        # The first `keep` tokens of every sequence stay in the context; the rest slides.
        self.keep = keep if self.window is None or keep < self.window else 0
        self.start = self.keep
        self.cache = None

    def __call__(self, sequences: torch.Tensor) -> torch.Tensor:
        keep = self.keep
        start = keep + context_start(self.start - keep, sequences.shape[1] - keep,
                                     None if self.window is None else self.window - keep)
        if not self.use_cache or self.cache is None or start != self.start:
            context = sequences[:, start:] if not keep else torch.cat([sequences[:, :keep], sequences[:, start:]], dim=1)
        if not self.use_cache:
            logits = self.model(context)
        elif self.cache is None or start != self.start:  # first step, or the context restarted
            self.cache = self.model.new_cache(sequences.shape[0])
            logits = self.model(context, self.cache)
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
                    generator: torch.Generator | None = None, keep: int = 0) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, [B], for up to config.max_new_tokens steps.

    `prompt` is [T] or [B, T] token ids; stop consuming to stop early. The model runs in eval
    mode (no dropout) while the iterator is live. `generator` defaults to one seeded with
    config.seed on the model's device. The prompt's first `keep` tokens stay in the context
    however long the sequence grows (see "the context window").
    """
    config = config or GenerationConfig()
    if config.num_beams > 1:
        raise GenlabError("generate_tokens samples or decodes greedily; for num_beams > 1 use beam_search")
    sequences = _as_batch(prompt, model.device)
    if generator is None:
        generator = torch.Generator(model.device).manual_seed(config.seed)
    next_logits = NextTokenLogits(model, config.use_cache, keep)
    with eval_mode(model):
        for _ in range(config.max_new_tokens):
            tokens = choose_next_tokens(next_logits(sequences), sequences, config, generator)
            sequences = torch.cat([sequences, tokens[:, None]], dim=1)
            yield tokens


@torch.no_grad()
def beam_search(model, prompt: torch.Tensor, config: GenerationConfig, keep: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The config.num_return_sequences best of config.num_beams beams for one prompt [T]:
    (sequences [n, T + max_new_tokens] including the prompt, total log-probabilities [n]), best first.
    The prompt's first `keep` tokens stay in the context (see generate_tokens)."""
    prompt = _as_batch(prompt, model.device)
    if prompt.shape[0] != 1:
        raise GenlabError("beam search continues one prompt at a time")
    beams = config.num_beams
    sequences = prompt.repeat(beams, 1)
    # The beams start as copies of the prompt: only one may be live, or the beam would fill
    # up with the same continuation several times.
    scores = torch.full((beams,), -math.inf, device=model.device)
    scores[0] = 0.0
    next_logits = NextTokenLogits(model, config.use_cache, keep)
    with eval_mode(model):
        for _ in range(config.max_new_tokens):
            logits = apply_sequence_rules(suppress(next_logits(sequences).float(), config.suppress_tokens), sequences,
                                          config)
            # nan would spread through the scores; +inf would make log_softmax nan.
            logits = torch.nan_to_num(logits, nan=-math.inf, posinf=LOGIT_BOUND)
            # A row with every token banned (no_repeat_ngram_size 1 once the vocabulary is used up) is all
            # -inf, whose log_softmax is nan: it gets -inf, that beam ends its run of candidates.
            log_probs = F.log_softmax(logits, dim=-1).nan_to_num(nan=-math.inf)
            candidates = (scores[:, None] + log_probs).flatten()
            scores, flat = candidates.topk(beams)
            parents, tokens = flat // logits.shape[1], flat % logits.shape[1]
            sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
            next_logits.select(parents)
    n = config.num_return_sequences
    return sequences[:n], scores[:n]
