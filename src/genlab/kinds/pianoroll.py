"""The piano-roll data kind: 88-key frames (JSB Chorales), evaluated by frame-level NLL; pieces
come from `genlab compose` as for event models."""

from __future__ import annotations

from ..data.jsb import PIANOROLL_DATASETS, PianoRollDataSpec, load_pianoroll_data, pianoroll_dataset_status
from ..evaluation import evaluate_pianoroll
from ..registry import Catalogue, DataKind, register_data_kind
from .music import compose_instead, next_steps


def report(result: dict) -> list[str]:
    row = result["frame_nll"]
    return [f"frame-level NLL on {result['data']} ({row['pieces']} pieces, {row['frames']} frames; nats per frame)",
            f"  every frame {row['nll_per_frame']:.4f}   without each piece's first {row['nll_per_frame_after_first']:.4f}"]


PIANOROLL = register_data_kind(DataKind(
    name="pianoroll",
    spec_class=PianoRollDataSpec,
    load=lambda spec, resumed_run: load_pianoroll_data(spec),
    catalogue=Catalogue("piano-roll frames (pianoroll: lstm-jsb, rnn-nade-jsb)", PIANOROLL_DATASETS,
                        pianoroll_dataset_status),
    evaluate=evaluate_pianoroll,
    report=report,
    sample=compose_instead,
    next_steps=next_steps,
    endpoint="/v1/music/compositions",
))
