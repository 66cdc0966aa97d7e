"""Encoder–decoder models: one text in, another out (translation, dialogue responses).

Method. A source x_1 .. x_S (its tokens, then EOS) is read whole by an encoder; a decoder
then models the target y one token at a time, each conditioned on the source and on the
target so far,

    p(y_1 .. y_T | x) = prod_t p(y_t | y_<t, x),        y_0 = BOS, y_T = EOS.

Training is teacher forcing: the decoder reads [BOS] + y and predicts y + [EOS] at every
position in one pass, and the loss is the cross-entropy in nats per target token (pad
positions ignored). With label smoothing eps (Szegedy et al. 2016; Vaswani et al. 2017 use
0.1) the target distribution puts 1 - eps on the true token and spreads eps uniformly over
the vocabulary:

    loss_t = (1 - eps) * (-log p(y_t)) + eps * mean_v(-log p(v))

which keeps the model from growing ever more confident; validation reports the true
negative log-likelihood (eps = 0) and its perplexity, so smoothed and unsmoothed runs compare.

Two families share this file and one decoding interface (genlab.sampling.seq2seq):

    encode_source(src [B, S]) -> memory          the encoder's output, with the source's pad mask
    encode(src [B, S]) -> cache                  the memory plus what the decoder reads from it at
                                                 every step, computed once per source (cross-attention
                                                 keys and values; the GRU's attention keys), and an
                                                 empty decoder state
    decode_step(tokens [B, T], cache) -> logits [B, T, V]
                                                 continues the target prefix the cache has seen, and
                                                 appends to it (self-attention keys/values, GRU state)
    decode_prefix(tokens [B, T], memory) -> logits [B, T, V]
                                                 the whole prefix from the memory alone, reading and
                                                 writing no cache: teacher forcing, and the uncached
                                                 decoding that the cached path must match token for token
    memory.select(rows), cache.select(rows)      keep, reorder or repeat batch rows (beam search)

`seq2seq`: the Transformer (Vaswani et al. 2017), pre-LayerNorm (Xiong et al. 2020: trains
without the warm-up a post-LN stack needs at this size). The encoder is N blocks of

    h = h + SelfAttention(LN(h))            every source token sees every real source token
    h = h + MLP(LN(h))                      MLP: Linear(C, F), ReLU, Linear(F, C)

and the decoder N blocks of

    h = h + CausalSelfAttention(LN(h))      target position t sees positions <= t
    h = h + CrossAttention(LN(h), memory)   queries from the target, keys/values from the source
    h = h + MLP(LN(h))

each stack ending in a LayerNorm. Source and target share one embedding (the data side
trains one joint subword vocabulary), scaled by sqrt(C), and with tie_embeddings the output
projection is that same matrix (Press & Wolf 2017), as in the original model. Positions are
the fixed sinusoids of Vaswani et al. rather than learned vectors: they score the same there
(their Table 3, row E), cost no parameters, and are defined at every position, so a source
or a target a little longer than any in training still decodes instead of failing on a table
lookup. Attention is `F.scaled_dot_product_attention`; dropout follows the embeddings, the
attention weights and each residual branch.

`gru-attention`: the classic recurrent baseline (Bahdanau et al. 2015; the PyTorch seq2seq
tutorial). A bidirectional GRU reads the source (packed, so the backward direction starts
at each source's own last token, not at its padding); the decoder's initial state is
tanh(W [forward final; backward final]). At step t, with decoder state s_{t-1}:

    e_tj = v . tanh(W_q s_{t-1} + W_k m_j)     additive (Bahdanau)    or  s_{t-1} . (W_k m_j)  (Luong's "general")
    a_t  = softmax_j(e_tj) over real source tokens;  c_t = sum_j a_tj m_j
    s_t  = GRU([embed(y_{t-1}); c_t], s_{t-1})
    logits = E tanh(W_o [s_t; c_t; embed(y_{t-1})])    (E: the tied embedding, or its own matrix)

The keys W_k m_j depend on the source only: `encode` computes them once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..registry import register_family
from .base import GenerativeModel, check_sample_count

PREVIEW_EXAMPLES = 4  # validation sources decoded greedily into samples.txt during training
ATTENTIONS = ("additive", "multiplicative")


# ----------------------------------------------------------------------------- configs


def _check_common(config, sizes: tuple[str, ...]) -> None:
    """What both families' configs share: sizes >= 1, distinct special ids inside the vocabulary, dropout, smoothing."""
    for name in ("vocab_size", "max_source_len", "max_target_len", *sizes):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenlabError(f"model.{name} must be an integer >= 1, got {value!r}")
    ids = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id}
    for name, value in ids.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < config.vocab_size:
            raise GenlabError(f"model.{name} must be a token id in 0..{config.vocab_size - 1}, got {value!r}",
                              "the data sets the special token ids (pad 0, bos 1, eos 2); remove model.*_id")
    if len(set(ids.values())) != 3:
        raise GenlabError(f"model.pad_id, bos_id and eos_id must differ, got {ids}",
                          "the data sets them (pad 0, bos 1, eos 2); remove model.*_id")
    if config.max_target_len < 2:
        raise GenlabError(f"model.max_target_len must be at least 2 (BOS and EOS), got {config.max_target_len}")
    if not 0.0 <= config.dropout < 1.0:
        raise GenlabError(f"model.dropout must be in [0, 1), got {config.dropout}", "a typical value is 0.1")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise GenlabError(f"model.label_smoothing must be in [0, 1), got {config.label_smoothing}",
                          "0.1 is the usual value (Vaswani et al. 2017); 0 trains on the plain likelihood")


@dataclass
class EncoderDecoderConfig:
    """The settings both families share: the ones the data fills in, dropout, smoothing, tying."""

    vocab_size: int = 8000  # filled in from the data: the joint source/target vocabulary
    pad_id: int = 0  # filled in from the data
    bos_id: int = 1  # filled in from the data: the decoder's first input
    eos_id: int = 2  # filled in from the data: ends every source and every target
    max_source_len: int = 128  # filled in from the data: the longest source in tokens, EOS included
    max_target_len: int = 128  # filled in from the data: the longest target in tokens, BOS and EOS included
    dropout: float = 0.1
    label_smoothing: float = 0.1  # training loss only; validation reports the true likelihood
    tie_embeddings: bool = True  # the output projection is the shared embedding matrix


@dataclass
class Seq2SeqConfig(EncoderDecoderConfig):
    d_model: int = 256  # the residual stream's width C; a multiple of n_head, even (sinusoids come in sin/cos pairs)
    n_head: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 1024  # the MLP's hidden width F (4C in the original model)

    def __post_init__(self):
        _check_common(self, ("d_model", "n_head", "n_encoder_layers", "n_decoder_layers", "d_ff"))
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise GenlabError(f"model.d_model ({self.d_model}) must be a multiple of 2 x model.n_head ({self.n_head})",
                              "each head gets d_model / n_head dimensions, an even number, e.g. d_model=256 with n_head=4")


@dataclass
class GRUAttentionConfig(EncoderDecoderConfig):
    embedding_dim: int = 256  # the shared source/target embedding E
    hidden: int = 256  # the decoder's state, and each encoder direction's
    num_layers: int = 1  # stacked GRU layers in the encoder and in the decoder
    attention: str = "additive"  # additive (Bahdanau et al. 2015) | multiplicative (Luong et al. 2015, "general")

    def __post_init__(self):
        _check_common(self, ("embedding_dim", "hidden", "num_layers"))
        if self.attention not in ATTENTIONS:
            raise GenlabError(f"model.attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}",
                              "additive is Bahdanau's attention, multiplicative Luong's 'general' score")


# ----------------------------------------------------------------------------- shared by both families


class EncoderDecoderModel(GenerativeModel):
    """What both families share: the loss, validation, optimiser, and sampling/previews
    through genlab.sampling.seq2seq. A family provides encode_source, encode, decode_step and
    decode_prefix (the module docstring)."""

    data_kind: ClassVar[str] = "pairs"
    needs_tokenizer: ClassVar[bool] = True  # set by genlab.train / genlab.load; texts go through it
    capabilities = frozenset({"translate"})

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: sources [B, S] and decoder inputs [B, T] ([BOS] + target) -> logits [B, T, V]."""
        return self.decode_prefix(tgt_in, self.encode_source(src))

    def _token_terms(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(-log p(y_t) [B, T-1], mean over the vocabulary of -log p(v) [B, T-1], real-token mask [B, T-1])."""
        src, tgt = batch["src"], batch["tgt"]
        log_p = self(src, tgt[:, :-1]).float().log_softmax(dim=-1)  # float32 under autocast: sums of many terms
        targets = tgt[:, 1:]
        real = targets != self.config.pad_id
        nll = -log_p.gather(2, targets.unsqueeze(2)).squeeze(2)
        return nll, -log_p.mean(dim=-1), real

    def target_log_likelihood(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """log p(target | source) in nats per pair, [B]: the sum over the target's tokens, EOS included (exact)."""
        nll, _, real = self._token_terms({"src": src, "tgt": tgt})
        return -(nll * real).sum(dim=1)

    def training_step(self, batch: dict, step: int, optimizers: dict) -> dict[str, float]:
        nll, uniform, real = self._token_terms(batch)
        eps = self.config.label_smoothing
        tokens = real.sum().clamp(min=1)
        loss = (((1.0 - eps) * nll + eps * uniform) * real).sum() / tokens
        optimizers["main"].step(loss)
        return {"loss": loss.item(), "nll": ((nll * real).sum() / tokens).item(), "target_tokens": float(tokens)}

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict[str, float]:
        # The Trainer averages these weighted by batch size: per-example sums of the NLL and of the
        # token count average to (total NLL / pairs) and (tokens / pairs), whose ratio
        # (summarize_validation) is the split's exact NLL per target token, however batches are cut.
        nll, _, real = self._token_terms(batch)
        total, tokens, pairs = (nll * real).sum().item(), real.sum().item(), len(real)
        return {"loss": total / max(tokens, 1), "nll_per_pair": total / pairs, "tokens_per_pair": tokens / pairs}

    def summarize_validation(self, means: dict[str, float]) -> dict[str, float]:
        means = dict(means)
        if "nll_per_pair" in means and means.get("tokens_per_pair"):
            means["loss"] = means.pop("nll_per_pair") / means["tokens_per_pair"]
        means.pop("nll_per_pair", None)
        return {**means, "perplexity": math.exp(min(means["loss"], 700.0))}  # exp of the mean, not a mean of exps

    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        # AdamW decaying the matrices (embeddings, linear and recurrent weights) but not the
        # LayerNorm gains and biases, as the GPT family does; beta2 = 0.98 as in Vaswani et al.
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return {"main": torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.98))}

    # -- text ---------------------------------------------------------------------------
    def source_tokens(self, text: str) -> list[int]:
        """A source text's token ids as the model reads them: its tokens, then EOS."""
        if self.tokenizer is None:
            raise GenlabError(f"this {self.family} model has no tokenizer, so it cannot turn text into tokens",
                              "load a trained model with genlab.load(DIR), or pass token ids")
        return [int(i) for i in self.tokenizer.encode(text)] + [self.config.eos_id]

    def target_text(self, tokens) -> str:
        """Generated token ids as text (BOS, EOS and padding dropped); space-separated ids without a tokenizer."""
        special = {self.config.pad_id, self.config.bos_id, self.config.eos_id}
        ids = [int(i) for i in tokens if int(i) not in special]
        return self.tokenizer.decode(ids) if self.tokenizer is not None else " ".join(map(str, ids))

    # -- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, condition=None, generator: torch.Generator | None = None,
               max_new_tokens: int | None = None) -> list:
        """n targets drawn at temperature 1 for one source `condition`: a text (texts come back)
        or token ids ending in EOS (token-id lists come back). An encoder–decoder model has no
        unconditional samples, so it lacks the "sample" capability; this is its conditional draw."""
        from ..sampling.seq2seq import Seq2SeqGenerationConfig, seq2seq_generate

        check_sample_count(n)
        if condition is None:
            raise GenlabError(f"a {self.family} model samples targets for a source; give one as condition",
                              "e.g. model.sample(3, condition='How are you?')")
        source = self.source_tokens(condition) if isinstance(condition, str) else condition
        config = Seq2SeqGenerationConfig(temperature=1.0, num_return_sequences=n,
                                         max_new_tokens=max_new_tokens or self.config.max_target_len)
        [hypotheses] = seq2seq_generate(self, [source], config, generator=generator)
        if isinstance(condition, str):
            return [self.target_text(h.tokens) for h in hypotheses]
        return [h.tokens for h in hypotheses]

    @torch.no_grad()
    def preview(self, batch: dict, generator: torch.Generator) -> dict:
        """samples.txt: the first validation sources, their references and the greedy outputs
        (as text with a tokenizer, as token ids without one)."""
        from ..sampling.seq2seq import Seq2SeqGenerationConfig, seq2seq_generate

        src, tgt = batch["src"][:PREVIEW_EXAMPLES], batch["tgt"][:PREVIEW_EXAMPLES]
        config = Seq2SeqGenerationConfig(max_new_tokens=self.config.max_target_len)
        outputs = seq2seq_generate(self, src, config)
        lines = []
        for i, (source, reference, [best]) in enumerate(zip(src, tgt, outputs)):
            lines += [f"--- example {i + 1} (greedy) ---", f"source:    {self.target_text(source)}",
                      f"reference: {self.target_text(reference)}", f"output:    {self.target_text(best.tokens)}", ""]
        return {"samples": "\n".join(lines)}


# ----------------------------------------------------------------------------- the Transformer


def sinusoids(positions: torch.Tensor, width: int) -> torch.Tensor:
    """Positions [T] -> their encodings [T, width]: sin(p w_i) in the first half, cos(p w_i) in the
    second, w_i = 10000^(-i / (width/2)) (Vaswani et al. 2017, section 3.5; tensor2tensor's layout)."""
    half = width // 2
    frequencies = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = positions.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Attention(nn.Module):
    """Multi-head attention: queries from x [B, T, C]; keys and values, [B, heads, S, C/heads] each,
    from `keys_values(source)`, which is the same x for self-attention and the memory for cross-attention."""

    def __init__(self, width: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(width, width, bias=False)
        self.key_value = nn.Linear(width, 2 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.attention_dropout = dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape  # [B, T, C] -> [B, heads, T, C/heads]
        return x.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.key_value(source).chunk(2, dim=2)
        return self.heads(keys), self.heads(values)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        dropout = self.attention_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self.heads(self.query(x)), keys, values, attn_mask=mask,
                                           dropout_p=dropout, is_causal=causal)
        batch, _, length, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(F.relu(self.up(x))))


class EncoderLayer(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        width = config.d_model
        self.ln_attention, self.ln_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(width, config.n_head, config.dropout)
        self.mlp = FeedForward(width, config.d_ff, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, source_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_attention(x)
        x = x + self.dropout(self.attention(h, *self.attention.keys_values(h), mask=source_mask))
        return x + self.dropout(self.mlp(self.ln_mlp(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        width = config.d_model
        self.ln_self, self.ln_cross, self.ln_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attention = Attention(width, config.n_head, config.dropout)
        self.cross_attention = Attention(width, config.n_head, config.dropout)
        self.mlp = FeedForward(width, config.d_ff, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor], source_mask: torch.Tensor,
                cache: "TransformerCache | None" = None, layer: int = 0) -> torch.Tensor:
        h = self.ln_self(x)
        keys, values = self.self_attention.keys_values(h)
        start = 0 if cache is None else cache.length
        if cache is not None:
            keys, values = cache.append(layer, keys, values)
        # The first tokens attend causally among themselves; later ones see the cached prefix too.
        mask, causal = None, start == 0 and x.shape[1] > 1
        if start > 0 and x.shape[1] > 1:
            positions = torch.arange(start + x.shape[1], device=x.device)
            mask = positions <= positions[start:, None]
        x = x + self.dropout(self.self_attention(h, keys, values, mask=mask, causal=causal))
        x = x + self.dropout(self.cross_attention(self.ln_cross(x), *cross, mask=source_mask))
        return x + self.dropout(self.mlp(self.ln_mlp(x)))


@dataclass
class TransformerMemory:
    """The encoder's output: states [B, S, C] and mask [B, 1, 1, S] (True at real source tokens)."""

    states: torch.Tensor
    mask: torch.Tensor

    def select(self, rows: torch.Tensor) -> None:
        self.states, self.mask = self.states[rows], self.mask[rows]


@dataclass
class TransformerCache(TransformerMemory):
    """The memory plus, per decoder layer, the cross-attention keys and values (computed once,
    in `encode`) and the self-attention keys and values of the target prefix [B, heads, T, C/heads]."""

    cross: list = None
    self_attention: list = None
    length: int = 0  # target tokens seen: the next one's position

    def append(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.self_attention[layer] is not None:
            old_keys, old_values = self.self_attention[layer]
            keys, values = torch.cat([old_keys, keys], dim=2), torch.cat([old_values, values], dim=2)
        self.self_attention[layer] = (keys, values)
        return keys, values

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        self.self_attention = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.self_attention]


@register_family("seq2seq")
class Seq2Seq(EncoderDecoderModel):
    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig):
        super().__init__(config)
        width = config.d_model
        self.embedding = nn.Embedding(config.vocab_size, width)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        self.ln_encoder, self.ln_decoder = nn.LayerNorm(width), nn.LayerNorm(width)
        self.output = None if config.tie_embeddings else nn.Linear(width, config.vocab_size, bias=False)
        # N(0, C^-1/2) embeddings times sqrt(C) give unit-variance inputs, as large as the sinusoids,
        # and logits of unit scale through the tied read-out (the original model; fairseq).
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=width ** -0.5)

    def _embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.dropout(self.embedding(tokens) * math.sqrt(self.config.d_model)
                            + sinusoids(positions, self.config.d_model))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_decoder(x)
        return x @ self.embedding.weight.T if self.output is None else self.output(x)

    def encode_source(self, src: torch.Tensor) -> TransformerMemory:
        mask = (src != self.config.pad_id)[:, None, None, :]  # [B, 1, 1, S]: keys a query may attend to
        x = self._embed(src)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return TransformerMemory(self.ln_encoder(x), mask)

    def encode(self, src: torch.Tensor) -> TransformerCache:
        memory = self.encode_source(src)
        cross = [layer.cross_attention.keys_values(memory.states) for layer in self.decoder_layers]
        return TransformerCache(memory.states, memory.mask, cross, [None] * len(self.decoder_layers))

    def decode_step(self, tokens: torch.Tensor, cache: TransformerCache) -> torch.Tensor:
        x = self._embed(tokens, cache.length)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, cache.cross[i], cache.mask, cache, i)
        cache.length += tokens.shape[1]
        return self._logits(x)

    def decode_prefix(self, tokens: torch.Tensor, memory: TransformerMemory) -> torch.Tensor:
        x = self._embed(tokens)
        for layer in self.decoder_layers:
            x = layer(x, layer.cross_attention.keys_values(memory.states), memory.mask)
        return self._logits(x)


# ----------------------------------------------------------------------------- the GRU baseline


@dataclass
class GRUMemory:
    """The encoder's output: states [B, S, 2H], mask [B, S] (True at real source tokens) and the
    decoder's initial state [layers, B, H]."""

    states: torch.Tensor
    mask: torch.Tensor
    initial: torch.Tensor

    def select(self, rows: torch.Tensor) -> None:
        self.states, self.mask, self.initial = self.states[rows], self.mask[rows], self.initial[:, rows]


@dataclass
class GRUCache(GRUMemory):
    """The memory plus the attention keys W_k m_j [B, S, H] (computed once, in `encode`) and the
    decoder's state after the prefix seen so far [layers, B, H]."""

    keys: torch.Tensor = None
    hidden: torch.Tensor = None
    length: int = 0

    def select(self, rows: torch.Tensor) -> None:
        super().select(rows)
        self.keys, self.hidden = self.keys[rows], self.hidden[:, rows]


@register_family("gru-attention")
class GRUAttention(EncoderDecoderModel):
    config_class = GRUAttentionConfig

    def __init__(self, config: GRUAttentionConfig):
        super().__init__(config)
        emb, hid, layers = config.embedding_dim, config.hidden, config.num_layers
        between = config.dropout if layers > 1 else 0.0  # nn.GRU's dropout acts between stacked layers only
        self.embedding = nn.Embedding(config.vocab_size, emb)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = nn.GRU(emb, hid, layers, batch_first=True, bidirectional=True, dropout=between)
        self.bridge = nn.Linear(2 * hid, hid)  # both directions' final states -> the decoder's initial state
        self.attention_key = nn.Linear(2 * hid, hid, bias=False)  # W_k
        if config.attention == "additive":
            self.attention_query = nn.Linear(hid, hid, bias=False)  # W_q
            self.attention_energy = nn.Linear(hid, 1, bias=False)  # v
        self.decoder = nn.GRU(emb + 2 * hid, hid, layers, batch_first=True, dropout=between)
        self.readout = nn.Linear(hid + 2 * hid + emb, emb)  # W_o
        self.output = None if config.tie_embeddings else nn.Linear(emb, config.vocab_size, bias=False)

    def encode_source(self, src: torch.Tensor) -> GRUMemory:
        mask = src != self.config.pad_id
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(self.embedding(src)), lengths, batch_first=True,
                                                   enforce_sorted=False)
        states, final = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=src.shape[1])
        final = final.view(self.config.num_layers, 2, src.shape[0], self.config.hidden)  # [layers, directions, B, H]
        initial = torch.tanh(self.bridge(torch.cat([final[:, 0], final[:, 1]], dim=2)))
        return GRUMemory(states, mask, initial.contiguous())

    def encode(self, src: torch.Tensor) -> GRUCache:
        memory = self.encode_source(src)
        return GRUCache(memory.states, memory.mask, memory.initial, self.attention_key(memory.states), memory.initial)

    def _attend(self, query: torch.Tensor, keys: torch.Tensor, memory: GRUMemory) -> torch.Tensor:
        """The context c_t [B, 2H] for decoder states `query` [B, H]."""
        if self.config.attention == "additive":
            energies = self.attention_energy(torch.tanh(self.attention_query(query)[:, None] + keys)).squeeze(2)
        else:
            energies = (keys @ query[:, :, None]).squeeze(2)
        weights = energies.masked_fill(~memory.mask, -math.inf).softmax(dim=1)  # [B, S]
        return (weights[:, None] @ memory.states).squeeze(1)

    def _run(self, tokens: torch.Tensor, hidden: torch.Tensor, keys: torch.Tensor,
             memory: GRUMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, V] for decoder inputs [B, T] from state `hidden`, and the state after them."""
        embedded = self.dropout(self.embedding(tokens))
        features = []
        for t in range(tokens.shape[1]):  # the attention query is the previous state: one step at a time
            context = self._attend(hidden[-1], keys, memory)
            step_input = torch.cat([embedded[:, t], context], dim=1)[:, None]
            output, hidden = self.decoder(step_input, hidden)
            features.append(torch.cat([output[:, 0], context, embedded[:, t]], dim=1))
        x = self.dropout(torch.tanh(self.readout(torch.stack(features, dim=1))))
        logits = x @ self.embedding.weight.T if self.output is None else self.output(x)
        return logits, hidden

    def decode_step(self, tokens: torch.Tensor, cache: GRUCache) -> torch.Tensor:
        logits, cache.hidden = self._run(tokens, cache.hidden, cache.keys, cache)
        cache.length += tokens.shape[1]
        return logits

    def decode_prefix(self, tokens: torch.Tensor, memory: GRUMemory) -> torch.Tensor:
        logits, _ = self._run(tokens, memory.initial, self.attention_key(memory.states), memory)
        return logits
