"""The music-events data kind: pieces as NOTE_ON / NOTE_OFF / TIME_SHIFT tokens, evaluated by
held-out nats per event and musical statistics beside the data; `genlab compose` writes pieces."""

from __future__ import annotations

from ..data.music import MUSIC_DATASETS, MusicDataSpec, load_music_data, music_dataset_status
from ..errors import GenlabError
from ..evaluation import evaluate_music
from ..registry import Catalogue, DataKind, register_data_kind


def report(result: dict) -> list[str]:
    lines = []
    if "likelihood" in result:
        lines.append(f"held-out pieces of {result['data']} (every event scored once, in windows of the model's context)")
        lines.append(f"  {'split':<8}{'events':>10}{'nats/event':>12}{'perplexity':>12}")
        lines += [f"  {split:<8}{row['events']:>10,}{row['loss']:>12.4f}{row['perplexity']:>12.3f}"
                  for split, row in result["likelihood"].items()]
    if "samples" in result:
        samples = result["samples"]
        lines.append(f"{samples['n']} samples of {samples['bars']} bars (temperature 1, seed {result['seed']}) beside "
                     f"the {samples['reference_split']} pieces")
        lines.append(f"  {'statistic':<38}{'samples':>10}{'data':>10}")
        lines += [f"  {key:<38}{samples['statistics'][key]:>10.3f}{samples['reference'][key]:>10.3f}"
                  for key in ("notes_per_bar", "polyphony", "in_key_ratio", "mean_note_quarters")]
        lines.append(f"  {'distance to the data':<38}{'samples':>10}{'floor':>10}")
        lines += [f"  {key:<38}{samples['distances'][key]:>10.3f}{samples['floor'][key]:>10.3f}"
                  for key in ("pitch_class_distance", "pitch_class_distance_key_normalized", "note_length_distance")]
        lines.append("  distances: total variation, 0 = same distribution; floor: the train pieces against the same pieces")
    return lines


def compose_instead(model, options: dict) -> None:
    """Music models compose pieces rather than drawing image grids (shared by the piano-roll kind)."""
    model_dir = options["model_dir"]
    raise GenlabError(f"{model_dir} is a music model: it composes pieces rather than image grids",
                      f"genlab compose {model_dir} --bars 16 -o piece.mid")


def next_steps(run_dir) -> str:
    return f"next: genlab compose {run_dir} --bars 16 --seed 0 -o piece.mid"


MUSIC = register_data_kind(DataKind(
    name="music",
    spec_class=MusicDataSpec,
    load=lambda spec, resumed_run: load_music_data(spec),
    catalogue=Catalogue("music events (gpt-music, lstm-music; genlab compose)", MUSIC_DATASETS, music_dataset_status),
    evaluate=evaluate_music,
    report=report,
    sample=compose_instead,
    next_steps=next_steps,
    endpoint="/v1/music/compositions",
))
