"""The text-pairs data kind: translation and dialogue (source -> target), for the encoder–decoder
families (seq2seq, gru-attention). The data sets and their tokenizer are genlab/data/pairs.py.

`genlab eval MODEL` decodes the held-out sources (the test split, or `--against val`) with beam
search (4 beams, GNMT length penalty 0.6, up to the model's longest target) and scores the
outputs against the references with sacreBLEU, called as it is, never re-implemented:

    BLEU    corpus BLEU (Papineni et al. 2002): the geometric mean of 1..4-gram precisions times
            a brevity penalty, 0-100. Tokenised by sacreBLEU's "zh" tokenizer where the targets
            are Chinese (each Han character a token), "13a" (the WMT standard) otherwise.
    chrF    character 6-gram F-score (Popović 2015), 0-100: credits near misses ("went"/"goes")
            and needs no word segmentation.

Both signatures (the settings and the sacreBLEU version that make a score reproducible) go into
metrics.json beside the scores. With them, the teacher-forced likelihood of the same references
(nats per target token and perplexity: how well the model predicts the reference, independent of
decoding), and for dialogue data the diversity of the responses (distinct-1/2) and their mean
length beside the references'. -n N scores a seeded sample of N sentences.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import from_dict
from ..data.pairs import (PAIR_DATASETS, PairData, PairDataSpec, load_pair_data, load_pair_tokenizer,
                          pair_dataset_status)
from ..data.splits import parse_against
from ..errors import GenlabError
from ..metrics.text import distinct_n
from ..registry import Catalogue, DataKind, register_data_kind
from ..tasks.textpairs import decode_sources, is_dialogue_data
from ..tensors import eval_mode

EVAL_BEAMS = 4
EVAL_LENGTH_PENALTY = 0.6
EVAL_BATCH = 64  # sources per decoding batch, pairs per likelihood batch
METRIC_GROUPS = ("bleu", "likelihood")  # --metrics: the decoded outputs' scores; the references' likelihood
EXAMPLES_KEPT = 3
# Spec settings that describe the data set itself, not only how it is read: dropped when
# evaluating against another data set (--against pairs:other.tsv).
OWN_DATA_KEYS = ("direction", "source_column", "target_column", "delimiter", "split_column", "context_turns",
                 "speaker_tags")


def load(spec: PairDataSpec, resumed_run: Path | None) -> PairData:
    # A resumed run keeps the tokenizer it started with: its weights are tied to those ids.
    data = load_pair_data(spec, tokenizer=load_pair_tokenizer(resumed_run) if resumed_run is not None else None)
    # Throughput in tokens (genlab.train's tokens_per_s): real source + target tokens per pair of
    # the training split, padding excluded. Kept on the spec object (not one of its fields).
    spec.__dict__["tokens_per_pair"] = float((data.train.src_len + data.train.tgt_len).double().mean())
    return data


def tokens_per_example(spec: PairDataSpec) -> float:
    return spec.__dict__.get("tokens_per_pair", 0.0)


# ----------------------------------------------------------------------------- metrics


def translation_scores(hypotheses: list[str], references: list[str], target_language: str | None) -> dict:
    """sacreBLEU's corpus BLEU and chrF of `hypotheses` against one reference each, with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(tokenize="zh" if target_language == "zh" else "13a")
    chrf = CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_details": {"precisions": [round(p, 4) for p in b.precisions], "brevity_penalty": round(b.bp, 4),
                             "hypothesis_length": b.sys_len, "reference_length": b.ref_len}}


@torch.no_grad()
def reference_likelihood(model, data: PairData, split: str, indices: np.ndarray, progress: bool = False) -> dict:
    """The teacher-forced NLL of the references given their sources: nats per target token (EOS
    included, padding not), its perplexity, and nats per sentence."""
    from tqdm import tqdm

    total, tokens = 0.0, 0
    with eval_mode(model):
        for start in tqdm(range(0, len(indices), EVAL_BATCH), disable=not progress, unit="batch",
                          desc=f"likelihood ({split})", leave=False):
            batch = data.batch(split, indices[start : start + EVAL_BATCH])
            src, tgt = batch["src"].to(model.device), batch["tgt"].to(model.device)
            total -= model.target_log_likelihood(src, tgt).double().sum().item()
            tokens += int((tgt[:, 1:] != model.config.pad_id).sum())
    loss = total / max(tokens, 1)
    return {"sentences": len(indices), "target_tokens": tokens, "loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "nll_per_sentence": total / max(len(indices), 1)}


def response_statistics(texts: list[str]) -> dict:
    """Dialogue responses: distinct-1/2 (None where undefined) and the mean length in words."""
    stats: dict = {}
    for n in (1, 2):
        try:
            stats[f"distinct-{n}"] = distinct_n(texts, n)
        except GenlabError:  # no text with n words
            stats[f"distinct-{n}"] = None
    stats["mean_words"] = sum(len(t.split()) for t in texts) / max(len(texts), 1)
    return stats


# ----------------------------------------------------------------------------- genlab eval


def _data_for(model, against: str | None) -> tuple[PairData, str, str]:
    config = model.artifact_config
    own = config["data"]["name"]
    data_name, split = parse_against(against, own)
    values = dict(config["data"]) if data_name == own else \
        {key: value for key, value in config["data"].items() if key not in OWN_DATA_KEYS}
    spec = from_dict(PairDataSpec, {**values, "name": data_name}, "data")
    return load_pair_data(spec, tokenizer=model.tokenizer), data_name, split


def _groups(metrics) -> tuple[str, ...]:
    if metrics is None:
        return METRIC_GROUPS
    unknown = [g for g in metrics if g not in METRIC_GROUPS]
    if unknown:
        raise GenlabError(f"unknown metric group {unknown[0]!r} for a text-pair model",
                          f"use {', '.join(METRIC_GROUPS)} (BLEU and chrF of the outputs; the references' likelihood)")
    return tuple(metrics)


def evaluate_pairs(model, *, against: str | None = None, n: int | None = None, seed: int = 0,
                   metrics: tuple[str, ...] | None = None, features: str | None = None, progress: bool = True,
                   num_beams: int = EVAL_BEAMS, length_penalty: float = EVAL_LENGTH_PENALTY,
                   no_repeat_ngram_size: int = 0, **_) -> dict:
    """BLEU and chrF of beam-search outputs on a held-out split, and the references' likelihood."""
    from ..sampling.seq2seq import Seq2SeqGenerationConfig

    if features is not None:
        raise GenlabError("--features applies to image models; a text-pair model has no feature network")
    model.require("translate", "the translation metrics")
    groups = _groups(metrics)
    data, data_name, split = _data_for(model, against)
    part = data.split(split)
    if len(part) == 0:
        raise GenlabError(f"the {split} split of {data_name} is empty", "evaluate against another split")
    indices = np.arange(len(part))
    if n is not None and n < len(part):  # a seeded sample, in split order
        indices = np.sort(np.random.default_rng(seed).choice(len(part), n, replace=False))
    result: dict = {"data": f"{data_name}:{split}", "seed": seed, "sentences": len(indices), "split_size": len(part),
                    "direction": data.spec.direction, "dialogue": data.is_dialogue,
                    "target_language": data.target_language or "other"}
    if "bleu" in groups:
        config = Seq2SeqGenerationConfig(num_beams=num_beams, length_penalty=length_penalty,
                                         no_repeat_ngram_size=no_repeat_ngram_size,
                                         max_new_tokens=model.config.max_target_len)
        sources = [part.src[i, : part.src_len[i]].tolist() for i in indices]
        hypotheses = decode_sources(model, sources, config, progress=progress, desc=f"translating {split}")
        outputs = [model.target_text(h[0].tokens) for h in hypotheses]
        references = [part.targets[i] for i in indices]
        result["decoding"] = {"num_beams": num_beams, "length_penalty": length_penalty,
                              "no_repeat_ngram_size": no_repeat_ngram_size,
                              "max_new_tokens": config.max_new_tokens,
                              "unfinished": sum(not h[0].finished for h in hypotheses)}
        result["scores"] = translation_scores(outputs, references, data.target_language)
        if data.is_dialogue:
            result["responses"] = {"model": response_statistics(outputs), "references": response_statistics(references)}
        result["examples"] = [{"source": part.sources[i], "reference": references[k], "output": outputs[k]}
                              for k, i in enumerate(indices[:EXAMPLES_KEPT])]
    if "likelihood" in groups:
        result["likelihood"] = reference_likelihood(model, data, split, indices, progress)
    return result


def report(result: dict) -> list[str]:
    direction = f" ({result['direction'].replace('-', ' -> ')})" if result.get("direction") else ""
    lines = [f"{result['data']}{direction}: {result['sentences']:,} of {result['split_size']:,} sentences"
             + (f" (a sample, seed {result['seed']})" if result["sentences"] < result["split_size"] else "")]
    if "scores" in result:
        d, s = result["decoding"], result["scores"]
        lines.append(f"  outputs: beam {d['num_beams']}, length penalty {d['length_penalty']:g}, "
                     + (f"no repeated {d['no_repeat_ngram_size']}-grams, " if d.get("no_repeat_ngram_size") else "")
                     + "up to "
                     f"{d['max_new_tokens']} tokens" + (f" ({d['unfinished']} reached that limit)" if d["unfinished"] else ""))
        lines.append(f"  {'BLEU':<6}{s['bleu']:>7.2f}   sacreBLEU {s['bleu_signature']}")
        lines.append(f"  {'chrF':<6}{s['chrf']:>7.2f}   sacreBLEU {s['chrf_signature']}")
        lines.append("  BLEU: 1-4-gram precision against the reference times a brevity penalty, over the whole "
                     "corpus; chrF: character n-gram F-score (credits near misses); both 0-100, higher is better")
    if "likelihood" in result:
        lk = result["likelihood"]
        lines.append(f"  references' likelihood (teacher-forced, {lk['target_tokens']:,} target tokens): "
                     f"{lk['loss']:.4f} nats/token, perplexity {lk['perplexity']:.2f}")
    if "responses" in result:
        lines.append(f"  {'responses':<12}{'distinct-1':>11}{'distinct-2':>11}{'words':>8}")
        for who, stats in result["responses"].items():
            shown = [f"{stats[k]:>11.4f}" if stats[k] is not None else f"{'n/a':>11}" for k in ("distinct-1", "distinct-2")]
            lines.append(f"  {who:<12}{''.join(shown)}{stats['mean_words']:>8.1f}")
    for example in result.get("examples", []):
        lines += [f"  source:    {example['source']}", f"  reference: {example['reference']}",
                  f"  output:    {example['output']}"]
    return lines


# ----------------------------------------------------------------------------- the other commands


def translate_instead(model, options: dict) -> None:
    model_dir = options["model_dir"]
    if is_dialogue_data((model.artifact_config or {}).get("data")):
        raise GenlabError(f"{model_dir} is a dialogue model: it answers a conversation rather than drawing samples",
                          f"genlab chat {model_dir} (or --once \"text\" for one reply)")
    raise GenlabError(f"{model_dir} is a translation model: it translates a text rather than drawing samples",
                      f'genlab translate {model_dir} "text to translate" (or lines from a file: --input FILE)')


def next_steps(run_dir) -> str:
    from ..artifact import read_config

    try:
        dialogue = is_dialogue_data(read_config(run_dir).get("data"))
    except GenlabError:
        dialogue = False
    if dialogue:
        return f"next: genlab chat {run_dir}   |   genlab eval {run_dir}"
    return f'next: genlab translate {run_dir} "text"   |   genlab eval {run_dir}'


PAIRS = register_data_kind(DataKind(
    name="pairs",
    spec_class=PairDataSpec,
    load=load,
    catalogue=Catalogue("text pairs: translation and dialogue (seq2seq, gru-attention; genlab translate, genlab chat)",
                        PAIR_DATASETS, pair_dataset_status),
    evaluate=evaluate_pairs,
    report=report,
    sample=translate_instead,
    next_steps=next_steps,
    endpoint=None,
    tokens_per_example=tokens_per_example,
))
