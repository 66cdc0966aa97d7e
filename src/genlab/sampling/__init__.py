"""Decoding for autoregressive models: greedy, temperature, top-k, top-p, repetition penalty,
beam search, stop strings and streaming, through the models' KV cache.

    decoding.py   token ids: logits processing, the sampling loop, beam search, the context window
    text.py       strings: prompts, stop strings, streaming text

    import genlab
    from genlab.sampling import GenerationConfig, generate, stream
    model = genlab.load("runs/gpt-shakespeare-char-...")
    texts = generate(model, "ROMEO:", GenerationConfig(max_new_tokens=300, temperature=0.8, top_p=0.95))
    for piece in stream(model, "ROMEO:", GenerationConfig(max_new_tokens=300)):
        print(piece, end="", flush=True)
"""

from .decoding import (
    MIN_TEMPERATURE,
    GenerationConfig,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    ban_repeated_ngrams,
    beam_search,
    choose_next_tokens,
    context_start,
    generate_tokens,
    next_token_logits,
    next_token_probabilities,
)
from .text import Continuation, continuations, generate, prompt_tokens, stream

__all__ = [
    "GenerationConfig", "generate", "stream", "generate_tokens", "beam_search", "choose_next_tokens",
    "next_token_logits", "next_token_probabilities", "apply_repetition_penalty", "apply_temperature",
    "apply_top_k", "apply_top_p", "ban_repeated_ngrams", "context_start", "prompt_tokens", "Continuation", "continuations", "MIN_TEMPERATURE",
]  # fmt: skip

# Encoder–decoder models (translation, dialogue): genlab.sampling.seq2seq.
from .seq2seq import (  # noqa: E402
    Hypothesis,
    Seq2SeqGenerationConfig,
    length_penalty,
    pad_sources,
    seq2seq_beam_search,
    seq2seq_generate,
    seq2seq_generate_tokens,
    seq2seq_stream,
)

__all__ += [
    "Seq2SeqGenerationConfig", "Hypothesis", "length_penalty", "pad_sources", "seq2seq_generate",
    "seq2seq_generate_tokens", "seq2seq_stream", "seq2seq_beam_search",
]  # fmt: skip
