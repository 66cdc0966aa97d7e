"""Text generation: a prompt in, continuations out, with stop strings and streaming.

The prompt is encoded with the model's tokenizer; an empty prompt starts from the
tokenizer's default start (a newline). A prompt longer than the model's context window is
not an error: generation reads only its last 3/4 window of tokens (see decoding.py, "the
context window") and a warning says so. Results are the continuations only, without the
prompt (as in the OpenAI API), cut before the first stop string.

A style (GenerationConfig.style, for models trained with data styles) puts that style's
control token before the prompt and keeps it at the front of the context however long the
text grows; control tokens are never generated. Without a style a style model writes in any
of its styles.

Streaming yields text as soon as it is final: a token that ends in the middle of a UTF-8
character (byte and BPE tokenizers) is held back until the character is complete, and so
is text that might be the beginning of a stop string.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from ..errors import GenlabError, warn
from ..data.text import style_token
from .decoding import GenerationConfig, beam_search, context_start, generate_tokens

REPLACEMENT = "\ufffd"  # what a cut-off UTF-8 character decodes to


def prompt_tokens(model, prompt: str, style: str | None = None) -> torch.Tensor:
    """The prompt's token ids [T] (the default start if empty), after the style's control token
    when a style is given, warning when the prompt overflows the context."""
    if not isinstance(prompt, str):
        raise GenlabError(f"the prompt must be a string, got {type(prompt).__name__}")
    tokenizer = model.require_tokenizer()
    # Checked before the prompt is encoded: an unknown style is the first thing to hear about.
    prefix = [style_token(tokenizer, style)] if style is not None else []
    ids = torch.as_tensor(prefix + tokenizer.encode(prompt or tokenizer.default_prompt).tolist(), dtype=torch.long)
    window = model.context_window
    if window is not None and len(ids) > window:
        text_window = window - len(prefix)
        kept = len(ids) - len(prefix) - context_start(0, len(ids) - len(prefix), text_window)
        warn(f"the prompt is {len(ids) - len(prefix)} tokens, longer than the model's context window of "
             f"{text_window}{' after the style token' if prefix else ''}; generation reads only its last {kept} tokens")
    return ids


def _styled(model, prompt: str, config: GenerationConfig) -> tuple[torch.Tensor, GenerationConfig, int]:
    """(the prompt's ids, the config with a style model's control tokens suppressed, how many leading
    ids stay in the context): a control token leads a text, it never continues one."""
    ids = prompt_tokens(model, prompt, config.style)
    controls = tuple(getattr(model.tokenizer, "style_tokens", ()))
    if controls:
        config = dataclasses.replace(config, suppress_tokens=tuple(config.suppress_tokens) + controls)
    return ids, config, int(config.style is not None)


class Continuation:
    """One sequence's generated text, released piece by piece as it becomes final."""

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = stop
        self.text = ""  # decoded text up to the last complete character
        self.pending: list[int] = []  # tokens ending inside a UTF-8 character
        self.released = 0  # characters of self.text handed out so far
        self.done = False
        self.stopped = False  # a stop string ended it (rather than the token budget)
        self.tokens = 0  # tokens pushed

    def push(self, token: int) -> str:
        """Add a token; return the text that became final (may be empty)."""
        self.tokens += 1
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        if piece.endswith(REPLACEMENT):  # wait for the rest of the character
            return ""
        # Decoding the pending tokens alone is exact: they start on a character boundary.
        self.text += piece
        self.pending = []
        hits = [i for i in (self.text.find(s, self.released) for s in self.stop) if i != -1]
        if hits:
            self.text = self.text[: min(hits)]
            self.done = self.stopped = True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._possible_stop_prefix())

    def close(self) -> str:
        """The end of generation: release everything that is left."""
        if not self.done and self.pending:
            self.text += self.tokenizer.decode(self.pending)
            self.pending = []
        self.done = True
        return self._release(len(self.text))

    def _possible_stop_prefix(self) -> int:
        """Length of the longest end of the text that could grow into a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text) - self.released), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _release(self, end: int) -> str:
        piece = self.text[self.released : end]
        self.released = max(self.released, end)
        return piece


def generate(model, prompt: str = "", config: GenerationConfig | None = None, *,
             generator: torch.Generator | None = None) -> list[str]:
    """config.num_return_sequences continuations of `prompt` (beam search when config.num_beams > 1)."""
    rows, _ = continuations(model, prompt, config, generator=generator)
    return [row.text for row in rows]


def continuations(model, prompt: str = "", config: GenerationConfig | None = None, *,
                  generator: torch.Generator | None = None, on_piece=None, keep_going=None) -> tuple[list[Continuation], int]:
    """What `generate` draws, with the details a server reports: every sequence's Continuation
    (its text, tokens drawn, whether a stop string ended it) and the prompt's length in tokens.

    on_piece(index, piece) receives each sequence's text as it becomes final; keep_going() is
    asked before every step and ends generation early when it returns False (it may also raise).
    """
    ids, config, keep = _styled(model, prompt, config or GenerationConfig())
    rows = [Continuation(model.tokenizer, config.stop) for _ in range(config.num_return_sequences)]
    if config.num_beams > 1:
        sequences, _ = beam_search(model, ids, config, keep)
        # The finished beams, fed step by step like sampled tokens: [n] per step.
        steps = (column for column in sequences[:, len(ids):].T)
    else:
        steps = generate_tokens(model, ids.repeat(len(rows), 1), config, generator, keep)
    try:
        for tokens in steps:
            if keep_going is not None and not keep_going():
                break
            for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
                if not row.done:
                    piece = row.push(token)
                    if piece and on_piece is not None:
                        on_piece(i, piece)
            if all(row.done for row in rows):
                break
    finally:
        steps.close()
    for i, row in enumerate(rows):
        rest = row.close()
        if rest and on_piece is not None:
            on_piece(i, rest)
    return rows, len(ids)


def stream(model, prompt: str = "", config: GenerationConfig | None = None, *,
           generator: torch.Generator | None = None) -> Iterator[str]:
    """Yield the continuation of `prompt` in pieces as it is generated (one sequence, sampling or greedy)."""
    config = config or GenerationConfig()
    if config.num_return_sequences != 1 or config.num_beams != 1:
        raise GenlabError("streaming produces one sequence by sampling or greedy decoding",
                          "use num_return_sequences=1 and num_beams=1, or generate() for several sequences")
    ids, config, keep = _styled(model, prompt, config)
    continuation = Continuation(model.tokenizer, config.stop)
    steps = generate_tokens(model, ids, config, generator, keep)
    try:
        for tokens in steps:
            piece = continuation.push(int(tokens[0]))
            if piece:
                yield piece
            if continuation.done:
                return
    finally:
        steps.close()
    rest = continuation.close()
    if rest:
        yield rest
