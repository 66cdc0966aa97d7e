"""Image applications (genlab.tasks, `genlab apply`): shapes, value ranges, mask semantics,
determinism, baselines computed by hand, and clean errors for bad input."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main
from genlab.errors import GenlabError
from genlab.models.denoiser import Denoiser, DenoiserConfig, add_noise
from genlab.models.gan import GAN, GANConfig
from genlab.models.superres import SuperResConfig, SuperResolution, bicubic_upscale, downscale
from genlab.models.vae import VAE, VAEConfig
from genlab.tasks import (
    anomaly_scores,
    auroc,
    classical_denoise,
    decode_codes,
    encode_codes,
    evaluate_denoise,
    evaluate_superres,
    fit_entropy_model,
    inpaint,
    interpolate,
    masked_psnr,
    mean_fill,
    slerp,
    synthesize,
    traverse,
)
from genlab.tasks.augment import accuracy, augmentation_benefit, few_labels, train_classifier
from genlab.tasks.compress import compress, png_bits
from genlab.tasks.images import load_image, make_mask

from conftest import assert_clean_error, run_cli

QUICK = ["batch_size=32", "train.progress=false", "train.tensorboard=false", "train.eval_batches=2"]


def digit_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Real 8x8 digits in [0, 1] (scikit-learn's embedded copy)."""
    from sklearn.datasets import load_digits

    pixels = torch.from_numpy(load_digits().images).float() / 16.0
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:n]
    return pixels[order].unsqueeze(1)


def write_png(path, array: np.ndarray, mode: str | None = None):
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(32,), latent_dim=4, iwae_k=0)).eval()


@pytest.fixture(scope="module")
def gan() -> GAN:
    torch.manual_seed(0)
    config = GANConfig(input_shape=(1, 8, 8), data_range=(0.0, 1.0), architecture="mlp", latent_dim=4, hidden=(32,))
    return GAN(config).eval()


@pytest.fixture(scope="module")
def sr_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "sr"
    return genlab.train("sr-mnist-x2", ["data.name=digits", "steps=80", "model.channels=16", "model.num_blocks=1",
                                        "lr=3e-3", *QUICK], out=out)


@pytest.fixture(scope="module")
def denoiser_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "denoiser"
    return genlab.train("denoise-mnist", ["data.name=digits", "steps=80", "model.channels=16", "model.depth=3",
                                          "lr=3e-3", *QUICK], out=out)


# ----------------------------------------------------------------------------- inpainting


def test_mean_fill_and_masked_psnr_by_hand():
    images = torch.tensor([[[[0.0, 1.0], [0.5, 0.2]]]])
    mask = torch.tensor([[[[False, False], [True, True]]]])
    filled = mean_fill(images, mask)
    assert filled.tolist() == [[[[0.0, 1.0], [0.5, 0.5]]]]  # missing pixels = mean of 0 and 1
    # Squared errors on the masked pixels: 0 and 0.09 -> MSE 0.045.
    assert masked_psnr(filled, images, mask) == pytest.approx(10 * math.log10(1 / 0.045))
    assert masked_psnr(images, images, mask) == math.inf


@pytest.mark.parametrize("model_name, method", [("vae", "optimize"), ("vae", "resample"), ("gan", "optimize")])
def test_inpainting_keeps_known_pixels_and_is_deterministic(request, model_name, method):
    model = request.getfixturevalue(model_name)
    images = digit_images(6)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 1:5] = True
    before = [p.clone() for p in model.parameters()]
    result = inpaint(model, images, mask, method=method, steps=15, restarts=2, seed=3)
    assert result.shape == images.shape and 0.0 <= result.min() and result.max() <= 1.0
    known = ~mask.expand_as(images)
    assert torch.equal(result[known], images[known])  # bit for bit
    assert not torch.equal(result[~known], images[~known])  # the hole was filled by the model
    assert torch.equal(result, inpaint(model, images, mask, method=method, steps=15, restarts=2, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # only latents are optimised
    assert all(p.grad is None for p in model.parameters())


def test_inpainting_latent_search_fits_the_known_pixels(gan):
    # A target the generator can produce exactly: the search must get close to it on the
    # known pixels, far closer than a random latent does.
    target = gan.decode(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), None).detach()
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :4, :] = True
    filled = inpaint(gan, target, mask, steps=150, restarts=4, lr=0.1, pixel_sigma=0.05, seed=0)
    random_guess = gan.decode(torch.randn(4, 4, generator=torch.Generator().manual_seed(2)), None).detach()
    assert masked_psnr(filled, target, mask) > masked_psnr(random_guess, target, mask) + 3.0


def test_inpainting_with_a_conditional_model_tries_every_class():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=3, num_classes=3, conditional=True)).eval()
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[1].argmax(1)))
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:, :] = True
    inpaint(model, digit_images(2), mask, steps=2, restarts=1)
    assert set(torch.cat(seen).tolist()) == {0, 1, 2}
    result = inpaint(model, digit_images(2), mask, steps=2, restarts=1, labels=2)
    assert result.shape == (2, 1, 8, 8)
    with pytest.raises(GenlabError, match="out of range"):
        inpaint(model, digit_images(2), mask, steps=2, labels=7)


def test_inpainting_errors(vae, denoiser_dir):
    images = digit_images(2)
    with pytest.raises(GenlabError, match="no pixel"):
        inpaint(vae, images, torch.zeros(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(GenlabError, match="mask"):
        inpaint(vae, images, torch.ones(1, 1, 6, 6, dtype=torch.bool))
    with pytest.raises(GenlabError, match="shape"):
        inpaint(vae, torch.zeros(2, 1, 28, 28), torch.ones(1, 1, 28, 28, dtype=torch.bool))
    with pytest.raises(GenlabError, match="method"):
        inpaint(vae, images, torch.ones(1, 1, 8, 8, dtype=torch.bool), method="magic")
    with pytest.raises(GenlabError) as info:
        inpaint(genlab.load(denoiser_dir), images, torch.ones(1, 1, 8, 8, dtype=torch.bool))
    assert "denoiser" in info.value.message and "gan" in info.value.hint and "vae" in info.value.hint


# ----------------------------------------------------------------------------- image files and masks


def test_masks_from_specs_and_files(tmp_path):
    box = make_mask("box:1,2,3,4", (8, 8), (8, 8))
    assert box.shape == (1, 1, 8, 8) and box.sum() == 12 and box[0, 0, 2:6, 1:4].all()
    assert make_mask("half:bottom", (8, 8), (8, 8))[0, 0, 4:].all() and make_mask("half:bottom", (8, 8), (8, 8)).sum() == 32
    random = make_mask("random:0.5", (100, 100), (100, 100), torch.Generator().manual_seed(0))
    assert 0.45 < random.float().mean() < 0.55
    # A spec is drawn at the input image's size, then resized with the image: same region.
    assert torch.equal(make_mask("box:4,4,8,8", (16, 16), (8, 8)), make_mask("box:2,2,4,4", (8, 8), (8, 8)))
    drawn = np.zeros((8, 8), dtype=np.uint8)
    drawn[:3, :] = 255
    from_file = make_mask(str(write_png(tmp_path / "m.png", drawn)), (8, 8), (8, 8))
    assert torch.equal(from_file, make_mask("box:0,0,8,3", (8, 8), (8, 8)))

    with pytest.raises(GenlabError, match="is 8x8 but the image is 16x16"):
        make_mask(str(tmp_path / "m.png"), (16, 16), (8, 8))
    with pytest.raises(GenlabError, match="no pixel"):
        make_mask(str(write_png(tmp_path / "empty.png", np.zeros((8, 8), dtype=np.uint8))), (8, 8), (8, 8))
    with pytest.raises(GenlabError, match="inside"):
        make_mask("box:6,6,4,4", (8, 8), (8, 8))
    for bad in ("box:1,2", "random:2", "half:middle", "nonsense.png"):
        with pytest.raises(GenlabError):
            make_mask(bad, (8, 8), (8, 8))


def test_images_of_any_size_and_mode_are_converted_with_a_notice(tmp_path, capsys):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: grey level 0.299 * 255 (ITU-R 601-2, Pillow's conversion)
    image, size = load_image(write_png(tmp_path / "red.png", rgb), (1, 8, 8))
    assert image.shape == (1, 1, 8, 8) and size == (30, 20)
    assert image.mean().item() == pytest.approx(76 / 255, abs=0.01)
    err = capsys.readouterr().err
    assert "grayscale" in err and "30x20 to 8x8" in err

    grey, _ = load_image(write_png(tmp_path / "grey.png", np.full((8, 8), 255, dtype=np.uint8)), (3, 8, 8), (-1.0, 1.0))
    assert grey.shape == (1, 3, 8, 8) and torch.allclose(grey, torch.ones_like(grey))  # white -> top of [-1, 1]
    assert "RGB" in capsys.readouterr().err

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent: flattened onto black
    clear, _ = load_image(write_png(tmp_path / "clear.png", rgba), (1, 8, 8))
    assert clear.max() == 0.0 and "transparency" in capsys.readouterr().err

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    (tmp_path / "x.jpg").write_bytes(buffer.getvalue())
    jpeg, _ = load_image(tmp_path / "x.jpg", (1, 8, 8))
    assert jpeg.mean().item() == pytest.approx(128 / 255, abs=0.02) and capsys.readouterr().err == ""

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(GenlabError, match="cannot read image"):
        load_image(tmp_path / "broken.png", (1, 8, 8))
    truncated = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(truncated, format="PNG")
    (tmp_path / "cut.png").write_bytes(truncated.getvalue()[:200])
    with pytest.raises(GenlabError, match="cannot read image"):
        load_image(tmp_path / "cut.png", (1, 8, 8))
    with pytest.raises(GenlabError, match="no image file"):
        load_image(tmp_path / "missing.png", (1, 8, 8))


# ----------------------------------------------------------------------------- super-resolution


def test_downscale_and_bicubic_baseline():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert downscale(x, 2).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # means of the 2x2 blocks
    flat = torch.full((1, 1, 2, 2), 0.3)
    assert torch.allclose(bicubic_upscale(flat, 2), torch.full((1, 1, 4, 4), 0.3))
    assert bicubic_upscale(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), 4).max() <= 1.0  # clipped overshoot


def test_superres_model_starts_at_bicubic_and_learns_to_beat_it(sr_dir):
    untrained = SuperResolution(SuperResConfig(input_shape=(1, 8, 8), scale=2))
    low_res = downscale(digit_images(4), 2)
    assert torch.equal(untrained.upscale(low_res), bicubic_upscale(low_res, 2))  # zero residual at the start

    model = genlab.load(sr_dir)
    images = digit_images(64, seed=1)
    result = evaluate_superres(model, images)
    m = result["metrics"]
    assert result["upscaled"].shape == images.shape and 0.0 <= result["upscaled"].min() <= result["upscaled"].max() <= 1.0
    assert result["low_res"].shape == (64, 1, 4, 4)
    assert m["psnr"] > m["psnr_bicubic"] + 0.3 and m["ssim"] > m["ssim_bicubic"]
    with pytest.raises(GenlabError, match="low-resolution"):
        model.upscale(torch.zeros(1, 1, 8, 8))


def test_superres_x4_shapes_and_adversarial_step():
    model = SuperResolution(SuperResConfig(input_shape=(1, 8, 8), scale=4, channels=8, num_blocks=1,
                                           adversarial_weight=0.1, discriminator_channels=8))
    assert model.upscale(torch.rand(3, 1, 2, 2)).shape == (3, 1, 8, 8)
    assert set(model.configure_optimizers(genlab.config.TrainConfig())) == {"main", "discriminator"}

    class Step:
        def __init__(self, params):
            self.optimizer = torch.optim.Adam(params, lr=1e-3)

        def step(self, loss):
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    optimizers = {"main": Step(model.upsampler.parameters()), "discriminator": Step(model.discriminator.parameters())}
    logs = model.training_step({"x": digit_images(8)}, 0, optimizers)
    assert {"loss", "l1", "d_loss", "adversarial"} <= set(logs) and all(math.isfinite(v) for v in logs.values())
    with pytest.raises(GenlabError, match="divisible"):
        SuperResConfig(input_shape=(1, 10, 10), scale=4)
    with pytest.raises(GenlabError):
        model.sample(4)  # an upsampler does not sample


# ----------------------------------------------------------------------------- denoising


def test_noise_models():
    clean = torch.full((4, 1, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = add_noise(clean, "gaussian", 0.1, (0.0, 1.0), g)
    assert (noisy - clean).std().item() == pytest.approx(0.1, rel=0.05)  # 0.5 +- 0.1: clipping is rare
    wide = add_noise(torch.zeros(2, 1, 32, 32), "gaussian", 0.25, (-1.0, 1.0), g)
    assert wide.std().item() == pytest.approx(0.5, rel=0.05)  # sigma in units of the range (width 2)
    salted = add_noise(clean, "salt-pepper", 0.2, (0.0, 1.0), g)
    hit = salted != 0.5
    assert hit.float().mean().item() == pytest.approx(0.2, abs=0.02)
    assert set(salted[hit].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(add_noise(clean, "gaussian", 0.3, (0, 1), torch.Generator().manual_seed(5)),
                       add_noise(clean, "gaussian", 0.3, (0, 1), torch.Generator().manual_seed(5)))
    assert add_noise(clean, "gaussian", 2.0, (0, 1), g).min() >= 0.0  # clipped to the range


def test_classical_filters_and_denoiser(denoiser_dir):
    clean = digit_images(40, seed=2)
    noisy = add_noise(clean, "gaussian", 0.3, (0.0, 1.0), torch.Generator().manual_seed(0))
    filtered = classical_denoise(noisy, "median", 3)
    assert filtered.shape == clean.shape and filtered.dtype == torch.float32
    from skimage.filters import median

    assert np.allclose(filtered[0, 0].numpy(), median(noisy[0, 0].double().numpy(), footprint=np.ones((3, 3), bool)), atol=1e-6)

    model = genlab.load(denoiser_dir)
    result = evaluate_denoise(model, clean, "gaussian:0.3", tuning=digit_images(20, seed=3), seed=0)
    m = result["metrics"]
    assert result["denoised"].shape == clean.shape and 0.0 <= result["denoised"].min() and result["denoised"].max() <= 1.0
    assert m["psnr"] > m["psnr_noisy"] + 2.0  # even 80 steps learn to remove much of the noise
    assert m["psnr_classical"] > m["psnr_noisy"]  # a tuned filter helps too
    again = evaluate_denoise(model, clean, "gaussian:0.3", tuning=digit_images(20, seed=3), seed=0)["metrics"]
    assert again == m
    with pytest.raises(GenlabError, match="noise"):
        evaluate_denoise(model, clean, "speckle:0.1")
    with pytest.raises(GenlabError, match="channels|takes"):
        Denoiser(DenoiserConfig(input_shape=(1, 8, 8))).denoise(torch.zeros(1, 3, 8, 8))


# ----------------------------------------------------------------------------- anomaly


def test_auroc_by_hand_and_anomaly_scores(vae):
    # Pairs (anomaly, normal): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True])) == 0.75
    with pytest.raises(GenlabError, match="both"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([True, True]))
    images = digit_images(10)
    for method in ("elbo", "iwae", "recon"):
        scores = anomaly_scores(vae, images, method=method, samples=3, seed=1)
        assert scores.shape == (10,) and torch.isfinite(scores).all()
        assert torch.equal(scores, anomaly_scores(vae, images, method=method, samples=3, seed=1))
    # -ELBO = cross-entropy + KL, each positive for grey images; averaging draws only reduces noise.
    assert (anomaly_scores(vae, images, samples=20) > 0).all()
    with pytest.raises(GenlabError, match="score"):
        anomaly_scores(vae, images, method="vibes")
    with pytest.raises(GenlabError, match="log_likelihood"):
        anomaly_scores(SuperResolution(SuperResConfig(input_shape=(1, 8, 8))), images)


def test_one_class_vae_scores_other_digits_higher(tmp_path):
    # Digits 0 only, briefly: the other digits must already look more anomalous than held-out zeros.
    run = genlab.train("vae-digits", ["steps=150", "model.hidden=[64]", "model.latent_dim=4", "data.only_classes=[0]",
                                      *QUICK], out=tmp_path / "zeros")
    model = genlab.load(run)
    from genlab.tasks.images import dataset_images

    images, labels = dataset_images(model, "digits:test", None)  # the full test split, all digits
    assert set(labels.tolist()) == set(range(10))
    scores = anomaly_scores(model, images, samples=4)
    assert auroc(scores, labels != 0) > 0.8


# ----------------------------------------------------------------------------- interpolation and traversal


def test_slerp_and_interpolation_endpoints(vae):
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-6)
    mid = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.5]))[0]
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5)] * 2))  # on the unit circle, unlike the line's midpoint
    images = digit_images(2)
    mu, _ = vae.encode(images)
    for method in ("slerp", "linear"):
        frames = interpolate(vae, images[:1], images[1:], steps=6, method=method)
        assert frames.shape == (6, 1, 8, 8) and 0.0 <= frames.min() and frames.max() <= 1.0
        assert torch.allclose(frames[0], vae.decode(mu[:1])[0], atol=1e-5)
        assert torch.allclose(frames[-1], vae.decode(mu[1:])[0], atol=1e-5)
    with pytest.raises(GenlabError, match="steps"):
        interpolate(vae, images[:1], images[1:], steps=1)


def test_traversal_moves_one_dimension_at_a_time(vae):
    codes = []
    hook = vae.decoder.register_forward_pre_hook(lambda module, args: codes.append(args[0].detach().clone()))
    images = digit_images(8)
    try:
        grid, dims = traverse(vae, images[:1], dims=3, span=2.0, steps=5)
    finally:
        hook.remove()
    assert grid.shape == (3, 5, 1, 8, 8) and len(set(dims)) == 3
    z = codes[-1].view(3, 5, 4)
    mu, logvar = vae.encode(images[:1])
    for row, dim in enumerate(dims):
        others = [d for d in range(4) if d != dim]
        assert torch.allclose(z[row, :, dim], torch.linspace(-2, 2, 5))
        assert torch.allclose(z[row][:, others], mu[0, others].expand(5, 3))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)[0]
    assert dims == kl.argsort(descending=True)[:3].tolist()  # the most informative dimensions first
    prior_grid, prior_dims = traverse(vae, None, dims=2, steps=3)
    assert prior_grid.shape == (2, 3, 1, 8, 8) and prior_dims == [0, 1]


def test_gan_traversal_from_the_prior_centre_decodes_with_its_generator(gan):
    # A GAN has 'decode' (its generator) but no encoder: it traverses from z = 0, not from an image.
    grid, dims = traverse(gan, None, dims=2, span=1.0, steps=3)
    z = torch.zeros(2, 3, 4)
    z[0, :, 0] = z[1, :, 1] = torch.linspace(-1, 1, 3)
    assert dims == [0, 1] and torch.allclose(grid, gan.decode(z.view(6, 4), None).view(2, 3, 1, 8, 8))
    with pytest.raises(GenlabError, match="'encode'"):
        traverse(gan, torch.zeros(1, 1, 8, 8))


# ----------------------------------------------------------------------------- augmentation


def test_synthesis_and_the_classifier_comparison():
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2, num_classes=10, conditional=True)).eval()
    images, labels = synthesize(model, 3, seed=0)
    assert images.shape == (30, 1, 8, 8) and labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.equal(images, synthesize(model, 3, seed=0)[0])

    real = digit_images(200)
    from sklearn.datasets import load_digits

    all_labels = torch.from_numpy(load_digits().target)
    order = torch.randperm(len(all_labels), generator=torch.Generator().manual_seed(0))[:200]
    real_labels = all_labels[order]
    few, few_y = few_labels(real, real_labels, 2, seed=0)
    assert torch.bincount(few_y, minlength=10).tolist() == [2] * 10
    a = train_classifier(few, few_y, 10, steps=5, seed=1)
    b = train_classifier(few, few_y, 10, steps=5, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    result = augmentation_benefit(model, few, few_y, real, real_labels, synthetic_per_class=5, steps=10, seed=0)
    m = result["metrics"]
    assert m["real_examples"] == 20 and m["synthetic_examples"] == 50 and m["test_examples"] == 200
    # The real-only arm is exactly the plain classifier (same seed and steps): only the synthetic half differs.
    assert m["accuracy_real_only"] == accuracy(train_classifier(few, few_y, 10, steps=10, seed=0), real, real_labels)
    assert torch.equal(result["synthetic_images"], synthesize(model, 5, seed=0)[0])
    with pytest.raises(GenlabError, match="conditional"):
        synthesize(VAE(VAEConfig(input_shape=(1, 8, 8), hidden=(16,), latent_dim=2)), 3)


# ----------------------------------------------------------------------------- compression


def test_compression_codes_sizes_and_png_baseline(vae, tmp_path):
    images = digit_images(30)
    coarse, fine = fit_entropy_model(vae, images, 1.0), fit_entropy_model(vae, images, 0.05)
    codes = encode_codes(vae, images, 0.05)
    assert codes.dtype == torch.int8 and codes.shape == (30, 4)
    decoded = decode_codes(vae, codes, 0.05)
    assert decoded.shape == images.shape and 0.0 <= decoded.min() and decoded.max() <= 1.0
    assert torch.allclose(fine.probabilities.sum(1), torch.ones(4, dtype=torch.float64))
    # Hand check of the code length: -log2 P_i(k_i) summed over dimensions.
    p = fine.probabilities
    expected = -sum(math.log2(p[i, int(codes[0, i]) + 127].item()) for i in range(4))
    assert fine.bits(codes[:1]).item() == pytest.approx(expected)
    small, large = compress(vae, images, coarse)["metrics"], compress(vae, images, fine)["metrics"]
    assert 0 < small["bits_per_image"] < large["bits_per_image"]  # a finer step costs more bits ...
    assert large["psnr"] >= small["psnr"] - 0.5  # ... for at least as faithful a decoding (up to noise)
    file_size = tmp_path / "one.png"
    Image.fromarray((images[0, 0].numpy() * 255 + 0.5).astype(np.uint8)).save(file_size, optimize=True)
    assert png_bits(images[:1]).item() == 8 * file_size.stat().st_size


# ----------------------------------------------------------------------------- the command line


def test_every_task_has_help_with_examples(capsys):
    for task in ("inpaint", "superres", "denoise", "anomaly", "interpolate", "traverse", "augment", "compress"):
        with pytest.raises(SystemExit) as exit_info:
            main(["apply", task, "--help"])
        assert exit_info.value.code == 0 and "example" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["apply", "--help"])
    assert "inpaint" in capsys.readouterr().out


def test_cli_inpaint_file_keeps_known_pixels(tiny_model_dir, tmp_path, capsys):
    digit = (digit_images(1)[0, 0].numpy() * 255 + 0.5).astype(np.uint8)
    source = write_png(tmp_path / "digit.png", digit)
    out = tmp_path / "filled.png"
    code, stdout, err = run_cli(capsys, "apply", "inpaint", str(tiny_model_dir), str(source), "--mask", "box:2,2,4,4",
                                "--steps", "20", "-o", str(out))
    assert code == 0, err
    assert "mean fill" in stdout and "dB" in stdout
    filled = np.asarray(Image.open(out))
    known = np.ones((8, 8), dtype=bool)
    known[2:6, 2:6] = False
    assert filled.shape == (8, 8) and np.array_equal(filled[known], digit[known])

    code, stdout, err = run_cli(capsys, "apply", "inpaint", str(tiny_model_dir), "--against", "digits:test", "-n", "20",
                                "--mask", "half:bottom", "--steps", "10", "-o", str(tmp_path / "grid.png"))
    assert code == 0, err
    assert "20 images" in stdout and (tmp_path / "grid.png").is_file()


def test_cli_bad_input(tiny_model_dir, sr_dir, tmp_path, capsys):
    digit = write_png(tmp_path / "digit.png", np.full((8, 8), 200, dtype=np.uint8))
    model = str(tiny_model_dir)
    other_size = write_png(tmp_path / "mask16.png", np.full((16, 16), 255, dtype=np.uint8))
    empty = write_png(tmp_path / "empty.png", np.zeros((8, 8), dtype=np.uint8))
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, str(digit), "--mask", str(other_size))[::2], "16x16", "8x8")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, str(digit), "--mask", str(empty))[::2], "no pixel")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, str(broken), "--mask", "box:0,0,2,2")[::2], "cannot read")
    assert_clean_error(*run_cli(capsys, "apply", "superres", model, str(digit))[::2], "upscale", "superres")
    assert_clean_error(*run_cli(capsys, "apply", "denoise", model, str(digit))[::2], "denoise", "denoiser")
    assert_clean_error(*run_cli(capsys, "apply", "augment", model)[::2], "conditional", "vae")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", str(sr_dir), str(digit), "--mask", "box:0,0,2,2")[::2],
                       "'decode' capability", "gan")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, "--mask", "box:0,0,2,2")[::2], "no input")
    assert_clean_error(*run_cli(capsys, "apply", "compress", model, "--against", "digits:test", "--step", "0")[::2], "step")
    assert_clean_error(*run_cli(capsys, "apply", "denoise", model.replace("tiny", "none"), str(digit))[::2], "no model")

    # A colour image for a grayscale model is converted, with a notice, and the task runs.
    rgb = write_png(tmp_path / "rgb.png", np.full((24, 24, 3), 120, dtype=np.uint8))
    code, _, err = run_cli(capsys, "apply", "inpaint", model, str(rgb), "--mask", "box:0,0,12,12", "--steps", "5",
                           "-o", str(tmp_path / "o.png"))
    assert code == 0, err
    assert "grayscale" in err and "24x24 to 8x8" in err


def test_cli_superres_denoise_anomaly_interpolate_traverse_compress(tiny_model_dir, sr_dir, denoiser_dir, tmp_path, capsys):
    model = str(tiny_model_dir)
    code, out, err = run_cli(capsys, "apply", "superres", str(sr_dir), "--against", "digits:test", "-n", "40",
                             "-o", str(tmp_path / "sr.png"))
    assert code == 0, err
    assert "bicubic" in out and (tmp_path / "sr.png").is_file()
    small = write_png(tmp_path / "small.png", np.full((4, 4), 90, dtype=np.uint8))
    code, out, err = run_cli(capsys, "apply", "superres", str(sr_dir), str(small), "-o", str(tmp_path / "big.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "big.png").size == (8, 8)

    code, out, err = run_cli(capsys, "apply", "denoise", str(denoiser_dir), "--against", "digits:test", "-n", "30",
                             "--noise", "salt-pepper:0.2", "-o", str(tmp_path / "dn.png"))
    assert code == 0, err
    assert "noisy input" in out and "classical filter" in out

    digits = [write_png(tmp_path / f"d{i}.png", (digit_images(2)[i, 0].numpy() * 255).astype(np.uint8)) for i in range(2)]
    code, out, err = run_cli(capsys, "apply", "anomaly", model, *map(str, digits), "-o", str(tmp_path / "s.csv"))
    assert code == 0, err
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 3
    code, out, err = run_cli(capsys, "apply", "anomaly", model, "--against", "digits:test", "--normal-class", "1")
    assert code == 0, err
    assert "AUROC" in out

    code, out, err = run_cli(capsys, "apply", "interpolate", model, *map(str, digits), "--steps", "5",
                             "-o", str(tmp_path / "path.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "path.png").size == (8 * (5 * 10 + 2), 8 * 12)  # 5 tiles of 8 px, 2 px gaps, x8
    assert Image.open(tmp_path / "path.gif").n_frames > 1
    code, out, err = run_cli(capsys, "apply", "traverse", model, "--dims", "2", "--steps", "3", "-o", str(tmp_path / "t.png"))
    assert code == 0, err
    assert (tmp_path / "t.gif").is_file()

    code, out, err = run_cli(capsys, "apply", "compress", model, "--against", "digits:test", "-n", "50", "--fit-n", "200",
                             "-o", str(tmp_path / "codes.npz"))
    assert code == 0, err
    assert "PNG file" in out
    codes = np.load(tmp_path / "codes.npz")
    assert codes["codes"].shape == (50, 4) and codes["codes"].dtype == np.int8


@pytest.mark.parametrize("recipe, task", [("sr-mnist-x2", "superres"), ("denoise-mnist", "denoise")])
def test_train_suggests_the_task_a_model_is_for(recipe, task, tmp_path, capsys):
    # These models cannot sample, so the hint after training points at `genlab apply`.
    out = tmp_path / recipe
    code, stdout, _ = run_cli(capsys, "train", recipe, "data.name=digits", "steps=2", "model.channels=8", *QUICK,
                              "--out", str(out))
    assert code == 0
    assert f"next: genlab apply {task} {out} --against digits:test" in stdout and "genlab sample" not in stdout


def test_sampling_an_image_to_image_model_is_a_clear_error(sr_dir, denoiser_dir, capsys):
    # GenerativeModel.sample asks for the capability, so these families need no sample() of their own.
    for model_dir in (sr_dir, denoiser_dir):
        assert_clean_error(*run_cli(capsys, "sample", str(model_dir), "-n", "4")[::2], "'sample' capability", "vae", "gan")
