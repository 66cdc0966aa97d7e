"""Music: notes <-> MIDI <-> events, the chorales, event models, compose, musical statistics."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, run_cli

from genlab.data.music import (
    EventVocabulary,
    MusicDataSpec,
    Piece,
    load_music_data,
    load_pieces,
    midi_bytes,
    notes_to_piano_roll,
    piano_roll_to_notes,
    read_midi,
    transpose_events,
    voice_grid,
)
from genlab.errors import GenlabError
from genlab.metrics import music as stats

TINY_GPT = ["data.max_pieces=8", "data.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
            "batch_size=8", "steps=30", "train.eval_every=30", "train.eval_batches=2", "train.warmup_steps=5",
            "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module", autouse=True)
def chorale_cache(tmp_path_factory):
    """The parsed chorales are cached under the data root: keep that cache out of ../shared/data."""
    root = tmp_path_factory.mktemp("music-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_DATA_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory, chorale_cache):
    import genlab

    return genlab.train("gpt-chorales", TINY_GPT, out=tmp_path_factory.mktemp("models") / "gpt-chorales")


@pytest.fixture(scope="module")
def gpt(gpt_dir):
    import genlab

    return genlab.load(gpt_dir)


def hand_piece() -> Piece:
    """Chords, voices crossing, a note longer than max_shift, a long rest, velocity changes."""
    vocabulary = EventVocabulary()
    loud, soft = (int(vocabulary.bin_velocity(b)) for b in (28, 10))
    notes = [
        (60, 0, 4, loud), (64, 0, 4, loud), (67, 0, 8, loud),  # a C major chord, G held
        (62, 4, 6, soft), (60, 6, 8, soft),  # re-attack of C after a D
        (48, 8, 48, loud),  # 40 steps: longer than max_shift (16)
        (72, 8, 9, soft), (71, 9, 10, soft), (72, 10, 12, soft),
        (55, 70, 74, loud),  # after a 22-step rest
    ]
    return Piece.from_notes(notes, steps_per_quarter=4, length=80)


# ----------------------------------------------------------------------------- events and MIDI


def midi_note_ticks(data: bytes) -> list[tuple[int, int, int, int]]:
    """(pitch, start tick, end tick, velocity) read with mido, independently of pretty_midi."""
    import mido

    midi = mido.MidiFile(file=io.BytesIO(data))
    notes, sounding = [], {}
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                sounding[message.note] = (tick, message.velocity)
            elif message.type in ("note_on", "note_off") and message.note in sounding:
                start, velocity = sounding.pop(message.note)
                notes.append((message.note, start, tick, velocity))
    return sorted(notes, key=lambda n: (n[1], n[0]))


def test_midi_to_events_to_midi_is_exact():
    piece = hand_piece()
    original = midi_bytes(piece, tempo=93.0)
    vocabulary = EventVocabulary()
    read = read_midi(original, steps_per_quarter=4)
    events = vocabulary.encode(read)
    again = midi_bytes(vocabulary.decode(events, steps_per_quarter=4), tempo=93.0)
    # Every note at the same tick with the same pitch (and velocity: these are bin values).
    assert midi_note_ticks(again) == midi_note_ticks(original)
    assert len(midi_note_ticks(original)) == len(piece)
    ticks_per_step = 480 // 4
    assert midi_note_ticks(original)[0][:3] == (60, 0, 4 * ticks_per_step)
    assert read.notes() == piece.notes()


def test_event_sequence_by_hand():
    vocabulary = EventVocabulary(max_shift=4, velocity_bins=4)
    piece = Piece.from_notes([(60, 0, 2, 100), (64, 0, 6, 100), (62, 2, 3, 30)], steps_per_quarter=4, length=8)
    names = [vocabulary.describe(t) for t in vocabulary.encode(piece)]
    assert names == ["START", "VELOCITY 3", "NOTE_ON 60", "NOTE_ON 64", "TIME_SHIFT 2", "NOTE_OFF 60", "VELOCITY 0",
                     "NOTE_ON 62", "TIME_SHIFT 1", "NOTE_OFF 62", "TIME_SHIFT 3", "NOTE_OFF 64", "TIME_SHIFT 2"]
    assert vocabulary.size == 1 + 128 + 128 + 4 + 4
    assert vocabulary.end_time(vocabulary.encode(piece)) == 8


def test_chorale_written_by_music21_round_trips(tmp_path):
    """A MIDI file from another writer (music21) -> events -> MIDI: the same notes, tick for tick."""
    from music21 import corpus

    path = tmp_path / "bwv269.mid"
    corpus.parse("bach/bwv269", forceSource=True).write("midi", fp=str(path))
    vocabulary = EventVocabulary()
    piece = read_midi(path, steps_per_quarter=4)
    assert len(piece) > 100
    decoded = vocabulary.decode(vocabulary.encode(piece), steps_per_quarter=4)
    assert [n[:3] for n in decoded.notes()] == [n[:3] for n in piece.notes()]
    assert [n[:3] for n in midi_note_ticks(midi_bytes(decoded))] == [n[:3] for n in midi_note_ticks(midi_bytes(piece))]


def test_velocity_bins_and_untidy_events():
    vocabulary = EventVocabulary(velocity_bins=32)
    bins = np.arange(32)
    assert (vocabulary.velocity_bin(vocabulary.bin_velocity(bins)) == bins).all()
    velocities = np.arange(1, 128)
    assert (np.abs(vocabulary.bin_velocity(vocabulary.velocity_bin(velocities)) - velocities) <= 2).all()
    on, off, shift = vocabulary.NOTE_ON, vocabulary.NOTE_OFF, vocabulary.TIME_SHIFT
    # an off without an on, an on of a sounding pitch (restart), a zero-length note, a note never ended
    tokens = [off + 50, on + 60, shift + 1, on + 60, shift, off + 60, on + 62, off + 62, on + 64, shift + 3]
    piece = vocabulary.decode(tokens, steps_per_quarter=4)
    assert [n[:3] for n in piece.notes()] == [(60, 0, 2), (60, 2, 3), (64, 3, 7)]
    assert piece.length == 7
    assert [n[:3] for n in vocabulary.decode(tokens, 4, length=5).notes()] == [(60, 0, 2), (60, 2, 3), (64, 3, 5)]
    # notes held past max_note_steps (from step max_note_from on) end there; earlier ones are kept
    capped = vocabulary.decode(tokens, 4, max_note_steps=1, max_note_from=1)
    assert [n[:3] for n in capped.notes()] == [(60, 0, 2), (60, 2, 3), (64, 3, 4)]
    with pytest.raises(GenlabError, match="outside the event vocabulary"):
        vocabulary.decode([vocabulary.size], 4)


def test_same_pitch_overlaps_follow_midi_rule():
    piece = Piece.from_notes([(60, 0, 8), (60, 0, 4), (60, 6, 10), (62, 0, 2)], steps_per_quarter=4)
    assert [n[:3] for n in piece.monophonic_per_pitch().notes()] == [(60, 0, 6), (62, 0, 2), (60, 6, 10)]


def test_piano_roll_and_voice_grid():
    piece = Piece.from_notes([(60, 0, 3, 80, 0), (55, 1, 4, 80, 1), (60, 5, 6, 80, 0)], steps_per_quarter=2, length=6)
    roll = notes_to_piano_roll(piece)
    assert roll.shape == (6, 128) and roll.sum() == 3 + 3 + 1
    back = piano_roll_to_notes(roll, steps_per_quarter=2)
    assert [n[:3] for n in back.notes()] == [n[:3] for n in piece.notes()]
    assert voice_grid(piece, 2).tolist() == [[60, -1], [60, 55], [60, 55], [-1, 55], [-1, -1], [60, -1]]


def test_corrupt_and_missing_midi_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    with pytest.raises(GenlabError, match="not a readable MIDI file"):
        read_midi(bad)
    with pytest.raises(GenlabError, match="does not exist"):
        read_midi(tmp_path / "missing.mid")


# ----------------------------------------------------------------------------- data sets


def test_midi_folder_skips_unreadable_files_with_a_summary(tmp_path, capsys):
    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / "sub" / f"piece{i}.mid").write_bytes(midi_bytes(hand_piece().transposed(i)))
    (folder / "broken.mid").write_bytes(b"not midi at all")
    pieces = load_pieces(f"midi:{folder}", steps_per_quarter=4)
    assert len(pieces) == 3 and pieces[1].notes() == hand_piece().transposed(1).notes()
    err = capsys.readouterr().err
    assert "skipped 1" in err and "broken.mid" in err


def test_midi_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenlabError, match="holds no MIDI files"):
        load_pieces(f"midi:{empty}")
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.mid").write_bytes(b"MThd")
    with pytest.raises(GenlabError, match="none of the 1 MIDI file.*x.mid"):
        load_pieces(f"midi:{only_bad}")
    with pytest.raises(GenlabError, match="does not exist"):
        load_pieces(f"midi:{tmp_path / 'nowhere'}")


def test_empty_midi_folder_in_train_is_a_clean_cli_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "gpt-chorales", f"data.name=midi:{empty}", "--out", str(tmp_path / "run"))
    assert_clean_error(code, err, "holds no MIDI files")


def test_chorales_grid_splits_and_cache(chorale_cache):
    spec = MusicDataSpec(max_pieces=6, block_size=32)
    data = load_music_data(spec)
    sizes = [len(data.split(s).pieces) for s in ("train", "val", "test")]
    assert sum(sizes) == 6 and min(sizes) >= 1
    (cached,) = (chorale_cache / "chorales").glob("*first6.npz")
    written = cached.stat().st_mtime_ns
    first = data.train.pieces[0]
    grid = voice_grid(first)
    assert grid.shape == (first.length, 4)
    assert all((grid[:, v] >= 0).mean() > 0.5 for v in range(4))  # each voice sings most of the time
    sounding = (grid >= 0).all(1)
    assert (grid[sounding, 0] >= grid[sounding, 3]).all()  # the soprano is never below the bass
    vocabulary = data.vocabulary
    for piece in data.train.pieces:  # the whole event stream decodes back to the pieces
        decoded = vocabulary.decode(vocabulary.encode(piece), 4, length=piece.length)
        assert [n[:3] for n in decoded.notes()] == [n[:3] for n in piece.monophonic_per_pitch().notes()]
    # An eighth-note grid from the same cache: every note start is on a whole step, half as many steps.
    eighths = load_pieces("chorales", steps_per_quarter=2, max_pieces=6)
    assert abs(eighths[0].length * 2 - load_pieces("chorales", 4, max_pieces=6)[0].length) <= 1
    assert cached.stat().st_mtime_ns == written  # read from the cache, not parsed again


def test_transposition_moves_every_note_of_a_window_alike():
    vocabulary = EventVocabulary()
    piece = Piece.from_notes([(60, 0, 2), (64, 0, 4), (121, 2, 4)], steps_per_quarter=4)
    row = torch.from_numpy(vocabulary.encode(piece)).long()
    windows = row.repeat(64, 1)
    moved = transpose_events(windows, vocabulary, (-5, 6), torch.Generator().manual_seed(0))
    is_pitch = (row >= vocabulary.NOTE_ON) & (row < vocabulary.TIME_SHIFT)
    shifts = moved[:, is_pitch] - windows[:, is_pitch]
    assert (shifts == shifts[:, :1]).all()  # one shift per window
    assert shifts[:, 0].min() >= -5 and shifts[:, 0].max() <= 6  # 121 + 6 = 127 still fits
    assert len(set(shifts[:, 0].tolist())) > 5
    assert (moved[:, ~is_pitch] == windows[:, ~is_pitch]).all()  # time and velocity untouched
    high = Piece.from_notes([(126, 0, 2)], steps_per_quarter=4)
    moved_high = transpose_events(torch.from_numpy(vocabulary.encode(high)).long()[None].repeat(32, 1), vocabulary,
                                  (-5, 6), torch.Generator().manual_seed(0))
    assert moved_high[:, 2].max() <= vocabulary.NOTE_ON + 127 and moved_high[:, 2].min() >= vocabulary.NOTE_ON + 121


def test_music_data_spec_rejects_bad_settings():
    for values, needle in (({"steps_per_quarter": 7}, "steps_per_quarter"), ({"transpose": (3, -3)}, "transpose"),
                           ({"max_pieces": 2}, "max_pieces"), ({"velocity_bins": 0}, "velocity_bins")):
        with pytest.raises(GenlabError, match=needle):
            MusicDataSpec(**values)
    with pytest.raises(GenlabError, match="unknown music data set"):
        load_pieces("bach")


# ----------------------------------------------------------------------------- statistics


def test_statistics_of_hand_made_pieces():
    scale = Piece.from_notes([(p, 4 * i, 4 * i + 4) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])],
                             steps_per_quarter=4)
    histogram = stats.pitch_class_histogram([scale])
    expected = np.zeros(12)
    expected[[0, 2, 4, 5, 7, 9, 11]] = 1 / 8
    expected[0] = 2 / 8
    assert np.allclose(histogram, expected)
    assert stats.estimate_key(scale) == (0, "major")
    assert stats.in_key_ratio([scale]) == 1.0
    assert stats.polyphony([scale]) == 1.0
    assert stats.note_length_histogram([scale])["quarter"] == 1.0

    # C held 8 steps, E joins for the last 4, then 4 silent steps, then G for 4:
    # sounding counts 1,1,1,1,2,2,2,2,(0 x 4),1,1,1,1 -> (4 + 8 + 4) / 12 steps with sound
    two_voices = Piece.from_notes([(60, 0, 8), (64, 4, 8), (67, 12, 16)], steps_per_quarter=4)
    assert stats.polyphony([two_voices]) == pytest.approx(16 / 12)
    lengths = stats.note_length_histogram([two_voices])
    assert lengths["half"] == pytest.approx(1 / 3) and lengths["quarter"] == pytest.approx(2 / 3)
    # C-major material (estimated key C major) with one F# of 9 notes out of key.
    with_sharp = Piece.from_notes([*zip(scale.pitch, scale.start, scale.end), (66, 32, 33)], steps_per_quarter=4)
    assert stats.estimate_key(with_sharp) == (0, "major")
    assert stats.in_key_ratio([with_sharp]) == pytest.approx(8 / 9)
    assert stats.note_length_histogram([with_sharp])["sixteenth"] == pytest.approx(1 / 9)
    # the key-normalised histogram of the scale moved to D is the C one
    assert np.allclose(stats.pitch_class_histogram([scale.transposed(2)], key_normalized=True), expected)
    assert stats.total_variation([1, 0, 0], [0, 0.5, 0.5]) == 1.0
    assert stats.total_variation({"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75}) == 0.25
    minor = Piece.from_notes([(p, 4 * i, 4 * i + 4) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 57, 64, 69])],
                             steps_per_quarter=4)  # A harmonic minor: G# is the leading tone, in key
    assert stats.estimate_key(minor) == (9, "minor") and stats.in_key_ratio([minor]) == 1.0


def test_key_estimate_matches_music21():
    from music21 import analysis, corpus

    for name in ("bach/bwv269", "bach/bwv347", "bach/bwv153.1", "bach/bwv86.6"):
        score = corpus.parse(name, forceSource=True)
        theirs = analysis.discrete.KrumhanslKessler().getSolution(score)
        path_piece = read_midi(_midi_of(score), steps_per_quarter=4)
        tonic, mode = stats.estimate_key(path_piece)
        assert (tonic, mode) == (theirs.tonic.pitchClass, theirs.mode), name


def _midi_of(score) -> bytes:
    from music21 import midi

    return midi.translate.streamToMidiFile(score).writestr()


def test_parse_key_and_transpose_into_key():
    assert stats.parse_key("D") == (2, "major")
    assert stats.parse_key("F# minor") == (6, "minor")
    assert stats.parse_key("Bb") == (10, "major")
    assert stats.parse_key("am") == (9, "minor")
    assert stats.parse_key("Eb major") == (3, "major")
    with pytest.raises(GenlabError, match="cannot read the key"):
        stats.parse_key("H major")
    scale = Piece.from_notes([(p, 4 * i, 4 * i + 4) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])],
                             steps_per_quarter=4)
    moved, shift = stats.transpose_into_key(scale, *stats.parse_key("D major"))
    assert shift == 2 and stats.estimate_key(moved) == (2, "major")
    moved, shift = stats.transpose_into_key(scale, *stats.parse_key("F#"))
    assert shift == -6 and moved.pitch.min() == 54


def test_music_statistics_summary():
    piece = hand_piece()
    summary = stats.music_statistics([piece, piece.transposed(3)])
    assert summary["pieces"] == 2 and summary["notes"] == 2 * len(piece)
    assert sum(summary["pitch_class_histogram"].values()) == pytest.approx(1.0)
    # A C major scale against the same scale in D major: the same music a tone higher.
    scale = Piece.from_notes([(p, 4 * i, 4 * i + 4) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])],
                             steps_per_quarter=4)
    comparison = stats.compare_statistics(stats.music_statistics([scale]), stats.music_statistics([scale.transposed(2)]))
    # Pitch classes: C 2/8 and D..B 1/8 vs D 2/8 and E, F#, G, A, B, C# 1/8 differ by 1/4 at C and
    # 1/8 at C#, D, F, F#: total variation (1/4 + 4/8) / 2 = 3/8. In its own key each is the same.
    assert comparison["pitch_class_distance"] == pytest.approx(3 / 8)
    assert comparison["pitch_class_distance_key_normalized"] == pytest.approx(0.0, abs=1e-12)
    assert comparison["note_length_distance"] == pytest.approx(0.0, abs=1e-12)
    assert comparison["polyphony_difference"] == 0 and comparison["in_key_ratio_difference"] == 0


# ----------------------------------------------------------------------------- models and compose


def test_event_model_trains_saves_and_loads(gpt, gpt_dir):
    assert gpt.family == "gpt-music" and gpt.data_kind == "music" and "compose" in gpt.capabilities
    assert gpt.config.vocab_size == EventVocabulary().size and gpt.context_window == 64
    import json

    metrics = json.loads((gpt_dir / "metrics.json").read_text())
    # After 30 steps the loss is well under the uniform model's log(vocabulary size).
    assert metrics["test"]["loss"] < np.log(gpt.config.vocab_size) - 1.0


def test_compose_writes_midi_wav_png_that_read_back(gpt, tmp_path):
    import pretty_midi
    from music21 import converter
    from PIL import Image

    from genlab.tasks.compose import compose

    composition = compose(gpt, bars=2, seed=0, tempo=90)
    assert composition.seconds == pytest.approx(2 * 4 * 60 / 90)
    assert composition.notes > 0
    midi, wav, png = composition.save(tmp_path / "piece.mid")
    assert wav.name == "piece.wav" and png.name == "piece.png"
    read = pretty_midi.PrettyMIDI(str(midi))
    assert len(read.instruments[0].notes) == composition.notes
    assert read.get_tempo_changes()[1][0] == pytest.approx(90, rel=1e-5)  # MIDI stores whole microseconds
    assert max(n.end for n in read.instruments[0].notes) <= composition.seconds + 1e-6
    score = converter.parse(str(midi))
    assert len(score.flatten().notes) > 0
    with wave.open(str(wav)) as f:
        assert f.getsampwidth() == 2
        assert f.getnframes() == round(composition.seconds * f.getframerate())
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    assert np.abs(samples).max() > 1000  # not silence
    with Image.open(png) as image:
        assert image.width >= 2 * 16 and image.height > 10
    again = compose(gpt, bars=2, seed=0, tempo=90)
    assert again.midi == composition.midi  # the seed decides the piece
    assert compose(gpt, bars=2, seed=1, tempo=90).midi != composition.midi


def test_compose_into_a_key(gpt):
    from genlab.tasks.compose import compose

    composition = compose(gpt, bars=4, seed=3, key="Eb major")
    assert composition.key == "Eb major"
    assert stats.best_tonic(composition.piece, "major") == 3


def test_compose_continues_a_prompt(gpt, tmp_path):
    from genlab.tasks.compose import compose

    prompt = Piece.from_notes([(60, 0, 8), (64, 0, 8), (67, 8, 16), (55, 8, 16)], steps_per_quarter=4, length=16)
    path = tmp_path / "prompt.mid"
    path.write_bytes(midi_bytes(prompt))
    composition = compose(gpt, bars=2, seed=0, prompt_midi=path)
    assert composition.piece.length == 16 + 2 * 16
    assert composition.prompt_bars == 1.0
    # The prompt's notes all end by its last bar line, and nothing new starts before it.
    assert [n[:3] for n in composition.piece.truncated(16).notes()] == [n[:3] for n in prompt.notes()]
    assert compose(gpt, bars=2, seed=0, prompt_midi=path.read_bytes()).midi == composition.midi


def test_a_prompt_of_hours_is_refused_before_any_audio_is_made(gpt):
    from genlab.tasks.compose import compose

    # A few dozen bytes of MIDI can hold one note for 100 bars; the prompt is kept in the output, so it is bounded.
    long_note = midi_bytes(Piece.from_notes([(60, 0, 100 * 16)], steps_per_quarter=4))
    with pytest.raises(GenlabError, match="100 bars long"):
        compose(gpt, bars=1, prompt_midi=long_note)


def test_prompt_longer_than_the_context_is_a_clear_error(gpt_dir, tmp_path, capsys):
    notes = [(60 + (i % 12), i, i + 1) for i in range(80)]  # 80 notes: ~240 events, the window is 64
    path = tmp_path / "long.mid"
    path.write_bytes(midi_bytes(Piece.from_notes(notes, steps_per_quarter=4)))
    code, _, err = run_cli(capsys, "compose", str(gpt_dir), "--prompt", str(path), "-o", str(tmp_path / "x.mid"))
    assert_clean_error(code, err, "longer than the model's context window of 64 events", "shorter prompt")
    assert not (tmp_path / "x.mid").exists()


def test_compose_cli(gpt_dir, tmp_path, capsys):
    out = tmp_path / "out" / "piece.mid"
    code, stdout, err = run_cli(capsys, "compose", str(gpt_dir), "--bars", "2", "--seed", "0", "-o", str(out))
    assert code == 0, err
    assert out.is_file() and out.with_suffix(".wav").is_file() and out.with_suffix(".png").is_file()
    assert "composed 2 bars" in stdout and ("built-in additive synthesiser" in stdout or "FluidSynth" in stdout)
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    for args, needle in ((("--prompt", str(bad)), "not a readable MIDI file"), (("--bars", "0"), "bars must be"),
                         (("--tempo", "1000"), "tempo"), (("--top-p", "1.5"), "top_p"), (("--key", "H"), "key"),
                         (("-o", str(tmp_path / "piece.wav")), "not a MIDI file name")):
        code, _, err = run_cli(capsys, "compose", str(gpt_dir), *args)
        assert_clean_error(code, err, needle)
    code, _, err = run_cli(capsys, "sample", str(gpt_dir))
    assert_clean_error(code, err, "genlab compose")
    with pytest.raises(SystemExit):
        run_cli(capsys, "compose", "--help")
    assert "genlab compose runs/chorales --bars 16" in capsys.readouterr().out


def test_compose_needs_a_music_model():
    from genlab.models.transformer import GPT, GPTConfig
    from genlab.tasks.compose import compose

    with pytest.raises(GenlabError, match="composing needs a music model"):
        compose(GPT(GPTConfig(vocab_size=5, block_size=8)))


def test_lstm_music_family_composes(tmp_path):
    import genlab
    from genlab.tasks.compose import compose

    run = genlab.train("lstm-chorales", ["data.max_pieces=8", "data.block_size=32", "model.hidden_size=32",
                                         "model.n_embd=16", "model.n_layer=1", "batch_size=8", "steps=10",
                                         "train.progress=false", "train.tensorboard=false", "train.eval_batches=2"],
                       out=tmp_path / "lstm")
    model = genlab.load(run)
    assert model.family == "lstm-music" and model.context_window is None
    composition = compose(model, bars=1, seed=0, temperature=0.8, top_p=0.9)
    assert composition.piece.length == 16
    pieces = genlab.sample(model, 2, seed=0)
    assert len(pieces) == 2 and all(p.length == 8 * 16 for p in pieces)


def test_compose_with_a_piano_roll_model(tmp_path):
    from genlab.models.pianoroll import PianoRollConfig, PianoRollRNN
    from genlab.tasks.compose import compose

    torch.manual_seed(0)
    model = PianoRollRNN(PianoRollConfig(hidden_size=16)).eval()
    composition = compose(model, bars=2, seed=0)
    assert composition.seconds == pytest.approx(2 * 4 * 0.5)  # quarter-note frames at 120 bpm
    assert composition.piece.steps_per_quarter == 1 and composition.piece.length == 8
    prompt = Piece.from_notes([(60, 0, 2), (67, 2, 4)], steps_per_quarter=1, length=4)
    continued = compose(model, bars=1, seed=0, prompt_midi=midi_bytes(prompt))
    assert continued.piece.length == 4 + 4
    assert [n[:3] for n in continued.piece.truncated(4).notes()] == [(60, 0, 2), (67, 2, 4)]
    with pytest.raises(GenlabError, match="top_p applies to event models"):
        compose(model, bars=1, top_p=0.9)


@pytest.mark.skipif(not __import__("genlab.music_render").music_render.fluidsynth_available(),
                    reason="needs the fluidsynth program and a General-MIDI soundfont (apt install fluidsynth fluid-soundfont-gm)")
def test_fluidsynth_rendering_has_the_right_length():
    from genlab.music_render import render_wav

    piece = Piece.from_notes([(60, 0, 8), (64, 4, 12), (67, 8, 16)], steps_per_quarter=4)  # 4 beats: 2 s at 120 bpm
    data, renderer = render_wav(piece, tempo=120, renderer="fluidsynth")
    assert renderer == "fluidsynth"
    with wave.open(io.BytesIO(data)) as f:
        assert f.getnframes() == 2 * f.getframerate() and f.getsampwidth() == 2
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    assert np.abs(samples).max() > 1000


def test_additive_synthesiser_pitch():
    from genlab.music_render import additive_synthesis

    a4 = Piece.from_notes([(69, 0, 8)], steps_per_quarter=4)  # two beats of A4 at 120 bpm: 1 s
    samples = additive_synthesis(a4, tempo=120, sample_rate=8000)
    assert len(samples) == 8000
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 8000 / len(samples) - 440) < 2  # the fundamental is the loudest partial


def test_suppressed_tokens_are_never_generated():
    from genlab.models.transformer import GPT, GPTConfig
    from genlab.sampling import GenerationConfig, generate_tokens

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=6, block_size=32, n_layer=1, n_head=1, n_embd=8))
    config = GenerationConfig(max_new_tokens=200, suppress_tokens=(0, 3), num_return_sequences=4)
    drawn = torch.stack(list(generate_tokens(model, torch.tensor([[1], [1], [1], [1]]), config)))
    assert not torch.isin(drawn, torch.tensor([0, 3])).any()
    assert set(drawn.unique().tolist()) == {1, 2, 4, 5}


def test_eval_cli_on_an_event_model(gpt_dir, capsys):
    import json

    code, stdout, err = run_cli(capsys, "eval", str(gpt_dir), "-n", "3")
    assert code == 0, err
    assert "nats/event" in stdout and "pitch_class_distance_key_normalized" in stdout
    saved = json.loads((gpt_dir / "metrics.json").read_text())["eval"]
    assert saved["kind"] == "music" and saved["samples"]["n"] == 3
    # the held-out loss here is the same number the Trainer's test pass reported
    test_loss = json.loads((gpt_dir / "metrics.json").read_text())["test"]["loss"]
    assert saved["likelihood"]["test"]["loss"] == pytest.approx(test_loss, rel=1e-4)
