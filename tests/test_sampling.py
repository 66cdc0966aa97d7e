"""Decoding (genlab.sampling): logits processing on known distributions, greedy/top-k/beam
equivalences, the KV cache against full recomputation, stop strings and streaming."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from genlab.data.text import ByteTokenizer, CharTokenizer
from genlab.errors import GenlabError
from genlab.models.rnn import LSTM, LSTMConfig
from genlab.models.transformer import GPT, GPTConfig
from genlab.sampling import (
    Continuation,
    continuations,
    GenerationConfig,
    apply_repetition_penalty,
    apply_top_p,
    ban_repeated_ngrams,
    beam_search,
    choose_next_tokens,
    generate,
    generate_tokens,
    stream,
)

VOCAB = 11
PROMPT = torch.tensor([1, 4, 2, 7])


CYCLE = torch.randint(VOCAB, (29,), generator=torch.Generator().manual_seed(0))  # longer than the GPT's window


def trained(model):
    """The model after 150 Adam steps on a repeating random sequence: a function with sharp,
    varied predictions. Untrained weights give near-uniform logits (whose argmax float noise
    could flip) and a tied GPT that repeats its last token, which would test little."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    text = CYCLE.repeat(8)
    for _ in range(150):
        starts = torch.randint(len(text) - 17, (16,))
        loss = -model.token_log_likelihoods(text[starts[:, None] + torch.arange(17)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@functools.cache
def _trained_gpt(block_size: int) -> GPT:
    torch.manual_seed(0)
    return trained(GPT(GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=0.1)))


@functools.cache
def _trained_lstm() -> LSTM:
    torch.manual_seed(0)
    return trained(LSTM(LSTMConfig(vocab_size=VOCAB, n_embd=8, hidden_size=16, n_layer=2, dropout=0.1)))


def tiny_gpt(block_size: int = 16) -> GPT:
    return copy.deepcopy(_trained_gpt(block_size))  # a copy: tests may attach a tokenizer or switch modes


def tiny_lstm() -> LSTM:
    return copy.deepcopy(_trained_lstm())


def tokens(model, config: GenerationConfig, prompt=PROMPT, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    steps = list(generate_tokens(model, prompt, config, generator))
    return torch.stack(steps, dim=1).tolist()


MODELS = {"gpt": tiny_gpt, "lstm": tiny_lstm}


# ----------------------------------------------------------------------------- the cache


@pytest.mark.parametrize("family", MODELS)
def test_cached_and_uncached_greedy_decoding_give_the_same_tokens(family):
    model = MODELS[family]()
    # 40 new tokens after a 4-token prompt: past the GPT's 16-token window, so the context
    # restarts several times on both paths.
    cached = tokens(model, GenerationConfig(max_new_tokens=40, temperature=0, use_cache=True))
    uncached = tokens(model, GenerationConfig(max_new_tokens=40, temperature=0, use_cache=False))
    assert cached == uncached
    assert len(set(cached[0])) > 2  # a varied sequence, not one token repeated
    # Sampling draws from the same distributions on both paths, so the same seed gives the same text.
    config = dict(max_new_tokens=40, temperature=1.0, top_k=5)
    uncached_samples = tokens(model, GenerationConfig(**config, use_cache=False), seed=3)
    assert tokens(model, GenerationConfig(**config), seed=3) == uncached_samples


def test_kv_cache_logits_match_a_full_forward_pass():
    model = tiny_gpt()
    sequence = torch.randint(VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(sequence)
        cache = model.new_cache(3)
        pieces = [model(sequence[:, :5], cache), model(sequence[:, 5:6], cache), model(sequence[:, 6:16], cache)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=1e-4)
    assert cache.length == 16
    with pytest.raises(GenlabError, match="context window"):
        model(sequence[:, :1], cache)  # a 17th token does not fit


def test_training_mode_is_restored_and_dropout_is_off_while_generating():
    greedy = GenerationConfig(max_new_tokens=10, temperature=0)
    without_dropout = tokens(tiny_gpt(), greedy)  # tiny_gpt() is in eval mode
    model = tiny_gpt().train()
    assert tokens(model, greedy) == without_dropout  # dropout would make these differ
    assert model.training


# ----------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("family", MODELS)
def test_top_k_1_and_beam_1_equal_greedy(family):
    model = MODELS[family]()
    greedy = tokens(model, GenerationConfig(max_new_tokens=25, temperature=0))
    assert tokens(model, GenerationConfig(max_new_tokens=25, temperature=1.3, top_k=1), seed=5) == greedy
    sequences, _ = beam_search(model, PROMPT, GenerationConfig(max_new_tokens=25, num_beams=1))
    assert sequences[0, len(PROMPT):].tolist() == greedy[0]


def sequence_log_probability(model, sequence: torch.Tensor, prompt_length: int) -> float:
    with torch.no_grad():
        log_p = model.token_log_likelihoods(sequence[None])[0]
    return log_p[prompt_length - 1 :].sum().item()


@pytest.mark.parametrize("family", MODELS)
def test_beam_search_scores_are_the_sequences_log_probabilities(family):
    model = MODELS[family]()
    config = GenerationConfig(max_new_tokens=6, num_beams=4, num_return_sequences=4)
    sequences, scores = beam_search(model, PROMPT, config)
    assert sequences.shape == (4, len(PROMPT) + 6) and (sequences[:, : len(PROMPT)] == PROMPT).all()
    assert len({tuple(s) for s in sequences.tolist()}) == 4  # four different hypotheses
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    for sequence, score in zip(sequences, scores):
        assert sequence_log_probability(model, sequence, len(PROMPT)) == pytest.approx(score.item(), abs=1e-3)
    uncached, _ = beam_search(model, PROMPT, GenerationConfig(max_new_tokens=6, num_beams=4, num_return_sequences=4,
                                                              use_cache=False))
    assert uncached.tolist() == sequences.tolist()


def test_seed_fixes_the_samples():
    model = tiny_gpt()
    config = GenerationConfig(max_new_tokens=20, temperature=1.0, num_return_sequences=3)
    batch = PROMPT.repeat(3, 1)
    first = tokens(model, config, batch, seed=7)
    assert first == tokens(model, config, batch, seed=7)
    assert first != tokens(model, config, batch, seed=8)
    assert first[0] != first[1]  # the rows are independent draws


# ----------------------------------------------------------------------------- logits processing


def test_top_p_never_samples_outside_the_nucleus():
    probs = torch.tensor([0.05, 0.40, 0.02, 0.25, 0.13, 0.15])
    logits = probs.log().repeat(20_000, 1)
    sequences = torch.zeros(20_000, 1, dtype=torch.long)
    # Sorted: 0.40 (token 1), 0.25 (3), 0.15 (5), 0.13 (4), ... The nucleus for p = 0.7 is
    # {1, 3, 5}: 0.40 + 0.25 < 0.7 <= 0.40 + 0.25 + 0.15.
    config = GenerationConfig(temperature=1.0, top_p=0.7)
    drawn = choose_next_tokens(logits, sequences, config, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3, 5}
    shares = torch.bincount(drawn, minlength=6).float() / len(drawn)
    expected = torch.tensor([0.0, 0.40, 0.0, 0.25, 0.0, 0.15]) / 0.80  # renormalised inside the nucleus
    torch.testing.assert_close(shares, expected, atol=0.015, rtol=0)
    # The most likely token alone is the nucleus when it holds p already; p = 1 keeps everything.
    assert torch.isfinite(apply_top_p(probs.log()[None], 0.3)).sum() == 1
    assert torch.isfinite(apply_top_p(probs.log()[None], 1.0)).all()


def test_top_k_and_temperature_on_a_known_distribution():
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    logits = probs.log().repeat(20_000, 1)
    sequences = torch.zeros(20_000, 1, dtype=torch.long)
    drawn = choose_next_tokens(logits, sequences, GenerationConfig(top_k=2), torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 2}
    assert (drawn == 1).float().mean().item() == pytest.approx(0.5 / 0.8, abs=0.015)
    # Temperature T reweights p to p^(1/T): T = 0.5 squares the probabilities.
    drawn = choose_next_tokens(logits, sequences, GenerationConfig(temperature=0.5), torch.Generator().manual_seed(1))
    squared = probs**2 / (probs**2).sum()
    torch.testing.assert_close(torch.bincount(drawn, minlength=4).float() / len(drawn), squared, atol=0.015, rtol=0)
    greedy = choose_next_tokens(logits[:3], sequences[:3], GenerationConfig(temperature=0), None)
    assert greedy.tolist() == [1, 1, 1]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[0, 1, 1]])
    penalised = apply_repetition_penalty(logits, seen, 2.0)
    assert penalised.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert apply_repetition_penalty(logits, seen, 1.0) is logits
    # Greedy decoding turns away from a seen token once the penalty outweighs its lead.
    config = GenerationConfig(temperature=0, repetition_penalty=2.0)
    assert choose_next_tokens(torch.tensor([[3.0, 2.0]]), torch.tensor([[0]]), config, None).tolist() == [1]
    assert choose_next_tokens(torch.tensor([[3.0, 2.0]]), torch.tensor([[1]]), config, None).tolist() == [0]


def banned_by_brute_force(sequence: list[int], n: int) -> set[int]:
    """The tokens t for which sequence + [t] ends in an n-gram that occurs earlier in sequence."""
    grams = {tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)}
    return {t for t in range(VOCAB) if tuple((sequence + [t])[-n:]) in grams} if len(sequence) >= n else set()


def test_no_repeat_ngram_bans_exactly_the_tokens_that_would_repeat_an_ngram():
    generator = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        for length in (0, 1, 2, 5, 9, 16):
            # Few distinct tokens, so that n-grams do repeat.
            sequences = torch.randint(3, (6, length), generator=generator) if length else torch.zeros(6, 0, dtype=torch.long)
            logits = torch.randn(6, VOCAB, generator=generator)
            banned = ban_repeated_ngrams(logits, sequences, n)
            for row in range(6):
                expected = banned_by_brute_force(sequences[row].tolist(), n)
                assert {t for t in range(VOCAB) if banned[row, t] == -math.inf} == expected
                kept = [t for t in range(VOCAB) if t not in expected]
                assert torch.equal(banned[row, kept], logits[row, kept])
    assert ban_repeated_ngrams(logits, sequences, 0) is logits
    # Decoding of a model that loops stops looping: no bigram twice in prompt + output.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=1, n_head=1, n_embd=8))
    prompt = torch.tensor([[1, 2, 3]])

    def decoded(beams: int, n: int) -> list[int]:
        config = GenerationConfig(max_new_tokens=20, temperature=0, num_beams=beams, no_repeat_ngram_size=n)
        if beams > 1:
            return beam_search(model, prompt, config)[0][0].tolist()
        return prompt[0].tolist() + [int(t[0]) for t in generate_tokens(model, prompt, config)]

    def repeats(tokens: list[int]) -> int:
        bigrams = [tuple(tokens[i : i + 2]) for i in range(len(tokens) - 1)]
        return len(bigrams) - len(set(bigrams))

    for beams in (1, 3):
        assert repeats(decoded(beams, 0)) > 0  # this model loops
        assert repeats(decoded(beams, 2)) == 0


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"temperature": -0.5}, "temperature"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": 1.5}, "no_repeat_ngram_size"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"num_beams": 3, "top_p": 0.9}, "beam search"),
        ({"num_beams": 2, "num_return_sequences": 3}, "at most"),
        ({"temperature": 0, "num_return_sequences": 2}, "greedy"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_invalid_generation_settings(settings, needle):
    with pytest.raises(GenlabError, match=needle):
        GenerationConfig(**settings)


def test_one_stop_string_is_not_split_into_characters():
    assert GenerationConfig(stop="END").stop == ("END",)
    assert GenerationConfig(stop=["\n\n", "END"]).stop == ("\n\n", "END")


# ----------------------------------------------------------------------------- text: stop strings, streaming


class ListTokenizer:
    """A tokenizer whose tokens are whole strings, to place stop strings across token boundaries."""

    kind = "test"
    default_prompt = "\n"

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def decode(self, ids) -> str:
        return "".join(self.pieces[i] for i in ids)


def push_all(continuation: Continuation, ids: list[int]) -> list[str]:
    released = []
    for i in ids:
        released.append(continuation.push(i))
        if continuation.done:
            break
    if not continuation.done:
        released.append(continuation.close())
    return released


def test_stop_strings_cut_the_text_and_hold_back_possible_beginnings():
    tokenizer = ListTokenizer(["ab", "c", "\n", "\nE", "ND", "x"])
    continuation = Continuation(tokenizer, stop=("\n\nEND",))
    released = push_all(continuation, [0, 1, 2, 3, 4, 5])
    # "abc" is final at once; "\n" and "\n\nE" might begin the stop string and wait.
    assert released == ["ab", "c", "", "", ""]
    assert continuation.text == "abc" and continuation.done
    assert continuation.stopped and continuation.tokens == 5  # the stop string ended it, at its 5th token
    # A near miss releases the held text when it stops matching.
    continuation = Continuation(tokenizer, stop=("\n\nEND",))
    assert push_all(continuation, [1, 2, 5, 0]) == ["c", "", "\nx", "ab", ""]
    assert continuation.text == "c\nxab" and not continuation.stopped and continuation.tokens == 4


def test_byte_streams_release_whole_characters_only():
    text = "héllo wörld 😀 ∑x"
    continuation = Continuation(ByteTokenizer())
    released = push_all(continuation, list(text.encode("utf-8")))
    assert "".join(released) == text
    assert all("\ufffd" not in piece for piece in released)
    assert "" in released  # the multi-byte characters waited for their last byte


def test_stream_and_generate_agree_and_stop():
    model = tiny_gpt(block_size=32)
    model.tokenizer = CharTokenizer(list("abcdefghij\n"))
    config = GenerationConfig(max_new_tokens=30, temperature=0.9, seed=4)
    full = generate(model, "abc", config)[0]
    assert "".join(stream(model, "abc", config)) == full and len(full) == 30
    stop = full[10:12]
    stopped = generate(model, "abc", GenerationConfig(max_new_tokens=30, temperature=0.9, seed=4, stop=(stop,)))[0]
    assert stopped == full[: full.index(stop)]
    streamed = stream(model, "abc", GenerationConfig(max_new_tokens=30, temperature=0.9, seed=4, stop=(stop,)))
    assert "".join(streamed) == stopped
    # continuations: the same texts, each piece as it became final, and why and when each ended.
    pieces = []
    rows, prompt_length = continuations(model, "abc", GenerationConfig(max_new_tokens=30, temperature=0.9, seed=4,
                                                                      stop=(stop,)),
                                        on_piece=lambda i, piece: pieces.append((i, piece)))
    assert prompt_length == 3 and rows[0].text == stopped and rows[0].stopped
    assert rows[0].tokens == full.index(stop) + len(stop)  # one token per character, up to the stop string's end
    assert {i for i, _ in pieces} == {0} and "".join(p for _, p in pieces) == stopped
    calls = []
    short, _ = continuations(model, "abc", config, keep_going=lambda: len(calls) < 7 and not calls.append(1))
    assert short[0].text == full[:7] and not short[0].stopped and short[0].tokens == 7
    with pytest.raises(GenlabError, match="one sequence"):
        next(stream(model, "abc", GenerationConfig(num_return_sequences=2)))
    beams = generate(model, "abc", GenerationConfig(max_new_tokens=5, num_beams=3, num_return_sequences=2))
    assert len(beams) == 2 and all(len(b) == 5 for b in beams)


def test_prompt_longer_than_the_context_is_truncated_with_a_warning(capsys):
    model = tiny_gpt(block_size=16)
    model.tokenizer = CharTokenizer(list("abcdefghij\n"))
    long_prompt = "abcdefghij" * 5  # 50 tokens, window 16
    text = generate(model, long_prompt, GenerationConfig(max_new_tokens=5, temperature=0))[0]
    assert len(text) == 5
    assert "longer than the model's context window of 16" in capsys.readouterr().err
    # The model reads only the prompt's last 12 tokens (3/4 of the window): same result as that prompt.
    assert generate(model, long_prompt[-12:], GenerationConfig(max_new_tokens=5, temperature=0))[0] == text
    with pytest.raises(GenlabError, match="never seen"):
        generate(model, "xyz", GenerationConfig(max_new_tokens=5))


def test_a_model_without_tokenizer_says_how_to_get_one():
    with pytest.raises(GenlabError, match="tokenizer"):
        generate(tiny_gpt(), "abc")
    assert math.isfinite(tiny_gpt().token_log_likelihoods(PROMPT[None]).sum().item())
