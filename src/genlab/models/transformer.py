"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

Method. Each token id is embedded and added to a learned embedding of its position
(0 .. block_size - 1). A stack of n_layer blocks follows, each pre-LayerNorm as in GPT-2:

    h = h + Attention(LayerNorm(h))
    h = h + MLP(LayerNorm(h))            MLP: Linear(C, 4C), GELU, Linear(4C, C)

Two options from the nanoGPT speedruns (Jordan et al. 2024), off by default so every trained
artifact keeps its meaning: model.positions=rotary drops the learned position embedding and
rotates each head's queries and keys by angles proportional to their position (RoPE, Su et al.
2021), so attention scores depend on how far apart two tokens are, not where they sit;
model.activation=relu2 uses ReLU(x)^2 in the MLP instead of GELU (So et al. 2021). And one
for CPUs: model.dropout_mask=sequence draws one dropout mask per sequence and drops the same
channels at every position (variational dropout, Gal & Ghahramani 2016; AWD-LSTM's locked
dropout) — a random number per channel instead of per element, where drawing them is most of
what dropout costs on a CPU. model.qk_norm=true RMS-normalises each head's queries and keys
before their dot product (QK-norm, Henry et al. 2020; Dehghani et al. 2023), which bounds the
attention logits and so tolerates larger learning rates.

Attention is multi-head causal self-attention: position t attends to positions <= t only,
computed by `F.scaled_dot_product_attention`, which picks a fused kernel where one exists
(except for bf16 training on a CPU, where the fused backward is slow: `causal_attention_explicit`).
A final LayerNorm and a linear read-out give next-token logits; the read-out shares its
matrix with the token embedding (weight tying, Press & Wolf 2017), which saves V x C
parameters and helps small models. Dropout follows the embeddings, the attention weights
(model.attention_dropout, by default the same rate) and each residual branch. Weights
start at N(0, 0.02), the projections into the residual stream at N(0, 0.02 / sqrt(2 n_layer))
so the stream's variance does not grow with depth (GPT-2); linear layers have no biases
(nanoGPT finds them slightly worse and slower).

KV cache. When generating, token t's keys and values never change once computed, so a
cache keeps them, per layer, in a tensor preallocated for the whole window: each new token
then costs one column of attention instead of re-running the network over the whole
context. `forward(tokens, cache)` appends to the cache and attends over everything in it.

The network, `Transformer`, knows nothing about text: it maps token ids to logits and is
reused over other token streams (music events). `GPT` is the text family around it; what
every autoregressive family shares (loss, metrics, sampling) is in autoregressive.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GenlabError
from ..registry import register_family
from .autoregressive import AutoregressiveModel
from .optimizers import MuonWithAdamW


POSITIONS = ("learned", "rotary")
ACTIVATIONS = ("gelu", "relu2")
DROPOUT_MASKS = ("element", "sequence")


@dataclass
class GPTConfig:
    vocab_size: int = 65  # filled in from the data's tokenizer
    block_size: int = 128  # filled in from the data (data.block_size): the context window in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # the residual stream's width C; a multiple of n_head
    dropout: float = 0.1
    # Dropout on the attention weights; None means model.dropout. On a CPU it costs more than all the other
    # dropout together (bench/gpt_step_cost.py), so 0 here regularises a budget run more cheaply.
    attention_dropout: float | None = None
    positions: str = "learned"  # learned | rotary (RoPE)
    dropout_mask: str = "element"  # element | sequence (one mask per sequence, shared by its positions)
    activation: str = "gelu"  # gelu | relu2
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before their dot product

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise GenlabError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise GenlabError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})",
                              "each head gets n_embd / n_head dimensions, e.g. n_embd=128 with n_head=4")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise GenlabError(f"model.{name} must be in [0, 1), got {value}")
        if self.positions not in POSITIONS:
            raise GenlabError(f"model.positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.dropout_mask not in DROPOUT_MASKS:
            raise GenlabError(f"model.dropout_mask must be one of {', '.join(DROPOUT_MASKS)}, got {self.dropout_mask!r}")
        if self.activation not in ACTIVATIONS:
            raise GenlabError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2:
            raise GenlabError(f"model.positions=rotary rotates pairs of dimensions, but each head has "
                              f"{self.n_embd // self.n_head} (n_embd / n_head)", "choose n_embd / n_head even")


# ----------------------------------------------------------------------------- the cache


class KVCache:
    """Keys and values of every layer for the tokens seen so far, [layers, B, heads, window, head_dim]."""

    def __init__(self, n_layer: int, batch_size: int, n_head: int, window: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (n_layer, batch_size, n_head, window, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens cached; the next token's position

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' k, v [B, heads, T, head_dim]; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder, repeat) batch rows, e.g. the surviving hypotheses of a beam search."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]


# ----------------------------------------------------------------------------- the network


class SequenceDropout(nn.Module):
    """Dropout of whole channels of a sequence: x [B, T, C] times one mask [B, 1, C] scaled by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(keep).div_(keep)


class ElementDropout(nn.Module):
    """nn.Dropout, with the mask drawn 16 bits at a time on a CPU.

    torch's CPU dropout draws one random number per element (at the 20-minute band's shape its dropouts
    add 194 ms to a step's forward and backward, these 90: bench/gpt_step_cost.py --architecture, its
    2026-12-02 01:22 run);
    here each 64-bit random integer gives four 16-bit uniforms, so the rate is rounded to a multiple of
    1/65536 (0.1 -> 0.099991) and survivors are scaled by 1 / (1 - that rate). On other devices (CUDA's
    fused kernel) this is F.dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        dropped = round(p * 65536)  # elements whose 16-bit draw, from -32768 .. 32767, falls below the threshold
        self.threshold = dropped - 32768
        self.scale = 65536 / (65536 - dropped) if dropped < 65536 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        count = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
        keep = draws.view(torch.int16)[:count].view(x.shape) >= self.threshold
        return torch.where(keep, x * self.scale, 0.0)


def make_dropout(p: float, mask: str) -> nn.Module:
    return SequenceDropout(p) if mask == "sequence" else ElementDropout(p)


class Rotary(nn.Module):
    """RoPE: rotate each pair (x[i], x[i + D/2]) of a head's D dimensions by the angle position x base^(-2i/D).

    The dot product of a query rotated for position m and a key rotated for position n then depends on
    m - n only. Pairing each dimension with the one D/2 further on (GPT-NeoX's layout) rather than with
    its neighbour keeps every operation on contiguous memory, which matters on a CPU. The angles are a
    buffer computed once for the whole window, not a parameter: it is not saved with the model.
    """

    def __init__(self, head_dim: int, window: int, base: float = 10000.0):
        super().__init__()
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(window, dtype=torch.float32), frequencies).repeat(1, 2)  # [window, D]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x [B, heads, T, D] at positions start .. start + T - 1."""
        cos = self.cos[start : start + x.shape[2]].to(x.dtype)
        sin = self.sin[start : start + x.shape[2]].to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-second, first), dim=-1) * sin


def causal_attention_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention written out, for bf16 training on a CPU: scores = -inf above the diagonal + q k^T / sqrt(D)
    in one batched matmul (baddbmm), their softmax, the weighted sum of the values.

    There torch's fused attention (flash attention for CPU) has a fast forward but a slow backward in bf16; this
    one's matmuls run on the AMX tiles. At the 20-minute band's shape (6 x 320, batch 24, context 128) a step's
    forward and backward take 233 ms against 339 with the fused kernel (bench/gpt_step_cost.py --architecture,
    its 2026-12-02 05:41 run; 345 against 516 at 01:22, the host slower). The softmax stays in bf16 like the
    matmuls around it, so the [batch x heads, T, T] scores are never converted. CausalSelfAttention uses this
    only where the fused backward is the problem: bf16 on a CPU with gradients on and no attention dropout;
    evaluation, generation, fp32 and other devices keep the fused kernel.
    """
    batch, heads, length, width = q.shape
    future = torch.full((length, length), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    scores = torch.baddbmm(future.expand(batch * heads, length, length),
                           (q * width**-0.5).reshape(batch * heads, length, width),
                           k.reshape(batch * heads, length, width).transpose(1, 2))
    weights = torch.softmax(scores, dim=-1)
    return (weights @ v.reshape(batch * heads, length, width)).view(batch, heads, length, width)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: nn.Module, attention_dropout: float,
                 rotary: Rotary | None = None, qk_norm: bool = False):
        super().__init__()
        self.n_head = n_head
        self.rotary = rotary
        self.qk_norm = qk_norm
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)
        self.attention_dropout = attention_dropout
        self.residual_dropout = dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(width, dim=2))
        if self.qk_norm:
            q, k = F.rms_norm(q, (q.shape[-1],)), F.rms_norm(k, (k.shape[-1],))
        if self.rotary is not None:
            start = cache.length if cache is not None else 0
            q, k = self.rotary(q, start), self.rotary(k, start)
        dropout = self.attention_dropout if self.training else 0.0
        if cache is None or cache.length == 0:
            if cache is not None:
                cache.append(layer, k, v)
            if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
                    and dropout == 0.0):
                y = causal_attention_explicit(q, k, v)
            else:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            start = cache.length
            k, v = cache.append(layer, k, v)
            mask = None  # one new token may attend to every cached one
            if length > 1:  # several new tokens: each sees the cache and the new tokens up to itself
                positions = torch.arange(start + length, device=x.device)
                mask = positions <= positions[start:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.residual_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: nn.Module, activation: str = "gelu"):
        super().__init__()
        self.up = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.down = nn.Linear(4 * n_embd, n_embd, bias=False)
        self.dropout = dropout
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.up(x)
        hidden = F.relu(hidden).square() if self.activation == "relu2" else F.gelu(hidden)
        return self.dropout(self.down(hidden))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, attention_dropout: float,
                 rotary: Rotary | None = None, activation: str = "gelu", dropout_mask: str = "element",
                 qk_norm: bool = False):
        super().__init__()
        self.ln_attention = nn.LayerNorm(n_embd)
        self.attention = CausalSelfAttention(n_embd, n_head, make_dropout(dropout, dropout_mask), attention_dropout,
                                             rotary, qk_norm)
        self.ln_mlp = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, make_dropout(dropout, dropout_mask), activation)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attention(self.ln_attention(x), cache, layer)
        return x + self.mlp(self.ln_mlp(x))


class Transformer(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab_size]; optionally through a KV cache."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float,
                 attention_dropout: float | None = None, positions: str = "learned", activation: str = "gelu",
                 dropout_mask: str = "element", qk_norm: bool = False):
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.block_size, self.n_layer, self.n_head, self.n_embd = block_size, n_layer, n_head, n_embd
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        # Rotary positions live in the attention (one table shared by every layer); learned ones are added here.
        self.position_embedding = nn.Embedding(block_size, n_embd) if positions == "learned" else None
        rotary = Rotary(n_embd // n_head, block_size) if positions == "rotary" else None
        self.dropout = make_dropout(dropout, dropout_mask)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, attention_dropout, rotary, activation, dropout_mask,
                                          qk_norm)
                                    for _ in range(n_layer))
        self.ln_final = nn.LayerNorm(n_embd)
        self.apply(self._init_weights)
        for block in self.blocks:
            for projection in (block.attention.proj, block.mlp.down):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def new_cache(self, batch_size: int) -> KVCache:
        weight = self.token_embedding.weight
        return KVCache(self.n_layer, batch_size, self.n_head, self.block_size, self.n_embd // self.n_head,
                       weight.device, weight.dtype)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        length = tokens.shape[1]
        if start + length > self.block_size:
            raise GenlabError(
                f"{start + length} tokens do not fit the model's context window of {self.block_size}",
                "genlab.sampling keeps generation inside the window; when calling the model directly, pass at most "
                f"{self.block_size} tokens",
            )
        x = self.token_embedding(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(start, start + length, device=tokens.device))
        x = self.dropout(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += length
        return self.ln_final(x) @ self.token_embedding.weight.T  # the read-out is the tied embedding


# ----------------------------------------------------------------------------- the family


@register_family("gpt")
class GPT(AutoregressiveModel):
    config_class = GPTConfig
    supports_muon = True

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.transformer = Transformer(config.vocab_size, config.block_size, config.n_layer, config.n_head,
                                       config.n_embd, config.dropout, config.attention_dropout, config.positions,
                                       config.activation, config.dropout_mask, config.qk_norm)

    @property
    def context_window(self) -> int:
        return self.config.block_size

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.transformer(tokens, cache)

    def new_cache(self, batch_size: int) -> KVCache:
        return self.transformer.new_cache(batch_size)

    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        # AdamW, decaying the matrices (embeddings and linear weights) but not the LayerNorm
        # gains and biases, as GPT-2 and nanoGPT do; beta2 = 0.99 suits small batches of
        # small models (nanoGPT's shakespeare_char setting).
        # train.optimizer=muon: Muon for the blocks' matrices; the embeddings (and so the tied read-out) keep AdamW.
        matrices = [p for p in self.transformer.blocks.parameters() if p.dim() == 2] if train.optimizer == "muon" else []
        muon = {id(p) for p in matrices}
        decay = [p for p in self.parameters() if p.dim() >= 2 and id(p) not in muon]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if matrices:
            return {"main": MuonWithAdamW(matrices, groups, lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, 0.99))}
        return {"main": torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.99))}
