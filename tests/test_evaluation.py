"""genlab eval: sample quality beside its floor, and clear errors for what cannot be measured."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from genlab.artifact import save, write_config
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.evaluation import evaluate, parse_against, sample_quality_metrics
from genlab.metrics.features import load_feature_extractor
from genlab.models.base import GenerativeModel
from genlab.registry import register_family


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_parse_against():
    assert parse_against(None, "digits") == ("digits", "test")
    assert parse_against("val", "digits") == ("digits", "val")
    assert parse_against("mnist:train", "digits") == ("mnist", "train")
    assert parse_against("folder:/x/y", "digits") == ("folder:/x/y", "test")
    assert parse_against("folder:/x/y:val", "digits") == ("folder:/x/y", "val")


def test_real_data_against_itself_is_at_the_floor():
    """Two disjoint halves of the real digits test split score like the train-vs-test floor."""
    from genlab.data import load_image_data

    data = load_image_data("digits")
    extractor = load_feature_extractor("lenet-digits")
    images = data.test.images.float() / 255
    half = len(images) // 2
    a, b = extractor.features(images[:half]), extractor.features(images[half : 2 * half])
    noise = extractor.features(torch.rand(half, 1, 8, 8))
    real = sample_quality_metrics(a, b, extractor.probabilities(images[half : 2 * half]), seed=0)
    fake = sample_quality_metrics(a, noise, extractor.probabilities(torch.rand(half, 1, 8, 8)), seed=0)
    assert real["fd"] < fake["fd"] / 5
    assert real["precision"] > 0.5 and fake["precision"] < real["precision"]
    assert real["classifier_score"] > fake["classifier_score"]


def test_sample_quality_of_a_trained_model_is_recorded(tiny_model_dir):
    result = evaluate(tiny_model_dir, n=100, seed=1, metrics=("samples",), progress=False)
    samples = result["samples"]
    assert samples["n"] == 100 and result["data"] == "digits:test"
    for name, value in samples["metrics"].items():
        assert name.endswith("[lenet-digits]")
        assert value == value  # not NaN
    # a briefly trained model is worse than real data
    assert samples["metrics"]["fd[lenet-digits]"] > samples["floor"]["fd[lenet-digits]"]


def test_n_larger_than_the_data(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "eval", str(tiny_model_dir), "--metrics", "samples", "-n", "100000")
    assert code == 2 and "larger than the test split" in err and "Traceback" not in err


def test_feature_network_of_another_shape(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "eval", str(tiny_model_dir), "--metrics", "samples", "-n", "50",
                           "--features", "lenet-mnist")
    assert code == 2 and "do not fit lenet-mnist" in err and "lenet-digits" in err


def test_unknown_metric_group(tiny_model_dir, capsys):
    code, _, err = run_cli(capsys, "eval", str(tiny_model_dir), "--metrics", "vibes")
    assert code == 2 and "unknown metric group" in err


@dataclass
class ScorerConfig:
    input_shape: tuple[int, ...] = (1, 8, 8)


@register_family("test-scorer")
class Scorer(GenerativeModel):
    """A family with no capabilities at all (think: a recommender asked for image metrics)."""

    config_class = ScorerConfig

    def __init__(self, config):
        super().__init__(config)
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_model_without_the_needed_capability(tmp_path, capsys):
    write_config(tmp_path, {"family": "test-scorer", "model": {}, "data": {"name": "digits"}, "train": {}})
    save(Scorer(ScorerConfig()), tmp_path)
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert code == 2 and "'sample' capability" in err and "vae" in err
    with pytest.raises(GenlabError, match="log_likelihood"):
        evaluate(tmp_path, metrics=("likelihood",))
