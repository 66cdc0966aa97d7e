"""Shipped feature networks: integrity, honest accuracy, input checks, extractor choice."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest
import torch

from genlab.data import load_image_data
from genlab.errors import GenlabError
from genlab.metrics.features import (
    WEIGHTS_DIR,
    default_extractor_for,
    load_feature_extractor,
    train_feature_network,
)


@pytest.fixture(scope="module")
def mnist_extractor():
    return load_feature_extractor("lenet-mnist")


@pytest.fixture(scope="module")
def mnist_test_images():
    test = load_image_data("mnist").test
    return test.images[:1000].float() / 255.0, test.labels[:1000]


@pytest.mark.parametrize("name, shape, dim", [("lenet-mnist", (1, 28, 28), 128), ("lenet-digits", (1, 8, 8), 64)])
def test_shipped_weights_load_verified_and_small(name, shape, dim):
    extractor = load_feature_extractor(name)
    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert extractor.weights_sha256 == card["sha256"]
    assert extractor.short_hash == card["sha256"][:12]
    assert (extractor.input_shape, extractor.feature_dim) == (shape, dim)
    assert (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 500_000
    features = extractor.features(torch.rand(3, *shape))
    assert features.shape == (3, dim) and features.dtype == torch.float64


def test_recorded_mnist_test_accuracy_is_at_least_99_percent():
    card = json.loads((WEIGHTS_DIR / "lenet-mnist.json").read_text())
    assert card["test_accuracy"] >= 0.99
    assert card["data"]["test_examples"] == 10_000
    assert load_feature_extractor("lenet-mnist").test_accuracy == card["test_accuracy"]


def test_tampered_weights_are_refused(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(WEIGHTS_DIR / f"lenet-digits{suffix}", tmp_path)
    load_feature_extractor("lenet-digits", weights_dir=tmp_path)  # an intact copy loads
    weights = tmp_path / "lenet-digits.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: still a valid file, a different network
    weights.write_bytes(bytes(data))
    with pytest.raises(GenlabError, match="does not match its card"):
        load_feature_extractor("lenet-digits", weights_dir=tmp_path)


def test_recipe_writes_weights_and_card_that_load(tmp_path):
    card = train_feature_network("digits", tmp_path, epochs=1, seed=0)
    assert card["recipe"] == "features-digits" and 0.0 <= card["test_accuracy"] <= 1.0
    extractor = load_feature_extractor("lenet-digits", weights_dir=tmp_path)
    assert extractor.weights_sha256 == card["sha256"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(GenlabError, match="cannot read the feature network card"):
        load_feature_extractor("lenet-mnist", weights_dir=tmp_path)


def test_accuracy_on_real_mnist_test_images(mnist_extractor, mnist_test_images):
    images, labels = mnist_test_images
    probabilities = mnist_extractor.probabilities(images)
    assert probabilities.shape == (1000, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(1000, dtype=torch.float64))
    accuracy = (probabilities.argmax(1) == labels).double().mean().item()
    assert accuracy >= 0.98


def test_features_are_batched_consistently(mnist_extractor, mnist_test_images):
    images = mnist_test_images[0][:600]  # crosses the 500-image batch boundary
    together = mnist_extractor.features(images)
    apart = torch.cat([mnist_extractor.features(images[:100]), mnist_extractor.features(images[100:])])
    assert torch.allclose(together, apart, atol=1e-5)


def test_wrong_shape_names_both_shapes_and_the_fitting_extractor(mnist_extractor):
    with pytest.raises(GenlabError, match=r"\(1, 8, 8\).*\(1, 28, 28\)") as info:
        mnist_extractor.features(torch.rand(4, 1, 8, 8))
    assert "lenet-digits" in info.value.hint
    with pytest.raises(GenlabError) as info:
        mnist_extractor.features(torch.rand(4, 3, 32, 32))
    assert "inception" in info.value.hint


def test_nan_and_out_of_range_images_are_refused(mnist_extractor):
    images = torch.rand(4, 1, 28, 28)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(GenlabError, match="NaN or Inf"):
        mnist_extractor.features(images)
    with pytest.raises(GenlabError, match=r"\[0, 1\]") as info:
        mnist_extractor.probabilities(torch.rand(4, 1, 28, 28) * 2 - 1)
    assert "(x + 1) / 2" in info.value.hint
    with pytest.raises(GenlabError, match="uint8"):
        mnist_extractor.features(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))


def test_default_extractor_for_shapes():
    assert default_extractor_for((1, 28, 28)) == "lenet-mnist"
    assert default_extractor_for((1, 8, 8)) == "lenet-digits"
    with pytest.raises(GenlabError) as info:
        default_extractor_for((3, 32, 32))
    assert "inception" in info.value.hint


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(GenlabError) as info:
        load_feature_extractor("resnet")
    assert all(name in info.value.hint for name in ("lenet-mnist", "lenet-digits", "inception"))


def test_inception_without_torch_fidelity_says_what_to_install(monkeypatch):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(GenlabError, match="torch-fidelity") as info:
        load_feature_extractor("inception")
    assert "pip install torch-fidelity" in info.value.hint


def test_inception_never_downloads_missing_weights(monkeypatch, tmp_path):
    # A stand-in torch-fidelity whose network would download: genlab must stop before it.
    fake = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    fake.URL_INCEPTION_V3 = "https://example.invalid/weights-inception-2015-12-05-6726825d.pth"

    def would_download(*args, **kwargs):
        raise AssertionError("genlab built the network without local weights")

    fake.FeatureExtractorInceptionV3 = would_download
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", fake)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(GenlabError, match="weights not found") as info:
        load_feature_extractor("inception")
    assert str(tmp_path / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in info.value.hint
