"""Decoding's numerical safety and GenerationConfig's bounds: extreme temperatures, top-p and
repetition penalties give valid distributions (closed forms, no NaN), and every option out of
its bounds is a GenlabError naming it, before anything is allocated."""

from __future__ import annotations

import math
import time

import pytest
import torch

from genlab.errors import GenlabError
from genlab.limits import MAX_BEAMS, MAX_CLI_NEW_TOKENS, MAX_SEED, MAX_TEXT_SAMPLES
from genlab.models.transformer import GPT, GPTConfig
from genlab.sampling import (
    MIN_TEMPERATURE,
    GenerationConfig,
    apply_repetition_penalty,
    apply_top_p,
    beam_search,
    choose_next_tokens,
    generate_tokens,
    next_token_probabilities,
)
from genlab.sampling.decoding import LOGIT_BOUND, MAX_TOP_K

LOGITS = torch.tensor([[2.0, -1.0, 0.0, 3.0, 1.0], [0.5, 4.0, -2.0, 1.0, 3.9]])
NO_HISTORY = torch.zeros(2, 0, dtype=torch.long)  # no repetition penalty applies
SEEN = torch.tensor([[0, 1, 2], [0, 1, 2]])  # tokens 0, 1, 2 already in both sequences


def probabilities(config: GenerationConfig, logits=LOGITS, sequences=NO_HISTORY) -> torch.Tensor:
    probs = next_token_probabilities(logits, sequences, config)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(logits)), atol=1e-5, rtol=0)
    return probs


def one_hot(index: list[int], size: int = 5) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), size).float()


def draws(config: GenerationConfig, logits=LOGITS, sequences=NO_HISTORY, seed: int = 0) -> list[int]:
    return choose_next_tokens(logits, sequences, config, torch.Generator().manual_seed(seed)).tolist()


# ----------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-30, 1e-8, MIN_TEMPERATURE / 2])
def test_a_temperature_below_the_floor_is_exactly_greedy(temperature):
    config = GenerationConfig(temperature=temperature)
    assert config.greedy
    greedy = GenerationConfig(temperature=0)
    assert draws(config) == draws(greedy) == [3, 1]  # the argmax of each row
    torch.testing.assert_close(probabilities(config), one_hot([3, 1]), atol=0, rtol=0)
    # Rows 1's top two logits (4.0, 3.9) are close: any real sampling would sometimes pick 4.
    assert {draws(config, seed=s)[1] for s in range(50)} == {1}


def test_greedy_below_the_floor_matches_temperature_zero_on_a_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    prompt = torch.tensor([[1, 2, 3]])

    def run(**settings):
        return torch.stack(list(generate_tokens(model, prompt, GenerationConfig(max_new_tokens=20, **settings)))).tolist()

    assert run(temperature=1e-300) == run(temperature=0) == run(temperature=1e-300, top_p=1e-300, top_k=3)


@pytest.mark.parametrize("temperature", [MIN_TEMPERATURE, 1e-3, 0.5, 1.0, 2.0, 1e6, 1e300])
def test_probabilities_are_the_softmax_of_logits_over_temperature(temperature):
    config = GenerationConfig(temperature=temperature)
    assert not config.greedy
    expected = (LOGITS.double() / temperature).softmax(-1).float()
    torch.testing.assert_close(probabilities(config), expected, atol=1e-6, rtol=1e-5)


def test_temperature_on_huge_logits_does_not_overflow():
    # Near float32's limit (3.4e38): logits / T would be inf, (logits - max) / T is not.
    logits = torch.tensor([[3e38, -3e38, 2.9e38, 0.0], [1e30, 1e30 - 1e24, -1e38, 5.0]])
    config = GenerationConfig(temperature=MIN_TEMPERATURE)
    torch.testing.assert_close(probabilities(config, logits, NO_HISTORY), one_hot([0, 0], 4), atol=0, rtol=0)
    assert draws(config, logits, NO_HISTORY) == [0, 0]


# ----------------------------------------------------------------------------- top-p and top-k


@pytest.mark.parametrize("top_p", [1e-300, 5e-324, 1e-12, 0.01])
def test_a_tiny_top_p_keeps_only_the_most_likely_token(top_p):
    config = GenerationConfig(temperature=1.0, top_p=top_p)
    torch.testing.assert_close(probabilities(config), one_hot([3, 1]), atol=0, rtol=0)
    assert {tuple(draws(config, seed=s)) for s in range(20)} == {(3, 1)}
    kept = apply_top_p(LOGITS, top_p)
    assert torch.isfinite(kept).sum(-1).tolist() == [1, 1]


def test_top_p_closed_form():
    # softmax row 0: the top token (3) holds e^3 / Z ~ 0.64; p = 0.7 adds token 0 (0.24) and stops.
    config = GenerationConfig(temperature=1.0, top_p=0.7)
    p = LOGITS[0].double().softmax(-1)
    kept = torch.zeros(5, dtype=torch.double)
    kept[[3, 0]] = p[[3, 0]]
    torch.testing.assert_close(probabilities(config)[0], (kept / kept.sum()).float(), atol=1e-6, rtol=1e-5)


def test_top_k_at_or_above_the_vocabulary_keeps_every_token():
    expected = LOGITS.softmax(-1)
    torch.testing.assert_close(probabilities(GenerationConfig(top_k=5)), expected)
    torch.testing.assert_close(probabilities(GenerationConfig(top_k=MAX_TOP_K)), expected)


# ----------------------------------------------------------------------------- repetition penalty


def test_repetition_penalty_extremes_give_finite_closed_form_probabilities():
    logits = LOGITS[:1]  # [2, -1, 0, 3, 1]; tokens 0, 1, 2 seen
    seen = SEEN[:1]
    # A huge penalty sends seen positive logits to ~0 and seen negative ones to -LOGIT_BOUND:
    # logits [~0, -1e30, 0, 3, 1].
    huge = probabilities(GenerationConfig(repetition_penalty=1e300), logits, seen)
    z = 2 + math.exp(3) + math.exp(1)
    torch.testing.assert_close(huge[0], torch.tensor([1 / z, 0.0, 1 / z, math.exp(3) / z, math.exp(1) / z]))
    # A tiny one sends seen positive logits to +LOGIT_BOUND: token 0 takes all the mass.
    tiny = probabilities(GenerationConfig(repetition_penalty=1e-300), logits, seen)
    torch.testing.assert_close(tiny, one_hot([0]), atol=0, rtol=0)
    penalised = apply_repetition_penalty(logits, seen, 1e-300)
    assert penalised.tolist() == [[pytest.approx(LOGIT_BOUND), 0.0, 0.0, 3.0, 1.0]]  # -1e-300 is -0 in float32
    for penalty in (5e-324, 1e-300, 1e-30, 1e-3, 1e3, 1e30, 1e300, 1.7e308):
        for temperature in (0, 1e-300, MIN_TEMPERATURE, 1.0, 2.0):
            config = GenerationConfig(repetition_penalty=penalty, temperature=temperature)
            probabilities(config, LOGITS, SEEN)
            assert all(0 <= t < 5 for t in draws(config, LOGITS, SEEN))


def test_suppressed_tokens_stay_impossible_under_any_penalty():
    for penalty in (1e-300, 1e300):
        config = GenerationConfig(repetition_penalty=penalty, suppress_tokens=(0,))
        probs = probabilities(config, LOGITS, SEEN)
        assert (probs[:, 0] == 0).all()  # seen token 0 would otherwise hold everything at 1e-300
    with pytest.raises(GenlabError, match="vocabulary has 5 tokens"):
        choose_next_tokens(LOGITS, SEEN, GenerationConfig(suppress_tokens=(5,)), None)


# ----------------------------------------------------------------------------- broken logits


def test_rows_without_a_valid_distribution_fall_back_to_the_argmax_of_the_raw_logits():
    nan, inf = math.nan, math.inf
    logits = torch.tensor([
        [0.0, nan, 1.0, 0.5],  # nan: the argmax of the rest (2)
        [0.0, inf, 1.0, 0.5],  # +inf: that token (1)
        [0.0, 2.0, 1.0, 0.5],  # a good row is drawn as usual
    ])
    for config in (GenerationConfig(), GenerationConfig(temperature=0), GenerationConfig(top_p=0.5),
                   GenerationConfig(temperature=MIN_TEMPERATURE, top_k=2)):
        probs = probabilities(config, logits, torch.zeros(3, 0, dtype=torch.long))
        assert probs[:2].tolist() == one_hot([2, 1], 4).tolist()
        assert draws(config, logits, torch.zeros(3, 0, dtype=torch.long))[:2] == [2, 1]
    good = probabilities(GenerationConfig(), logits, torch.zeros(3, 0, dtype=torch.long))[2]
    torch.testing.assert_close(good, logits[2].softmax(-1))


def test_beam_search_scores_stay_finite_under_extreme_penalties():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    for penalty in (1e-300, 1e300):
        config = GenerationConfig(max_new_tokens=12, num_beams=3, num_return_sequences=3, repetition_penalty=penalty)
        sequences, scores = beam_search(model, torch.tensor([1, 2]), config)
        assert sequences.shape == (3, 14) and torch.isfinite(scores).all()


def test_extreme_settings_generate_on_a_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for settings in ({"temperature": 1e-300}, {"top_p": 1e-300}, {"repetition_penalty": 1e-300},
                     {"repetition_penalty": 1e300}, {"temperature": MIN_TEMPERATURE, "repetition_penalty": 1e300},
                     {"temperature": 1e300, "top_p": 5e-324, "repetition_penalty": 1e-300}):
        config = GenerationConfig(max_new_tokens=12, num_return_sequences=2, **settings)
        drawn = torch.stack(list(generate_tokens(model, prompt, config)))
        assert drawn.shape == (12, 2) and ((0 <= drawn) & (drawn < 7)).all()


def test_the_music_path_decodes_through_the_same_safe_functions():
    from genlab.models.events import MusicGPT, MusicGPTConfig, sample_pieces

    torch.manual_seed(0)
    model = MusicGPT(MusicGPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=32)).eval()
    for temperature, top_p in ((1e-300, None), (1.0, 1e-300), (1e-300, 1e-300), (MIN_TEMPERATURE, 0.5)):
        pieces = sample_pieces(model, 2, bars=1, temperature=temperature, top_p=top_p, seed=MAX_SEED,
                               generator=torch.Generator().manual_seed(MAX_SEED))
        assert len(pieces) == 2 and all(p.length == 16 for p in pieces)


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    "name, value, bound",
    [
        ("seed", -1, "9,223,372,036,854,775,807"),
        ("seed", MAX_SEED + 1, "9,223,372,036,854,775,807"),
        ("seed", 99999999999999999999, "9,223,372,036,854,775,807"),
        ("seed", 2**64, "9,223,372,036,854,775,807"),
        ("seed", 1.5, "9,223,372,036,854,775,807"),
        ("num_beams", 0, f"{MAX_BEAMS:,}"),
        ("num_beams", MAX_BEAMS + 1, f"{MAX_BEAMS:,}"),
        ("num_beams", 10_000_000, f"{MAX_BEAMS:,}"),
        ("num_return_sequences", 0, f"{MAX_TEXT_SAMPLES:,}"),
        ("num_return_sequences", MAX_TEXT_SAMPLES + 1, f"{MAX_TEXT_SAMPLES:,}"),
        ("num_return_sequences", 10_000_000, f"{MAX_TEXT_SAMPLES:,}"),
        ("max_new_tokens", 0, f"{MAX_CLI_NEW_TOKENS:,}"),
        ("max_new_tokens", MAX_CLI_NEW_TOKENS + 1, f"{MAX_CLI_NEW_TOKENS:,}"),
        ("max_new_tokens", 10**30, f"{MAX_CLI_NEW_TOKENS:,}"),
        ("max_new_tokens", 2.5, f"{MAX_CLI_NEW_TOKENS:,}"),
        ("max_new_tokens", True, f"{MAX_CLI_NEW_TOKENS:,}"),
        ("top_k", 0, f"{MAX_TOP_K:,}"),
        ("top_k", MAX_TOP_K + 1, f"{MAX_TOP_K:,}"),
        ("top_k", 10**20, f"{MAX_TOP_K:,}"),
        ("temperature", -1e-300, ">= 0"),
        ("temperature", math.inf, "finite"),
        ("temperature", math.nan, "finite"),
        ("temperature", "hot", "number"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", -0.5, "(0, 1]"),
        ("top_p", 1.0000001, "(0, 1]"),
        ("top_p", math.nan, "finite"),
        ("repetition_penalty", 0.0, "positive"),
        ("repetition_penalty", -2.0, "positive"),
        ("repetition_penalty", math.inf, "finite"),
        ("repetition_penalty", math.nan, "finite"),
    ],
)
def test_each_bound_is_a_genlab_error_naming_the_option(name, value, bound):
    started = time.perf_counter()
    with pytest.raises(GenlabError) as error:
        GenerationConfig(**{name: value})
    assert time.perf_counter() - started < 0.5  # refused before anything is allocated
    assert error.value.message.startswith(name) and bound in error.value.message
    assert error.value.param == name


def test_the_bounds_themselves_are_accepted():
    GenerationConfig(seed=0)
    GenerationConfig(seed=MAX_SEED)
    GenerationConfig(num_beams=MAX_BEAMS, num_return_sequences=MAX_BEAMS)
    GenerationConfig(num_return_sequences=MAX_TEXT_SAMPLES)
    GenerationConfig(max_new_tokens=MAX_CLI_NEW_TOKENS, top_k=MAX_TOP_K, top_p=5e-324)
    GenerationConfig(temperature=1e300, repetition_penalty=5e-324)
    GenerationConfig(repetition_penalty=1.7e308)
    config = GenerationConfig(max_new_tokens=torch.tensor(5).item(), temperature=1)  # python numbers are normalised
    assert type(config.max_new_tokens) is int and type(config.temperature) is float


def test_the_largest_seed_seeds_generation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    config = GenerationConfig(max_new_tokens=5, seed=MAX_SEED)
    first = torch.stack(list(generate_tokens(model, torch.tensor([1, 2]), config))).tolist()
    assert first == torch.stack(list(generate_tokens(model, torch.tensor([1, 2]), config))).tolist()
    # the seed is used: the generator it seeds gives these tokens, and other seeds give others
    seeded = torch.Generator().manual_seed(MAX_SEED)
    assert first == torch.stack(list(generate_tokens(model, torch.tensor([1, 2]), config, generator=seeded))).tolist()
    others = {tuple(torch.stack(list(generate_tokens(model, torch.tensor([1, 2]),
                                                      GenerationConfig(max_new_tokens=5, seed=s)))).flatten().tolist())
              for s in (MAX_SEED - 1, MAX_SEED - 2, 0)}
    assert any(list(o) != [t for row in first for t in row] for o in others)
