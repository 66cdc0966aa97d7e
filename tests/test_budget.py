"""Time-budgeted training: the schedule follows the fraction of the budget used, the run stops
within one step of its deadline with the learning rate at its floor, and budget runs resume.

Most tests drive the Trainer with a fake clock (each step costs a fixed number of seconds,
each evaluation another), so the plan is deterministic and can be compared with its closed form."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.config import TrainConfig
from genlab.data import TextDataSpec, load_text_data
from genlab.models.transformer import GPT, GPTConfig
from genlab.training import Trainer
from genlab.training.callbacks import Callback

LR, FLOOR = 0.01, 0.1


class FakeClock:
    def __init__(self, start: float = 0.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class CostAndRecord(Callback):
    """Each evaluation costs `eval_s` on the fake clock; records (step, progress, lr) after each step."""

    def __init__(self, clock: FakeClock, eval_s: float = 0.0, stop_at: int | None = None):
        self.clock, self.eval_s, self.stop_at = clock, eval_s, stop_at
        self.seen: list[tuple[int, float, float]] = []  # (step, progress, lr)

    def on_train_step(self, trainer, logs):
        lr = trainer.optimizers["main"].optimizer.param_groups[0]["lr"]
        self.seen.append((trainer.step, trainer.progress, lr))
        if trainer.step == self.stop_at:
            trainer._stop_requested = True  # as Ctrl-C would: checkpoint and exit after this step

    def on_evaluation(self, trainer, val_metrics):
        self.clock.now += self.eval_s
        return False


def tiny_trainer(run_dir, clock, callbacks=(), step_s: float = 1.0, **train):
    """A one-layer GPT on bytes whose every training step costs `step_s` on the fake clock."""
    torch.manual_seed(0)
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="byte", block_size=16))
    model = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=1, n_embd=8))
    real_step = model.training_step

    def costly_step(batch, step, optimizers):
        clock.now += step_s
        return real_step(batch, step, optimizers)

    model.training_step = costly_step
    settings = dict(steps=None, epochs=None, batch_size=8, lr=LR, lr_schedule="cosine", min_lr_ratio=FLOOR,
                    progress=False, tensorboard=False, eval_batches=1, checkpoint_every=10**6)
    settings.update(train)
    return Trainer(model, data, TrainConfig(**settings), run_dir, callbacks=callbacks, clock=clock, log=lambda m: None)


def closed_form(progress: float, warmup_fraction: float) -> float:
    """The schedule written out independently: linear warm-up over the first fraction, then a cosine to the floor."""
    if progress < warmup_fraction:
        return progress / warmup_fraction
    q = (progress - warmup_fraction) / (1 - warmup_fraction)
    return FLOOR + (1 - FLOOR) * (1 + math.cos(math.pi * q)) / 2


def test_a_budget_run_stops_within_one_step_of_its_deadline_with_the_learning_rate_at_its_floor(tmp_path):
    clock = FakeClock()
    record = CostAndRecord(clock, eval_s=1.0)
    trainer = tiny_trainer(tmp_path, clock, [record], time_budget_s=60.0, warmup_fraction=0.1)
    result = trainer.fit()
    assert result.status == "finished"
    # Evaluations (1 s each, about 20 of them, the last one included) count against the budget:
    # the run ends, final evaluation included, at the deadline or less than one step before it.
    assert 60.0 - 1.0 < result.budget_used_s <= 60.0
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    assert result.steps + len(history) == result.budget_used_s  # 1 s per step and per evaluation: all counted
    last_step, last_progress, last_lr = record.seen[-1]
    assert last_progress == 1.0 and last_lr == pytest.approx(LR * FLOOR, rel=1e-12)
    # The first step is planned before any step was measured, at progress 0: a linear warm-up's lr 0.
    assert record.seen[0][2] == 0.0
    assert all(lr > LR * FLOOR for _, _, lr in record.seen[1:-1])  # the floor is reached on the last step only
    # An evaluation is due 1/20 of the budget (3 s) after the previous one ended, and one at the end.
    assert 12 <= len(history) <= 21


class SlowPreviews(Callback):
    """Previews that cost `preview_s` on the fake clock (a diffusion model's sampling is slow)."""

    def __init__(self, clock: FakeClock, preview_s: float):
        self.clock, self.preview_s, self.calls = clock, preview_s, 0

    def on_previews(self, trainer, directory, tag_step):
        self.clock.now += self.preview_s
        self.calls += 1
        return {}


def test_slow_previews_on_their_own_cadence_still_end_by_the_deadline(tmp_path):
    """The final side work runs evaluation, previews and checkpoint together, while during the run previews come
    every 10 steps and evaluations every 9 (together first at step 90, after the deadline): the reserve kept
    free for the end must cover all of them, not the longest side work that happened to include an evaluation."""
    clock = FakeClock()
    previews = SlowPreviews(clock, preview_s=5.0)
    trainer = tiny_trainer(tmp_path, clock, [CostAndRecord(clock, eval_s=1.0), previews], time_budget_s=120.0,
                           eval_every=9, samples_every=10)
    result = trainer.fit()
    assert previews.calls >= 3
    assert 120.0 - 1.0 < result.budget_used_s <= 120.0


def test_the_schedule_as_a_function_of_progress_matches_its_closed_form(tmp_path):
    clock = FakeClock()
    record = CostAndRecord(clock)
    tiny_trainer(tmp_path, clock, [record], step_s=0.5, time_budget_s=40.0, warmup_fraction=0.2).fit()
    assert len(record.seen) == 80  # 40 s of 0.5 s steps, evaluations free
    for step, progress, lr in record.seen:
        # The plan of step k (1-based): it ends at k x 0.5 s of the 40 s, except the first, planned before any
        # step was measured, and the last, run at the floor.
        if 1 < step < 80:
            assert progress == pytest.approx(step * 0.5 / 40.0)
        assert lr == pytest.approx(LR * closed_form(progress, 0.2), rel=1e-9)
    lrs = [lr for _, _, lr in record.seen]
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))  # up during warm-up ...
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))  # ... then only down


def test_the_wsd_schedule_holds_then_falls_in_a_straight_line_to_its_floor(tmp_path):
    """Warm-up, stable, decay over a time budget: the rate is LR from the end of the warm-up until 70% of the
    budget, then the line from LR to the floor (written out here independently), reaching it on the last step."""
    clock = FakeClock()
    record = CostAndRecord(clock)
    tiny_trainer(tmp_path, clock, [record], step_s=0.5, time_budget_s=40.0, warmup_fraction=0.1, lr_schedule="wsd",
                 decay_fraction=0.3).fit()
    for step, progress, lr in record.seen:
        if progress < 0.1:
            expected = progress / 0.1
        elif progress <= 0.7:
            expected = 1.0
        else:
            expected = 1.0 + (FLOOR - 1.0) * (progress - 0.7) / 0.3
        assert lr == pytest.approx(LR * expected, rel=1e-9)
    assert sum(lr == pytest.approx(LR) for _, _, lr in record.seen) >= 45  # the stable part: 0.1 to 0.7 of 80 steps
    assert record.seen[-1][1] == 1.0 and record.seen[-1][2] == pytest.approx(LR * FLOOR)


def test_a_step_cap_that_binds_first_ends_the_schedule_on_its_last_step(tmp_path):
    clock = FakeClock()
    record = CostAndRecord(clock)
    result = tiny_trainer(tmp_path, clock, [record], time_budget_s=1000.0, steps=30, warmup_fraction=0.1).fit()
    assert result.steps == 30 and result.budget_used_s == pytest.approx(30.0)
    assert record.seen[-1][1] == 1.0 and record.seen[-1][2] == pytest.approx(LR * FLOOR)


def test_a_budget_run_resumes_from_its_recorded_progress_exactly(tmp_path):
    clock = FakeClock()
    straight = tiny_trainer(tmp_path / "straight", clock, [CostAndRecord(clock, eval_s=2.0)], time_budget_s=40.0,
                            warmup_fraction=0.1)
    straight.fit()

    clock = FakeClock()
    first = tiny_trainer(tmp_path / "split", clock, [CostAndRecord(clock, eval_s=2.0, stop_at=13)], time_budget_s=40.0,
                         warmup_fraction=0.1)
    assert first.fit().status == "interrupted"
    clock = FakeClock(start=5000.0)  # another process, another clock: the budget used comes from the checkpoint
    resumed = tiny_trainer(tmp_path / "split", clock, [CostAndRecord(clock, eval_s=2.0)], time_budget_s=40.0,
                           warmup_fraction=0.1)
    result = resumed.fit(resume=True)
    assert result.steps == straight.step and result.budget_used_s == pytest.approx(40.0, abs=1.0)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_budget_run_with_its_budget_spent_does_nothing(tmp_path):
    clock = FakeClock()
    tiny_trainer(tmp_path, clock, [CostAndRecord(clock)], time_budget_s=10.0).fit()
    clock = FakeClock()
    record = CostAndRecord(clock)
    result = tiny_trainer(tmp_path, clock, [record], time_budget_s=10.0).fit(resume=True)
    assert record.seen == [] and result.steps == 10


def test_on_the_real_clock_the_run_ends_at_its_deadline(tmp_path):
    record = CostAndRecord(FakeClock())  # records only; the Trainer's clock is the real one
    torch.manual_seed(0)
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="byte", block_size=16))
    model = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=1, n_embd=8))
    cfg = TrainConfig(steps=None, epochs=None, time_budget_s=1.5, batch_size=8, lr=LR, lr_schedule="cosine",
                      min_lr_ratio=FLOOR, progress=False, tensorboard=False, eval_batches=1, checkpoint_every=10**6)
    trainer = Trainer(model, data, cfg, tmp_path, callbacks=[record], log=lambda m: None)
    result = trainer.fit()
    step_s = result.train_time_s / result.steps
    assert result.steps > 20
    # Within one step (and the timing noise of a shared machine) of the deadline, evaluations included.
    assert 1.5 - 5 * step_s - 0.1 < result.budget_used_s < 1.5 + 5 * step_s + 0.1
    assert record.seen[-1][2] == pytest.approx(LR * FLOOR)


# ----------------------------------------------------------------------------- budget bands and --minutes

BANDED_RECIPE = """
description: a tiny GPT with two budget bands
family: gpt
data: {name: pydoc, tokenizer: byte, block_size: 16}
model: {n_layer: 1, n_head: 1, n_embd: 8}
train: {steps: 10, batch_size: 8, lr: 0.01, lr_schedule: cosine, progress: false, tensorboard: false, eval_batches: 1}
budgets:
  0.02: {model: {n_embd: 16}, train: {batch_size: 4, warmup_fraction: 0.1}}
  5: {data: {block_size: 32}, train: {batch_size: 16}}
"""


def test_the_budget_band_is_the_shortest_at_least_as_long_as_the_budget(tmp_path):
    from genlab.config import apply_budget, budget_band, load_recipe

    path = tmp_path / "banded.yaml"
    path.write_text(BANDED_RECIPE)
    recipe = load_recipe(str(path))
    assert [budget_band(recipe, m) for m in (0.01, 0.02, 0.03, 5, 60)] == [0.02, 0.02, 5, 5, 5]
    short = apply_budget(recipe, 0.01)
    assert short["model"]["n_embd"] == 16 and short["train"]["batch_size"] == 4 and short["data"]["block_size"] == 16
    assert short["train"]["time_budget_s"] == 0.6 and short["train"]["steps"] is None and short["train"]["epochs"] is None
    assert apply_budget(recipe, 60)["data"]["block_size"] == 32
    assert recipe["model"]["n_embd"] == 8  # the recipe itself is untouched
    assert budget_band(load_recipe("vae-digits"), 5) is None  # no bands: the recipe as it is, with a deadline


def test_train_minutes_uses_the_band_and_a_step_cap_still_binds(tmp_path, capsys):
    from genlab.cli import main

    path = tmp_path / "banded.yaml"
    path.write_text(BANDED_RECIPE)
    assert main(["train", str(path), "--minutes", "0.02", "-o", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["budget_band"] == 0.02 and config["model"]["n_embd"] == 16
    training = json.loads((tmp_path / "run" / "metrics.json").read_text())["training"]
    assert training["time_budget_s"] == 1.2 and training["budget_used_s"] <= 1.2 + 0.5
    # steps= on the command line goes on top of the band: a cap the deadline does not lift.
    assert main(["train", str(path), "--minutes", "5", "steps=7", "-o", str(tmp_path / "capped")]) == 0
    assert json.loads((tmp_path / "capped" / "metrics.json").read_text())["training"]["steps"] == 7


def test_an_empty_band_keeps_the_recipe_and_says_so():
    """A band may hold no settings: budgets up to it train the recipe as it is (a shorter band's settings stop there)."""
    from genlab.config import apply_budget, describe_budget_bands

    recipe = {"model": {"autoencoder_steps": 1200}, "train": {"steps": 100},
              "budgets": {10: {"model": {"autoencoder_steps": 600}}, 30: {}}}
    assert apply_budget(recipe, 8)["model"]["autoencoder_steps"] == 600
    assert apply_budget(recipe, 25)["model"]["autoencoder_steps"] == 1200
    assert apply_budget(recipe, 25)["budget_band"] == 30
    assert describe_budget_bands(recipe) == ["--minutes <= 10: model.autoencoder_steps=600",
                                             "--minutes <= 30 (and longer): the recipe's own settings"]


@pytest.mark.parametrize("bands, problem", [
    ("budgets: [1, 2]", "must map minutes to settings"),
    ("budgets: {-1: {train: {lr: 0.1}}}", "not a positive number of minutes"),
    ("budgets: {2: {optimizer: {lr: 0.1}}}", "must hold data/model/train mappings"),
])
def test_malformed_budget_bands_are_refused_with_the_fix(tmp_path, bands, problem):
    from genlab.config import load_recipe
    from genlab.errors import GenlabError

    path = tmp_path / "bad.yaml"
    path.write_text(BANDED_RECIPE.split("budgets:")[0] + bands + "\n")
    with pytest.raises(GenlabError, match=problem) as e:
        load_recipe(str(path))
    assert "budgets:" in e.value.hint


def test_minutes_must_be_positive(tmp_path, capsys):
    from genlab.cli import main

    assert main(["train", "vae-digits", "--minutes", "0", "-o", str(tmp_path / "x")]) == 2
    assert "--minutes must be a positive number" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_evaluations_longer_than_a_twentieth_of_the_budget_do_not_run_after_every_step(tmp_path):
    clock = FakeClock()
    record = CostAndRecord(clock, eval_s=5.0)  # each evaluation takes 1/12 of the budget
    result = tiny_trainer(tmp_path, clock, [record], time_budget_s=60.0).fit()
    evaluations = len((tmp_path / "history.jsonl").read_text().splitlines())
    # Each evaluation is due 1/20 of the budget (3 s, three steps) after the previous one ended.
    assert result.steps >= 3 * (evaluations - 1) and 5 <= evaluations <= 9
