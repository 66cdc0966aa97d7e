"""Translation and chat with the encoder–decoder families (seq2seq, gru-attention) on text pairs.

    translate(model, texts)          beam search (4 beams) or sampling; n-best lists
    chat(model, messages)            the next assistant turn of a conversation
    chat_stream(model, messages)     the same, as text pieces while they are decoded

A translation model was trained on translation pairs (tatoeba-cmn, pairs:FILE), a dialogue model on
conversations (sgd, dialogue:FILE); each refuses the other's job with the command to use. Messages
are dicts {"role", "content"} (OpenAI's chat shape) or (role, text) pairs, roles user and assistant,
the last one the user's; a "system" message is set aside with a notice (these models take no
instructions). The model sees the last `data.context_turns` turns it was trained with, each after
its speaker tag; older turns are dropped with a notice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import from_dict
from ..data.pairs import dialogue_source_ids, translation_source_ids
from ..errors import GenlabError, warn
from ..limits import check_range
from ..sampling.seq2seq import Seq2SeqGenerationConfig, seq2seq_generate, seq2seq_stream

TRANSLATE_BATCH = 64  # sources decoded together (times the beams: rows in the decoder)
CHAT_ROLES = ("user", "assistant")


def is_dialogue_data(data) -> bool:
    name = data.get("name", "") if isinstance(data, dict) else ""
    return name == "sgd" or name.startswith("dialogue:")


def pair_model(model, *, dialogue: bool):
    """`model` (or the model in that directory), checked to be a translation model (dialogue=False)
    or a dialogue model (dialogue=True), with its tokenizer."""
    if isinstance(model, (str, Path)):
        from ..artifact import load

        model = load(model)
    where = getattr(model, "artifact_dir", None) or "this model"
    purpose = "chat" if dialogue else "translation"
    if getattr(model, "data_kind", None) != "pairs" or "translate" not in model.capabilities:
        instead = {"text": f"; to continue a prompt with it: genlab generate {where} --prompt \"...\""}.get(
            getattr(model, "data_kind", None), "")
        train = "genlab train chat-sgd" if dialogue else "genlab train translate-zh-en (or translate-en-zh)"
        raise GenlabError(f"{purpose} needs a {'dialogue' if dialogue else 'translation'} model; {where} is a "
                          f"{model.family} model of {getattr(model, 'data_kind', '?')} data",
                          f"train one with `{train}`{instead}")
    data = (model.artifact_config or {}).get("data", {})
    if is_dialogue_data(data) != dialogue:
        name = data.get("name", "?") if isinstance(data, dict) else "?"
        if dialogue:
            raise GenlabError(f"{where} is a translation model ({name}): it translates a text rather than answering "
                              "a conversation", f'genlab translate {where} "text"')
        raise GenlabError(f"{where} is a dialogue model ({name}): it answers a conversation rather than translating "
                          "a text", f"genlab chat {where}")
    if model.tokenizer is None:
        raise GenlabError(f"this {model.family} model has no tokenizer, so it cannot read text",
                          "load a trained model with genlab.load(DIR)")
    return model


TRANSLATE_BATCH = 64  # sources decoded together (times the beams: rows in the decoder)


@torch.no_grad()
def decode_sources(model, sources: list, config, *, batch_size: int = TRANSLATE_BATCH, progress: bool = False,
                   desc: str = "translating") -> list:
    """Per source (token ids ending in EOS), its hypotheses (genlab.sampling.seq2seq.Hypothesis,
    best first for beam search): the sources are decoded in batches of similar length (less
    padding) and returned in the order given. One generator, seeded with config.seed, draws for
    every batch when sampling."""
    from tqdm import tqdm


    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    generator = torch.Generator(model.device).manual_seed(config.seed)
    out: list = [None] * len(sources)
    with tqdm(total=len(sources), disable=not progress, unit="sentence", desc=desc, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for i, hypotheses in zip(chunk, seq2seq_generate(model, [sources[i] for i in chunk], config,
                                                             generator=generator)):
                out[i] = hypotheses
            bar.update(len(chunk))
    return out


def translate(model, texts: str | list[str], *, num_beams: int | None = None, n_best: int = 1, max_new_tokens: int | None = None,
              temperature: float = 0.0, top_p: float | None = None, seed: int = 0, length_penalty: float = 0.6,
              no_repeat_ngram_size: int = 0, batch_size: int = TRANSLATE_BATCH, keep_empty: bool = False,
              progress: bool = False) -> list:
    """Translate texts with a translation model (a loaded model or its directory).

    Beam search with num_beams beams (default 4; GNMT length penalty `length_penalty`), or with
    temperature > 0 sampling (num_beams 1, optionally with top_p); no_repeat_ngram_size = n > 0
    never repeats an n-gram of tokens within a translation. Returns one entry per
    text: its translation (a str) when n_best == 1, else its n_best hypotheses, best first, as
    dicts {"text", "score", "log_prob", "finished"} (score: log_prob over the length penalty in
    beam search; finished: it ended before max_new_tokens, default the model's longest target).

    A text longer than the model's source window is cut to it, and characters the vocabulary
    never saw are read as their UTF-8 bytes: each with a notice on stderr. An empty text is an
    error, or (keep_empty=True, as for the blank lines of a file) an empty translation.

        genlab.translate(genlab.load("runs/t"), ["我们走吧。", "你好吗？"])   # ["Let's go.", "How are you?"]
    """
    model = pair_model(model, dialogue=False)
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise GenlabError("texts must be a string or a list of strings")
    texts = list(texts)
    if not texts:
        raise GenlabError("there is no text to translate", "give at least one text")
    if num_beams is None:  # beam search, unless a temperature asks for sampling
        num_beams = 1 if isinstance(temperature, (int, float)) and temperature > 0 else 4
    config = from_dict(Seq2SeqGenerationConfig, {
        "num_beams": num_beams, "num_return_sequences": n_best, "temperature": temperature, "top_p": top_p, "seed": seed,
        "length_penalty": length_penalty, "no_repeat_ngram_size": no_repeat_ngram_size,
        "max_new_tokens": max_new_tokens if max_new_tokens is not None else model.config.max_target_len}, "translation")
    check_range("batch_size", batch_size, 1, 4096)
    sources, cut, unknown, unknown_chars = _translation_sources(model, texts, keep_empty, translation_source_ids)
    if cut:
        warn(f"{cut} text(s) longer than the model's {model.config.max_source_len} source tokens were cut to their "
             f"first {model.config.max_source_len - 1} tokens; the rest is not translated (split long texts into sentences)")
    if unknown:
        shown = ", ".join(repr(c) for c in unknown_chars[:8]) + (", ..." if len(unknown_chars) > 8 else "")
        warn(f"{unknown} character(s) are not in the model's vocabulary ({shown}): each is read as its UTF-8 bytes, "
             "which the model rarely saw in training, so expect a poor translation of them")
    present = [i for i, s in enumerate(sources) if s is not None]
    decoded = decode_sources(model, [sources[i] for i in present], config, batch_size=batch_size, progress=progress)
    results: list = [[] for _ in texts]
    for i, hypotheses in zip(present, decoded):
        ranked = sorted(hypotheses, key=lambda h: -h.score)  # sampling returns them in the order drawn
        results[i] = [{"text": model.target_text(h.tokens), "score": h.score, "log_prob": h.log_prob,
                       "finished": h.finished} for h in ranked]
    unfinished = sum(not r[0]["finished"] for r in results if r)
    if unfinished:
        warn(f"{unfinished} translation(s) reached max_new_tokens={config.max_new_tokens} before ending")
    return [(r[0]["text"] if r else "") for r in results] if n_best == 1 else results


def _translation_sources(model, texts: list[str], keep_empty: bool, source_ids) -> tuple[list, int, int, list[str]]:
    """Each text's source ids (None for an empty text kept as such), how many were cut, and the
    count and the distinct characters the vocabulary lacks."""
    tokenizer, longest = model.tokenizer, model.config.max_source_len
    sources, cut, unknown, unknown_chars = [], 0, 0, {}
    for i, text in enumerate(texts):
        if not tokenizer.normalize(text):
            if not keep_empty:
                which = "the text" if len(texts) == 1 else f"text {i + 1} of {len(texts)}"
                raise GenlabError(f"{which} to translate is empty", "give some text (whitespace alone does not count)")
            sources.append(None)
            continue
        ids, was_cut = source_ids(tokenizer, text, longest)
        cut += was_cut
        count = tokenizer.unknown_count(ids)  # of what is translated (a cut text's kept part)
        if count:
            unknown += count
            unknown_chars.update(dict.fromkeys(tokenizer.unknown_characters(text)))
        sources.append(ids.tolist())
    if all(s is None for s in sources):
        raise GenlabError("there is no text to translate: every line is empty", "give some text")
    return sources, cut, unknown, list(unknown_chars)


# ----------------------------------------------------------------------------- chat


def chat_turns(messages) -> list[tuple[str, str]]:
    """(role, text) pairs from OpenAI-shaped messages or pairs; system messages set aside with a
    notice; a clear error for anything else."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise GenlabError("messages must be a list of {\"role\", \"content\"} messages",
                          'e.g. [{"role": "user", "content": "I need a table for two tonight"}]')
    turns, system = [], 0
    for k, message in enumerate(messages, 1):
        if isinstance(message, dict):
            role, content = message.get("role"), message.get("content")
        elif isinstance(message, (list, tuple)) and len(message) == 2:
            role, content = message
        else:
            raise GenlabError(f"message {k} is neither a {{\"role\", \"content\"}} dict nor a (role, text) pair")
        if role == "system":
            system += 1
            continue
        if role not in CHAT_ROLES:
            raise GenlabError(f"message {k} has the role {role!r}", "use user or assistant (or system, which is set aside)")
        if not isinstance(content, str):
            raise GenlabError(f"message {k}'s content is not text", "give each message's content as a string")
        turns.append((role, content))
    if system:
        warn(f"{system} system message(s) set aside: this dialogue model takes no instructions, only the conversation")
    if not turns:
        raise GenlabError("the conversation is empty", "give at least one user message")
    if turns[-1][0] != "user":
        raise GenlabError("the last message is the assistant's, so there is nothing to answer",
                          "end the conversation with a user message")
    if not turns[-1][1].strip():
        raise GenlabError("the last user message is empty", "say something (whitespace alone does not count)")
    return turns


def _chat_source(model, messages) -> list[int]:
    turns = chat_turns(messages)
    data = model.artifact_config["data"]
    context = data.get("context_turns") or len(turns)
    if len(turns) > context:
        warn(f"the model reads the last {context} turns (data.context_turns of its training); "
             f"the {len(turns) - context} before them are not seen")
    ids, cut = dialogue_source_ids(model.tokenizer, turns, model.config.max_source_len, context,
                                   data.get("speaker_tags", True) is not False)
    if cut:
        warn(f"the conversation is longer than the model's {model.config.max_source_len} source tokens: "
             "its oldest turns (or the start of the newest) were left out")
    unknown = model.tokenizer.unknown_count(ids)
    if unknown:
        warn(f"{unknown} character(s) are not in the model's vocabulary: each is read as its UTF-8 bytes")
    return ids.tolist()


def _chat_config(model, temperature, top_p, max_new_tokens, seed, num_beams=1) -> Seq2SeqGenerationConfig:
    return from_dict(Seq2SeqGenerationConfig, {
        "num_beams": num_beams, "temperature": temperature, "top_p": top_p, "seed": seed,
        "max_new_tokens": max_new_tokens if max_new_tokens is not None else model.config.max_target_len}, "chat")


def chat(model, messages, *, temperature: float = 0.0, top_p: float | None = None, max_new_tokens: int | None = None,
         seed: int = 0, num_beams: int = 1) -> str:
    """The assistant's reply to `messages` (greedy by default; temperature > 0 samples, num_beams > 1
    searches). `model`: a loaded dialogue model or its directory.

        genlab.chat(genlab.load("runs/chat"), [{"role": "user", "content": "Find me a bus to Fresno"}])
    """
    model = pair_model(model, dialogue=True)
    config = _chat_config(model, temperature, top_p, max_new_tokens, seed, num_beams)
    hypotheses = seq2seq_generate(model, [_chat_source(model, messages)], config)[0]
    best = max(hypotheses, key=lambda h: h.score)
    return model.target_text(best.tokens)


def chat_stream(model, messages, *, temperature: float = 0.0, top_p: float | None = None,
                max_new_tokens: int | None = None, seed: int = 0) -> Iterator[str]:
    """chat's reply (greedy or sampled, the same text for the same settings) as pieces of text while
    it is decoded: their concatenation is chat's return value. A piece is held back while the
    tokens so far end inside a multi-byte character."""
    model = pair_model(model, dialogue=True)
    yield from ChatDecoding.start(model, messages, temperature, top_p, max_new_tokens, seed).pieces()


@dataclass
class ChatDecoding:
    """One reply being decoded: its source ids, settings and the tokens so far (what a server needs
    beside the text: token counts and whether the turn ended or ran out of max_new_tokens)."""
    model: object
    source: list[int]
    config: Seq2SeqGenerationConfig
    tokens: list[int] = field(default_factory=list)
    sent: str = ""  # the text the pieces so far add up to

    @classmethod
    def start(cls, model, messages, temperature=0.0, top_p=None, max_new_tokens=None, seed=0) -> ChatDecoding:
        config = _chat_config(model, temperature, top_p, max_new_tokens, seed)
        return cls(model, _chat_source(model, messages), config)

    def pieces(self) -> Iterator[str]:
        """The reply's text in pieces, one per decoded token that completes text."""
        generator = torch.Generator(self.model.device).manual_seed(self.config.seed)
        for token in seq2seq_stream(self.model, self.source, self.config, generator=generator):
            self.tokens.append(token)
            text = self.text
            if not text.endswith("\ufffd"):  # else an unfinished character: wait for its next bytes
                yield from self.rest(text)
        yield from self.rest()

    def rest(self, text: str | None = None) -> Iterator[str]:
        """What the tokens decoded so far (their `text`) add to the pieces sent; nothing while a
        detokenizer rewrites earlier text."""
        text = self.text if text is None else text
        if text.startswith(self.sent) and len(text) > len(self.sent):
            piece, self.sent = text[len(self.sent):], text
            yield piece

    @property
    def text(self) -> str:
        return self.model.target_text(self.tokens)

    @property
    def finish_reason(self) -> str:
        """'length' when max_new_tokens ran out first, else 'stop' (the model ended its turn)."""
        return "length" if len(self.tokens) >= self.config.max_new_tokens else "stop"
