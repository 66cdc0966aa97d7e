"""Autoregressive sequence models: what the LSTM and GPT families share.

Method. A sequence of tokens is modelled one token at a time,

    p(x_1 .. x_T) = prod_t p(x_t | x_1 .. x_{t-1}),

by a network that reads a window of tokens and outputs, at every position, logits for the
next token. Training minimises the cross-entropy of each window's next tokens (teacher
forcing): the mean negative log-likelihood in nats per token. Reported beside it:

    perplexity      exp(loss): the effective number of equally likely next tokens
    bits_per_char   total nats / (characters * ln 2): independent of the tokenizer, so char,
                    byte and BPE models of the same text compare directly

The networks see token ids only, never text, so the same classes model music events. A
family provides three things, and generation (genlab.sampling) is written against them:

    forward(tokens [B, T], cache=None) -> logits [B, T, V]
        with a cache, `tokens` continue the tokens the cache has seen, and the cache is
        updated in place (keys and values for a Transformer, the state for an LSTM)
    new_cache(batch_size) -> an empty cache (it has .select(rows) to reorder or drop rows)
    context_window -> the most tokens the network can read at once (None: no limit)

Text families get a tokenizer from genlab.train / genlab.load (`model.tokenizer`); it turns
prompts into tokens and samples back into text.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from ..metrics.text import bits_per_char, perplexity
from .base import GenerativeModel, check_sample_count

SAMPLE_TOKENS = 256  # new tokens per text drawn by `sample` (genlab sample, genlab.sample)
PREVIEW_SAMPLES, PREVIEW_TOKENS = 3, 200  # the samples.txt written during training


class AutoregressiveModel(GenerativeModel):
    data_kind: ClassVar[str] = "text"
    needs_tokenizer: ClassVar[bool] = True  # `tokenizer` is set on text models by genlab.train and genlab.load
    capabilities = frozenset({"sample", "log_likelihood", "generate"})

    # -- what a family provides -----------------------------------------------------------
    @property
    def context_window(self) -> int | None:
        return None

    def forward(self, tokens: torch.Tensor, cache=None) -> torch.Tensor:
        raise NotImplementedError

    def new_cache(self, batch_size: int):
        raise NotImplementedError

    # -- likelihood -----------------------------------------------------------------------
    def token_log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t) in nats for t = 2..T of windows x [B, T]: [B, T - 1]."""
        logits = self(x[:, :-1]).float()  # float32 even under autocast: the loss sums many small terms
        return -F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The "log_likelihood" capability: log p(x_2..x_T | x_1) per window, nats, [B] (exact)."""
        return self.token_log_likelihoods(x).sum(1)

    # -- training -------------------------------------------------------------------------
    def training_step(self, batch: dict, step: int, optimizers: dict) -> dict[str, float]:
        loss = -self.token_log_likelihoods(batch["x"]).mean()
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict[str, float]:
        log_p = self.token_log_likelihoods(batch["x"])
        loss = -log_p.mean().item()
        metrics = {"loss": loss}
        if "tokens_per_char" in batch:  # text data: how many characters the scored tokens span
            metrics["bits_per_char"] = bits_per_char(loss * log_p.numel(), log_p.numel() / batch["tokens_per_char"])
        return metrics

    def summarize_validation(self, means: dict[str, float]) -> dict[str, float]:
        # exp of the mean loss, not the mean of per-batch perplexities (which Jensen inflates).
        return {**means, "perplexity": perplexity(means["loss"])}

    # -- generation -----------------------------------------------------------------------
    def require_tokenizer(self):
        if self.tokenizer is None:
            raise GenlabError(
                f"this {self.family} model has no tokenizer, so it cannot turn text into tokens",
                "load a trained model with genlab.load(DIR) (it reads DIR/tokenizer.json), "
                "or use genlab.sampling.generate_tokens with token ids",
            )
        return self.tokenizer

    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None,
               max_new_tokens: int = SAMPLE_TOKENS) -> list[str]:
        """n texts drawn at temperature 1 (the model's own distribution), continuing the prompt
        `condition` (default: the tokenizer's start, a newline where the alphabet has one)."""
        from ..sampling import GenerationConfig, generate

        check_sample_count(n)
        if condition is not None and not isinstance(condition, str):
            raise GenlabError(f"a text model's condition is a prompt string, got {condition!r}",
                              "for decoding controls use genlab.generate(model, prompt, ...)")
        config = GenerationConfig(max_new_tokens=max_new_tokens, num_return_sequences=n)
        return generate(self, condition or "", config, generator=generator)

    @torch.no_grad()
    def preview(self, batch: dict, generator: torch.Generator) -> dict:
        if self.tokenizer is None:
            return {}
        texts = self.sample(PREVIEW_SAMPLES, generator=generator, max_new_tokens=PREVIEW_TOKENS)
        return {"samples": "".join(f"--- sample {i + 1} (temperature 1) ---\n{text}\n\n" for i, text in enumerate(texts))}
