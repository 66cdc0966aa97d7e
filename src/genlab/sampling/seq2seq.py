"""Decoding for encoder–decoder models: greedy, sampling, beam search with a length penalty
and n-best lists, streaming, and batches of sources of different lengths.

Works on token ids with any model that has (see models/seq2seq.py):

    encode_source(src [B, S]) -> memory             the encoder's output (.select(rows))
    encode(src [B, S]) -> cache                     memory + what the decoder reads from it every
                                                    step, computed once per source (.select(rows))
    decode_step(tokens [B, T], cache) -> logits [B, T, V]     continues the cached prefix
    decode_prefix(tokens [B, T], memory) -> logits [B, T, V]  the whole prefix, no cache
    config.pad_id, bos_id, eos_id, max_source_len; device

Sources are token ids ending in EOS (the data's contract), given as a list of sequences of
any lengths or as a right-padded LongTensor [B, S]; the encoder masks the padding, so a
source decodes to the same tokens alone or in a batch. Every target starts from BOS and
ends at EOS or after max_new_tokens; BOS and PAD are never generated.

Greedy and sampling process the next-token logits exactly as decoder-only generation does
(genlab.sampling.decoding: suppressed tokens, no repeated n-grams and the repetition penalty
over the target so far, temperature, top-k, top-p; temperature 0 is greedy); beam search ranks
its candidates after the same suppression, n-gram ban and penalty. With use_cache=False every step runs
the decoder over the whole prefix from the encoder output, recomputing the cross-attention
keys and values: the same tokens, slower; the cache is a pure speed-up.

Beam search keeps num_beams live hypotheses per source, ranked by total log-probability.
Each step expands every live beam by every token and takes the 2 x num_beams best
candidates: one that ends in EOS while among the best num_beams becomes a finished
hypothesis, and the best num_beams that do not end become the next live beams. Finished
hypotheses are ranked by the GNMT length penalty (Wu et al. 2016),

    score = log p(y | x) / lp(|y|),     lp(n) = ((5 + n) / 6) ^ alpha,

|y| counting EOS; alpha = 0 ranks by log-probability, which favours short outputs, and 0.6
is the usual setting (GNMT; Marian's default normalisation). A source is done once it has
num_beams finished hypotheses and its best live beam, scored as if it finished now, ranks
below all of them (Hugging Face's default, early_stopping=False). With alpha = 0 that is
exact, since a beam's log-probability only falls as it grows; with one beam it is greedy
decoding for any alpha. Sources still searching after max_new_tokens add their live beams,
unfinished, to the n-best list.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import GenlabError, warn
from ..tensors import eval_mode
from .decoding import GenerationConfig, _number, apply_sequence_rules, choose_next_tokens, suppress


@dataclass
class Seq2SeqGenerationConfig(GenerationConfig):
    """GenerationConfig (every field checked the same way) with translation's defaults: greedy,
    at most 128 new tokens, and beam search's length penalty. `stop` does not apply to token ids."""

    max_new_tokens: int = 128  # an upper bound: decoding ends at EOS
    temperature: float = 0.0  # greedy unless asked to sample
    length_penalty: float = 0.6  # beam search: GNMT's alpha; 0 ranks by total log-probability
    # EOS cannot come before this many tokens: an empty translation of a non-empty text is never
    # right, yet beam search with label smoothing finds it (a 20-minute en->zh Transformer's BLEU was
    # 15.09 with empty outputs allowed, 16.91 without: bench/translate.py --rescore). 0 allows an empty target.
    min_new_tokens: int = 1

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.min_new_tokens, bool) or not isinstance(self.min_new_tokens, int) \
                or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise GenlabError(f"min_new_tokens must be an integer in [0, max_new_tokens={self.max_new_tokens}], "
                              f"got {self.min_new_tokens!r}", "1 (no empty output) is usual", param="min_new_tokens")
        self.length_penalty = _number("length_penalty", self.length_penalty, "0.6 is usual; 0 turns it off")
        if not 0.0 <= self.length_penalty <= 10.0:
            raise GenlabError(f"length_penalty must be in [0, 10], got {self.length_penalty}",
                              "0.6 is usual; 0 ranks by total log-probability", param="length_penalty")


@dataclass
class Hypothesis:
    """One generated target."""

    tokens: list[int]  # the generated tokens, without BOS and EOS
    log_prob: float  # log p(tokens [+ EOS] | source) under the model, nats
    score: float  # what the n-best list is sorted by: log_prob / lp(length) in beam search, log_prob otherwise
    finished: bool  # it ended with EOS (False: it ran out of max_new_tokens)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(n) = ((5 + n) / 6) ^ alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def pad_sources(model, sources) -> torch.Tensor:
    """Sources (a LongTensor [B, S] padded with pad_id, or a list of token-id sequences) as one
    right-padded LongTensor on the model's device. A source longer than the model's
    max_source_len keeps its first max_source_len - 1 tokens and its EOS, with a notice."""
    config = model.config
    if isinstance(sources, torch.Tensor):
        if sources.dim() != 2 or sources.shape[0] == 0 or sources.is_floating_point():
            raise GenlabError(f"sources must be a LongTensor [B, S] of token ids, got shape {list(sources.shape)}")
        sources = [row[row != config.pad_id] for row in sources]
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence) or not sources:
        raise GenlabError("sources must be a non-empty list of token-id sequences (each ending in EOS)")
    rows = [torch.as_tensor(s, dtype=torch.long).flatten() for s in sources]
    for i, row in enumerate(rows):
        if row.numel() == 0:
            raise GenlabError(f"source {i} holds no tokens", "a source is its tokens then EOS; an empty text is [EOS]")
        bad = row[(row < 0) | (row >= config.vocab_size)]
        if bad.numel():
            raise GenlabError(f"source {i} holds token id {int(bad[0])}, outside the vocabulary 0..{config.vocab_size - 1}")
    longest = config.max_source_len
    if any(len(row) > longest for row in rows):
        count = sum(len(row) > longest for row in rows)
        warn(f"{count} source(s) longer than the model's {longest} tokens were truncated to their first {longest - 1} "
             "tokens and EOS")
        rows = [torch.cat([row[: longest - 1], row.new_tensor([config.eos_id])]) if len(row) > longest else row
                for row in rows]
    padded = torch.full((len(rows), max(len(r) for r in rows)), config.pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    return padded.to(model.device)


class NextTargetLogits:
    """The next-token logits [R, V] of a batch of target prefixes [R, T], through the model's
    cache (built once per source by `encode`) or, without it, from the encoder output alone."""

    def __init__(self, model, src: torch.Tensor, use_cache: bool):
        self.model, self.use_cache = model, use_cache
        self.state = model.encode(src) if use_cache else model.encode_source(src)

    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        if self.use_cache:  # the cache holds all but the newest token
            return self.model.decode_step(prefixes[:, -1:], self.state)[:, -1]
        return self.model.decode_prefix(prefixes, self.state)[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        self.state.select(rows)


def _with_specials_suppressed(model, config: GenerationConfig) -> GenerationConfig:
    """The config with BOS and PAD added to the tokens never generated."""
    extra = tuple(t for t in (model.config.bos_id, model.config.pad_id) if t not in config.suppress_tokens)
    return dataclasses.replace(config, suppress_tokens=config.suppress_tokens + extra)


# ----------------------------------------------------------------------------- greedy and sampling


def _sampled_steps(model, src: torch.Tensor, config: GenerationConfig,
                   generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per step, every row's next token [B] and its log-probability under the model [B]; a row
    that has ended (emitted EOS) gets PAD and 0. Rows that have ended leave the batch."""
    bos, eos, pad = model.config.bos_id, model.config.eos_id, model.config.pad_id
    config = _with_specials_suppressed(model, config)
    early = dataclasses.replace(config, suppress_tokens=config.suppress_tokens + (eos,))  # before min_new_tokens
    min_new = getattr(config, "min_new_tokens", 0)
    batch = src.shape[0]
    next_logits = NextTargetLogits(model, src, config.use_cache)
    prefixes = torch.full((batch, 1), bos, dtype=torch.long, device=src.device)  # the live rows' targets so far
    alive = torch.arange(batch, device=src.device)  # which rows of the batch they are
    for step in range(config.max_new_tokens):
        logits = next_logits(prefixes)
        chosen = choose_next_tokens(logits, prefixes, early if step < min_new else config, generator)
        chosen_log_p = logits.float().log_softmax(dim=-1).gather(1, chosen[:, None]).squeeze(1)
        tokens = torch.full((batch,), pad, dtype=torch.long, device=src.device).index_copy(0, alive, chosen)
        log_p = torch.zeros(batch, device=src.device).index_copy(0, alive, chosen_log_p)
        yield tokens, log_p
        going = chosen != eos
        prefixes = torch.cat([prefixes, chosen[:, None]], dim=1)
        if not bool(going.all()):
            if not bool(going.any()):
                return
            rows = going.nonzero().squeeze(1)
            alive, prefixes = alive[rows], prefixes[rows]
            next_logits.select(rows)


@torch.no_grad()
def seq2seq_generate_tokens(model, sources, config: GenerationConfig | None = None,
                            generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every source, [B], step by step as they are decoded (greedy or
    sampling): EOS in the step a row ends, PAD after it. Stops when every row has ended or after
    config.max_new_tokens; stop consuming to stop early. `generator` defaults to one seeded with
    config.seed on the model's device."""
    config = config or Seq2SeqGenerationConfig()
    if config.num_beams > 1:
        raise GenlabError("seq2seq_generate_tokens samples or decodes greedily; for num_beams > 1 use seq2seq_beam_search")
    src = pad_sources(model, sources)
    if generator is None:
        generator = torch.Generator(model.device).manual_seed(config.seed)
    with eval_mode(model):
        for tokens, _ in _sampled_steps(model, src, config, generator):
            yield tokens


def seq2seq_stream(model, source, config: GenerationConfig | None = None, *,
                   generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield one source's target tokens as they are decoded (greedy or sampling), EOS not included."""
    eos = model.config.eos_id
    steps = seq2seq_generate_tokens(model, [source], config, generator)
    try:
        for tokens in steps:
            token = int(tokens[0])
            if token == eos:
                return
            yield token
    finally:
        steps.close()


# ----------------------------------------------------------------------------- beam search


class BeamSearch:
    """The state of a beam search over a batch of sources: each active source has `beams` rows
    (live hypotheses) in the model's cache, in source order."""

    def __init__(self, model, src: torch.Tensor, config: GenerationConfig):
        self.beams, self.eos = config.num_beams, model.config.eos_id
        self.alpha = getattr(config, "length_penalty", 0.0)
        self.suppress_tokens = _with_specials_suppressed(model, config).suppress_tokens
        self.min_new_tokens = getattr(config, "min_new_tokens", 0)
        self.config = config
        sources, device = len(src), src.device
        self.next_logits = NextTargetLogits(model, src, config.use_cache)
        self.next_logits.select(torch.arange(sources, device=device).repeat_interleave(self.beams))
        self.active = torch.arange(sources, device=device)  # the sources still searching
        self.prefixes = torch.full((sources * self.beams, 1), model.config.bos_id, dtype=torch.long, device=device)
        # Ranking scores (log-probabilities after the repetition penalty) and true log-probabilities, [active, beams].
        # The beams start as copies of BOS: only one may be live, or every beam would hold the same target.
        self.scores = torch.full((sources, self.beams), -math.inf, device=device)
        self.scores[:, 0] = 0.0
        self.log_probs = torch.zeros(sources, self.beams, device=device)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(sources)]

    def step(self) -> bool:
        """Extend every live beam by one token; False once every source is done."""
        log_p = self.next_logits(self.prefixes).float().log_softmax(dim=-1)  # [active x beams, V]
        early = self.prefixes.shape[1] - 1 < self.min_new_tokens  # EOS not yet allowed
        suppressed = self.suppress_tokens + ((self.eos,) if early else ())
        ranked = apply_sequence_rules(suppress(log_p, suppressed), self.prefixes, self.config).nan_to_num(nan=-math.inf)
        n, beams, vocab = len(self.active), self.beams, log_p.shape[1]
        candidates = (self.scores[:, :, None] + ranked.view(n, beams, vocab)).view(n, beams * vocab)
        scores, top = candidates.topk(min(2 * beams, beams * vocab), dim=1)  # [active, 2 x beams], best first
        parents, tokens = top // vocab, top % vocab
        log_probs = self.log_probs.gather(1, parents) + log_p.view(n, beams, vocab)[
            torch.arange(n, device=top.device)[:, None], parents, tokens]
        ends = tokens == self.eos
        self._finish(ends & (torch.arange(top.shape[1], device=top.device) < beams) & torch.isfinite(scores),
                     parents, scores, log_probs)
        # The next live beams: the best candidates that do not end (a stable sort keeps their order).
        keep = torch.sort(ends.int(), dim=1, stable=True).indices[:, :beams]
        self.scores, self.log_probs = scores.gather(1, keep), log_probs.gather(1, keep)
        rows = (torch.arange(n, device=top.device)[:, None] * beams + parents.gather(1, keep)).flatten()
        self.prefixes = torch.cat([self.prefixes[rows], tokens.gather(1, keep).flatten()[:, None]], dim=1)
        self.next_logits.select(rows)
        return self._drop_done_sources()

    def _finish(self, ending: torch.Tensor, parents, scores, log_probs) -> None:
        """Candidates [active, 2 x beams] marked in `ending` become finished hypotheses."""
        for i, j in ending.nonzero().tolist():
            target = self.prefixes[i * self.beams + parents[i, j], 1:].tolist()
            score = float(scores[i, j]) / length_penalty(len(target) + 1, self.alpha)  # EOS counts
            self.finished[int(self.active[i])].append(Hypothesis(target, float(log_probs[i, j]), score, True))

    def _searching(self, source: int, best_live: float, length: int) -> bool:
        """Whether a source's search goes on: it has fewer than `beams` finished hypotheses, or its best
        live beam (`length` tokens so far), finished now, would rank above the worst of the best `beams`."""
        finished = self.finished[source]
        if len(finished) < self.beams:
            return True
        worst_kept = sorted(h.score for h in finished)[-self.beams]
        return best_live / length_penalty(length, self.alpha) > worst_kept

    def _drop_done_sources(self) -> bool:
        length = self.prefixes.shape[1] - 1
        searching = torch.tensor([self._searching(int(s), float(best), length)
                                  for s, best in zip(self.active, self.scores.amax(dim=1))], device=self.active.device)
        if bool(searching.all()):
            return True
        rows = searching.repeat_interleave(self.beams).nonzero().squeeze(1)
        self.active, self.scores, self.log_probs = self.active[searching], self.scores[searching], self.log_probs[searching]
        self.prefixes = self.prefixes[rows]
        if len(rows):
            self.next_logits.select(rows)
        return bool(searching.any())

    def add_live_beams(self) -> None:
        """Out of new tokens: the live beams join the n-best lists, unfinished."""
        for i, source in enumerate(self.active.tolist()):
            for k in range(self.beams):
                if math.isfinite(self.scores[i, k]):
                    target = self.prefixes[i * self.beams + k, 1:].tolist()
                    score = float(self.scores[i, k]) / length_penalty(len(target), self.alpha)
                    self.finished[source].append(Hypothesis(target, float(self.log_probs[i, k]), score, False))

    def n_best(self, n: int) -> list[list[Hypothesis]]:
        return [sorted(hypotheses, key=lambda h: -h.score)[:n] for hypotheses in self.finished]


@torch.no_grad()
def seq2seq_beam_search(model, sources, config: Seq2SeqGenerationConfig) -> list[list[Hypothesis]]:
    """Per source, its config.num_return_sequences best hypotheses of a beam search with
    config.num_beams beams, best first (by score: log-probability over the length penalty)."""
    src = pad_sources(model, sources)
    with eval_mode(model):
        search = BeamSearch(model, src, config)
        for _ in range(config.max_new_tokens):
            if not search.step():
                break
        else:
            search.add_live_beams()
    return search.n_best(config.num_return_sequences)


# ----------------------------------------------------------------------------- everything at once


@torch.no_grad()
def seq2seq_generate(model, sources, config: GenerationConfig | None = None, *,
                     generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Per source, config.num_return_sequences targets: beam search's n-best list when
    config.num_beams > 1 (best first), else greedy or sampled targets (in the order drawn)."""
    config = config or Seq2SeqGenerationConfig()
    if config.num_beams > 1:
        return seq2seq_beam_search(model, sources, config)
    src = pad_sources(model, sources)
    copies = config.num_return_sequences
    src = src.repeat_interleave(copies, dim=0)
    if generator is None:
        generator = torch.Generator(model.device).manual_seed(config.seed)
    targets: list[list[int]] = [[] for _ in range(len(src))]
    log_probs = torch.zeros(len(src), dtype=torch.float64, device=src.device)
    ended = [False] * len(src)
    eos = model.config.eos_id
    with eval_mode(model):
        for tokens, log_p in _sampled_steps(model, src, config, generator):
            log_probs += log_p.double()
            for i, token in enumerate(tokens.tolist()):
                if not ended[i]:
                    ended[i] = token == eos
                    if not ended[i]:
                        targets[i].append(token)
    hypotheses = [Hypothesis(t, float(lp), float(lp), e) for t, lp, e in zip(targets, log_probs.tolist(), ended)]
    return [hypotheses[i : i + copies] for i in range(0, len(hypotheses), copies)]


__all__ = ["Seq2SeqGenerationConfig", "Hypothesis", "length_penalty", "pad_sources", "NextTargetLogits",
           "seq2seq_generate", "seq2seq_generate_tokens", "seq2seq_stream", "seq2seq_beam_search"]
