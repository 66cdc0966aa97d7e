"""Trainer callbacks: early stopping with the best weights, exact resume, the class-share monitor."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from genlab.config import TrainConfig
from genlab.errors import GenlabError
from genlab.models.base import GenerativeModel
from genlab.training import Callback, ClassShareMonitor, Trainer
from genlab.training.callbacks import BEST_NAME


class ToyData:
    """64 random 8x8 images per split: enough for a Trainer, nothing to download."""

    value_range = (0.0, 1.0)
    classes: list = []

    def __init__(self, n: int = 64):
        self.x = {split: torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(i))
                  for i, split in enumerate(("train", "val", "test"))}

    def num_examples(self, split):
        return len(self.x[split])

    def batch(self, split, idx, generator):
        return {"x": self.x[split][idx]}


@dataclass
class ToyConfig:
    pass


class Overshoot(GenerativeModel):
    """Training pushes `w` up by lr per step; validation loss is (w - 1)^2, so it falls until
    w reaches 1 (step 10 at lr 0.1) and rises after: early stopping has something to find."""

    config_class = ToyConfig
    capabilities = frozenset({"sample"})

    def __init__(self, config=None):
        super().__init__(config or ToyConfig())
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.linear = torch.nn.Linear(64, 1)  # trained on the data too, so the weights depend on its order

    def configure_optimizers(self, train):
        return {"main": torch.optim.SGD(self.parameters(), lr=train.lr)}

    def training_step(self, batch, step, optimizers):
        loss = -self.w.sum() + self.fit(batch) + 0.01 * torch.randn(()) * self.w.sum()  # noise: the seeding matters
        optimizers["main"].step(loss)
        return {"loss": loss.item()}

    def validation_step(self, batch):
        return {"loss": (self.w - 1.0).pow(2).mean().item(), "fit": self.fit(batch).item()}

    def fit(self, batch):
        return self.linear(batch["x"].flatten(1) / 8).pow(2).mean()

    def sample(self, n, *, condition=None, generator=None):
        return torch.rand(n, 1, 8, 8, generator=generator)


def config(**changes) -> TrainConfig:
    settings = dict(steps=40, batch_size=4, lr=0.1, eval_every=2, early_stopping_patience=3, keep_best=True,
                    checkpoint_every=1000, tensorboard=False, progress=False)
    return TrainConfig(**{**settings, **changes})


def train(run_dir, cfg, *, resume=False, callbacks=()):
    torch.manual_seed(0)
    model = Overshoot()
    trainer = Trainer(model, ToyData(), cfg, run_dir, log=lambda msg: None, callbacks=callbacks)
    result = trainer.fit(resume=resume)
    trainer.close()
    return trainer, result


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].cpu(), b[k].cpu()), f"{k} differs"


def exported(trainer) -> dict:
    """What api.train saves: the model's state under the EMA weights."""
    with trainer.ema_weights():
        return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_early_stopping_exports_the_best_weights(tmp_path, ema_decay):
    trainer, result = train(tmp_path, config(ema_decay=ema_decay))
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    losses = [h["val"]["loss"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.status == "early_stopped" and result.steps < 40
    assert len(history) == best + 1 + 3  # the best evaluation, then `patience` without improvement
    assert result.best_step == history[best]["step"] and result.best_metric == losses[best]
    assert result.val_metrics == history[best]["val"]
    assert all(loss > losses[best] for loss in losses[best + 1 :])
    best_file = load_file(str(tmp_path / BEST_NAME))
    with safe_open(str(tmp_path / BEST_NAME), framework="pt") as f:
        assert json.loads(f.metadata()["genlab"])["step"] == result.best_step
    assert_same_state(exported(trainer), best_file)
    assert_same_state(trainer.model.state_dict(), best_file)
    # the weights the run ended with (in its checkpoint) are worse than the exported ones
    last = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert not torch.equal(last["model/w"], best_file["w"])
    assert trainer.evaluate("val")["loss"] == losses[best]


def test_without_keep_best_the_last_weights_stay(tmp_path):
    trainer, result = train(tmp_path, config(keep_best=False))
    assert result.status == "early_stopped" and result.best_step is not None
    assert not (tmp_path / BEST_NAME).exists()
    last = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert torch.equal(trainer.model.w.detach(), last["model/w"])


class InterruptAt(Callback):
    """Ctrl-C at a chosen step (the Trainer finishes it, saves a checkpoint and returns)."""

    def __init__(self, step):
        self.step = step

    def on_train_step(self, trainer, logs):
        if trainer.step == self.step:
            trainer._request_stop(None, None)


class Killed(Exception):
    pass


class KillAt(Callback):
    """A hard kill: the run ends without saving anything, after best.safetensors may be newer
    than the last checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_train_step(self, trainer, logs):
        if trainer.step == self.step:
            raise Killed


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_resume_with_early_stopping_is_exact(tmp_path, ema_decay):
    cfg = config(ema_decay=ema_decay, checkpoint_every=4)
    straight, straight_result = train(tmp_path / "straight", cfg)
    expected = exported(straight)
    best_file = load_file(str(tmp_path / "straight" / BEST_NAME))
    history = (tmp_path / "straight" / "history.jsonl").read_text()
    stop = straight_result.steps

    # interrupted before the best, after it while counting patience, at the stop itself
    for step in (7, straight_result.best_step + 2, stop - 1):
        run = tmp_path / f"interrupted-{step}"
        _, first = train(run, cfg, callbacks=[InterruptAt(step)])
        assert first.status == "interrupted" and first.steps == step
        resumed, result = train(run, cfg, resume=True)
        assert (result.status, result.steps, result.best_step) == ("early_stopped", stop, straight_result.best_step)
        assert_same_state(exported(resumed), expected)
        assert_same_state(load_file(str(run / BEST_NAME)), best_file)
        assert (run / "history.jsonl").read_text() == history

    # killed after a best that is newer than the checkpoint: the resumed run redoes it
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        train(run, cfg, callbacks=[KillAt(straight_result.best_step + 1)])
    resumed, result = train(run, cfg, resume=True)
    assert result.best_step == straight_result.best_step
    assert_same_state(exported(resumed), expected)

    # resuming a run that stopped early has nothing left to do and exports the same weights
    again, result = train(tmp_path / "straight", cfg, resume=True)
    assert (result.status, result.steps) == ("early_stopped", stop)
    assert_same_state(exported(again), expected)


def test_default_cadence_is_about_twenty_evaluations(tmp_path):
    data = ToyData()  # 64 examples / batch 4 = 16 steps per epoch
    cadence = {steps: Trainer(Overshoot(), data, config(steps=steps, eval_every=None), tmp_path).eval_every
               for steps in (10, 100, 1000)}
    assert cadence == {10: 16, 100: 16, 1000: 50}  # never more than once per epoch
    assert Trainer(Overshoot(), data, config(steps=1000, eval_every=7), tmp_path).eval_every == 7


def test_monitor_settings_are_checked(tmp_path):
    with pytest.raises(GenlabError, match="val.<key>"):
        TrainConfig(monitor="loss")
    with pytest.raises(GenlabError, match="monitor_mode"):
        TrainConfig(monitor_mode="lower")
    with pytest.raises(GenlabError, match="early_stopping_patience"):
        TrainConfig(early_stopping_patience=0)
    with pytest.raises(GenlabError, match="val.fit"):  # a metric the model does not report
        train(tmp_path, config(monitor="val.nll"))


def test_higher_is_better_monitor(tmp_path):
    # val.loss falls from the start: followed as a maximum, the first evaluation stays the best
    _, result = train(tmp_path, config(monitor_mode="max"))
    assert result.status == "early_stopped" and result.best_step == 2 and result.steps == 8


class OneClass:
    """A stand-in classifier: everything is class 2 of 4."""

    def __init__(self):
        self.seen = None

    def probabilities(self, images):
        self.seen = images
        return torch.nn.functional.one_hot(torch.full((len(images),), 2), 4).float()


def test_class_share_monitor_with_a_given_classifier(tmp_path):
    classifier = OneClass()
    lines = []
    trainer = Trainer(Overshoot(), ToyData(), config(tensorboard=True), tmp_path, log=lines.append,
                      callbacks=[ClassShareMonitor(classifier, samples=50)])
    written = trainer.write_previews()
    trainer.close()
    assert written["class_histogram"] == tmp_path / "samples" / "class_histogram_step0000000.png"
    assert written["class_histogram"].is_file()
    assert classifier.seen.shape == (50, 1, 8, 8) and 0.0 <= classifier.seen.min() and classifier.seen.max() <= 1.0
    assert any("class shares of samples 0.0%..100.0%" in line for line in lines)
    final = trainer.write_previews(tmp_path / "model", tag_step=False)  # the model directory's copy
    assert final["class_histogram"] == tmp_path / "model" / "class_histogram.png"


class EvenClasses:
    """Predicts classes 0..3 in turn: every class drawn at its even share."""

    def probabilities(self, images):
        return torch.nn.functional.one_hot(torch.arange(len(images)) % 4, 4).float()


def test_class_share_monitor_keeps_quiet_while_the_classes_are_even(tmp_path):
    lines = []
    trainer = Trainer(Overshoot(), ToyData(), config(), tmp_path, log=lines.append,
                      callbacks=[ClassShareMonitor(EvenClasses(), samples=40)])
    assert trainer.write_previews()["class_histogram"].is_file()  # the chart is still written
    trainer.close()
    assert not any("class shares" in line for line in lines)


def test_training_never_imports_metrics():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("genlab")
    imported = {(m, i) for m in graph.modules if m.startswith("genlab.training")
                for i in graph.find_modules_directly_imported_by(m) if i.startswith("genlab.metrics")}
    assert not imported
