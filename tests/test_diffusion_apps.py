"""The diffusion family's applications (issue 14): a 2-D toy trained through `genlab.train`
covers its modes; RePaint inpainting equals diffusers' pipeline, keeps the known pixels and
beats mean fill; DDIM inversion round-trips; bad input is a one-line error (exit code 2).

The toy: 8 Gaussians (std 0.04) on a circle of radius 0.7 in [-1, 1]^2. A point (x, y) is the
1-channel 2x2 image [[x, y], [x, y]] (stored as an npz data set, uint8 like any image), so one
small model serves both the mode test (a point is the mean of the two rows) and inpainting
(the bottom row is the top row again, which mean fill cannot know). The UNet has one
resolution, so 2x2 needs no downsampling.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, RePaintPipeline, RePaintScheduler
from PIL import Image

import genlab
from genlab.errors import GenlabError
from genlab.imageio import to_uint8
from genlab.models.diffusion import Diffusion, DiffusionConfig
from genlab.sampling.diffusion import (alphas_cumprod, denoise, epsilon_from_v, invert, make_inverse_scheduler,
                                       make_repaint_scheduler, make_scheduler, repaint, repaint_evaluations)
from genlab.tasks.inpaint import inpaint, masked_psnr, mean_fill

from conftest import assert_clean_error, run_cli

RADIUS, STD = 0.7, 0.04
ANGLES = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
CENTRES = torch.stack([ANGLES.cos(), ANGLES.sin()], 1) * RADIUS  # [8, 2]
NEAR = 0.15  # "near a mode": 3.75 standard deviations, where 99.9% of the true distribution lies
BOTTOM_ROW = torch.tensor([[False, False], [True, True]]).view(1, 1, 2, 2)  # True = missing
DATA_RANGE = (-1.0, 1.0)


def toy_points(n: int, seed: int) -> torch.Tensor:
    """[n, 2] float64 draws of the 8-Gaussian ring."""
    generator = torch.Generator().manual_seed(seed)
    mode = torch.randint(0, 8, (n,), generator=generator)
    return CENTRES[mode] + STD * torch.randn((n, 2), generator=generator, dtype=torch.float64)


def as_images(points: torch.Tensor) -> torch.Tensor:
    """[n, 2] points -> [n, 1, 2, 2] images [[x, y], [x, y]] in [-1, 1], on the uint8 grid the
    data set stores (so that an input image is exactly what a PNG file would give)."""
    images = points.float()[:, None, None, :].expand(-1, 1, 2, 2)
    return to_uint8(images, DATA_RANGE).float() / 255 * 2 - 1


def image_points(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0].mean(1).double()  # the mean of the two rows: [n, 2]


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image, DATA_RANGE)[0, 0].numpy()).save(buffer, format="PNG")  # [1, 1, H, W] -> grey
    return buffer.getvalue()


def schedule_of(model) -> dict:
    cfg = model.config
    return dict(timesteps=cfg.timesteps, schedule=cfg.schedule, beta_start=cfg.beta_start, beta_end=cfg.beta_end)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """The toy trained through genlab.train: 800 steps of 256 points, about 25 s on 2 cores."""
    root = tmp_path_factory.mktemp("diffusion-apps")
    images = to_uint8(as_images(toy_points(4000, 0)), DATA_RANGE)[:, 0].numpy()  # [4000, 2, 2] uint8
    np.savez(root / "ring.npz", x_train=images, y_train=np.zeros(len(images), dtype=np.int64))
    recipe = {
        "family": "diffusion",
        "data": {"name": f"npz:{root / 'ring.npz'}", "scale": "symmetric"},
        "model": {"channels": [32], "norm_groups": 8, "timesteps": 1000, "schedule": "cosine", "prediction": "epsilon",
                  "sample_steps": 50, "preview_steps": 5},
        "train": {"steps": 800, "batch_size": 256, "lr": 3e-3, "lr_schedule": "cosine", "ema_decay": 0.99,
                  "progress": False, "tensorboard": False, "eval_batches": 1, "samples_every": 100_000,
                  "checkpoint_every": 100_000},
    }
    return genlab.train(recipe, out=root / "models" / "ring")


@pytest.fixture(scope="module")
def toy(toy_dir):
    return genlab.load(toy_dir)


# ----------------------------------------------------------------------------- the 2-D toy


def test_the_toy_covers_all_eight_modes(toy):
    samples = genlab.sample(toy, 2000, seed=0, sampler="ddim", steps=50)  # [2000, 1, 2, 2]
    distance, mode = torch.cdist(image_points(samples), CENTRES).min(1)
    near = distance < NEAR
    counts = torch.bincount(mode[near], minlength=8)
    # Most samples lie near a mode (800 steps leave some between modes: ~89% are near one here), and
    # every mode gets its share (12.5% of draws each under the data; the rarest gets ~10% here).
    assert near.float().mean() > 0.75, near.float().mean()
    assert counts.min() >= 0.04 * len(samples), counts.tolist()


# ----------------------------------------------------------------------------- RePaint


def test_repaint_scheduler_uses_the_training_noise_schedule():
    for schedule in ("linear", "cosine"):
        kwargs = dict(timesteps=1000, schedule=schedule, beta_start=1e-4, beta_end=0.02)
        assert torch.allclose(make_repaint_scheduler(**kwargs).alphas_cumprod, alphas_cumprod(**kwargs), atol=1e-7)


@pytest.mark.filterwarnings("ignore:The preprocess method is deprecated:FutureWarning")
def test_repaint_loop_equals_diffusers_pipeline(toy):
    """genlab's loop against diffusers' RePaintPipeline on the same network, image, mask and seed
    (the mask convention: diffusers' 1 = known)."""
    x0 = toy.to_diffusion_space(as_images(toy_points(4, 3)))  # [4, 1, 2, 2]
    known = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(4, 1, 2, 2)
    kwargs = dict(steps=20, jump_length=5, jump_n_sample=3)

    ours = repaint(lambda x, t: toy.predict(x, t), x0, known, make_repaint_scheduler(**schedule_of(toy), eta=1.0),
                   kwargs["steps"], jump_length=5, jump_n_sample=3, generator=torch.Generator().manual_seed(7))

    scheduler = RePaintScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    pipeline = RePaintPipeline(unet=toy.unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    theirs = pipeline(x0, known, num_inference_steps=20, eta=1.0, jump_length=5, jump_n_sample=3,
                      generator=torch.Generator().manual_seed(7), output_type="np").images  # [4, 2, 2, 1]
    assert np.allclose((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), theirs, atol=1e-6)
    assert not torch.allclose(ours * (1 - known), x0 * (1 - known), atol=1e-3)  # it did fill in


def test_repaint_evaluations_counts_the_network_calls():
    scheduler = make_repaint_scheduler(timesteps=1000, schedule="linear", beta_start=1e-4, beta_end=0.02)
    x0, known = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    for steps, jump_length, jump_n_sample in ((50, 10, 5), (20, 5, 1), (7, 10, 4), (33, 4, 3)):
        calls = []
        repaint(lambda x, t: calls.append(t) or torch.zeros_like(x), x0, known, scheduler, steps,
                jump_length=jump_length, jump_n_sample=jump_n_sample, generator=torch.Generator().manual_seed(0))
        assert len(calls) == repaint_evaluations(steps, jump_length, jump_n_sample)
    assert repaint_evaluations(50, 10, 5) == 210  # the default: 50 steps, 4 jump points passed 5 times


def test_a_v_prediction_is_converted_to_the_noise_it_implies():
    """RePaintScheduler takes eps; a v-model's output goes through epsilon_from_v (checked against
    diffusers' get_velocity and add_noise)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    x0, noise, t = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4), torch.tensor([3, 500, 990])
    v, x_t = scheduler.get_velocity(x0, noise, t), scheduler.add_noise(x0, noise, t)
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(epsilon_from_v(v, x_t, alpha_bar), noise, atol=1e-5)


def test_repaint_keeps_known_pixels_and_beats_mean_fill(toy):
    truth = as_images(toy_points(64, 1))  # [64, 1, 2, 2]; the bottom row (a copy of the top) is hidden
    result = inpaint(toy, truth, BOTTOM_ROW, seed=0)  # a diffusion model: repaint, 50 steps, jumps 10 x 5
    known = ~BOTTOM_ROW.expand_as(truth)
    assert torch.equal(result[known], truth[known])  # bit for bit
    # The hidden pixels are never read: garbage there gives the same result, bit for bit.
    assert torch.equal(inpaint(toy, torch.where(known, truth, torch.tensor(0.9)), BOTTOM_ROW, seed=0), result)
    assert torch.equal(inpaint(toy, truth, BOTTOM_ROW, seed=0, method="repaint", steps=50), result)
    assert not torch.equal(inpaint(toy, truth, BOTTOM_ROW, seed=1), result)

    psnr = masked_psnr(result, truth, BOTTOM_ROW, DATA_RANGE)
    mean_fill_psnr = masked_psnr(mean_fill(truth, BOTTOM_ROW, DATA_RANGE), truth, BOTTOM_ROW, DATA_RANGE)
    # Mean fill puts (x + y) / 2 in both hidden pixels (~15.5 dB); a draw from the prior that ignored
    # the known row is worse still (~9.5 dB). RePaint copies the row to within ~0.04: ~34.5 dB here.
    assert psnr > mean_fill_psnr + 10, (psnr, mean_fill_psnr)
    # The resampling jumps are what make the fill agree with the known row (~26-28 dB without them).
    without_jumps = masked_psnr(inpaint(toy, truth, BOTTOM_ROW, seed=0, jump_n_sample=1), truth, BOTTOM_ROW,
                                DATA_RANGE)
    assert psnr > without_jumps + 2, (psnr, without_jumps)
    filled_points = result[:, 0, 1].double()  # the filled bottom row, as a point
    assert (torch.cdist(filled_points, CENTRES).min(1).values < NEAR).float().mean() > 0.9


def test_repaint_refuses_what_it_cannot_do(toy):
    images = as_images(toy_points(2, 0))
    with pytest.raises(GenlabError, match="mask"):
        inpaint(toy, images, torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(GenlabError, match="latent space"):
        inpaint(toy, images, BOTTOM_ROW, method="optimize")
    for bad, needle in ((dict(steps=0), "steps"), (dict(steps=1001), "1..1000"), (dict(jump_length=0), "jump_length"),
                        (dict(jump_n_sample=0), "jump_n_sample"), (dict(eta=1.5), "eta"), (dict(labels=3), "unconditional"),
                        (dict(guidance_scale=2.0), "guidance")):
        with pytest.raises(GenlabError, match=needle):
            inpaint(toy, images, BOTTOM_ROW, **bad)
    latent = genlab.load(toy.artifact_dir)
    latent.config.latent_channels = 4  # what a latent diffusion model's config says
    with pytest.raises(GenlabError) as info:
        inpaint(latent, images, BOTTOM_ROW)
    assert "latent" in info.value.message and "pixel-space" in info.value.hint and "\n" not in info.value.message


def test_repaint_guides_a_conditional_model_by_the_class():
    """The class and the guidance scale reach the network (a tiny untrained v-predicting model)."""
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(input_shape=(1, 8, 8), channels=(8, 16), norm_groups=4, conditional=True,
                                      num_classes=3, prediction="v", guidance_scale=2.5)).eval()
    seen = []
    predict = model.predict
    model.predict = lambda x, t, labels=None, scale=1.0: (seen.append((labels, scale)), predict(x, t, labels, scale))[1]
    images, mask = torch.rand(2, 1, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 4:, :] = True
    result = inpaint(model, images, mask, labels=2, steps=4, jump_length=2, jump_n_sample=2)
    assert torch.equal(result[~mask.expand_as(images)], images[~mask.expand_as(images)]) and result.isfinite().all()
    assert len(seen) == repaint_evaluations(4, 2, 2) and all(labels.tolist() == [2, 2] and scale == 2.5
                                                              for labels, scale in seen)
    seen.clear()
    inpaint(model, images, mask, steps=2, guidance_scale=None)
    assert seen and all(labels is None and scale == 1.0 for labels, scale in seen)  # the null label's prediction
    with pytest.raises(GenlabError, match="out of range"):
        inpaint(model, images, mask, labels=3, steps=2)


# ----------------------------------------------------------------------------- DDIM inversion


def exact_ring_predict(alpha_bar: torch.Tensor):
    """The exact noise prediction E[eps | x_t] for the toy's distribution (the data as 4-pixel
    vectors x_0 = A p, p from the 8-Gaussian mixture): under component k, x_t is Gaussian with
    mean sqrt(a) A mu_k and covariance a std^2 A A^T + (1 - a) I, so
    E[eps | x_t] = sqrt(1 - a) Cov^-1 (x_t - sum_k w_k(x_t) sqrt(a) A mu_k)."""
    lift = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # A: [4, 2]

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alpha_bar[t]
        x = x_t.double().flatten(1)  # [n, 4]
        precision = torch.linalg.inv(a * STD**2 * lift @ lift.T + (1 - a) * torch.eye(4, dtype=torch.float64))
        means = a.sqrt() * CENTRES @ lift.T  # [8, 4]
        d = x[:, None] - means  # [n, 8, 4]
        weights = (-0.5 * torch.einsum("nki,ij,nkj->nk", d, precision, d)).softmax(1)  # [n, 8]
        return ((1 - a).sqrt() * (x - weights @ means) @ precision).float().view(x_t.shape)

    return predict


def test_ddim_inversion_converges_under_the_exact_noise_prediction():
    """With the true E[eps | x_t] the only error left is the discretisation's (the inverse step
    predicts at x_s what the sampler predicts at x_t): it shrinks as the steps grow."""
    schedule = dict(timesteps=1000, schedule="cosine", beta_start=1e-4, beta_end=0.02)
    predict = exact_ring_predict(alphas_cumprod(**schedule).double())
    x0 = toy_points(64, 2).float()[:, None, None, :].expand(-1, 1, 2, 2)  # [64, 1, 2, 2], on the data's support
    errors = []
    for steps in (10, 50, 200):
        x_T = invert(predict, x0, make_inverse_scheduler(**schedule, prediction="epsilon"), steps)
        back = denoise(predict, tuple(x0.shape), make_scheduler("ddim", **schedule, prediction="epsilon"), steps,
                       generator=None, device="cpu", x_T=x_T)
        errors.append((back - x0).abs().flatten(1).amax(1))  # per image, the worst pixel
    medians = [error.median().item() for error in errors]  # ~0.03, 0.012, 0.003
    assert medians[0] > medians[1] > 2 * medians[2], medians
    assert medians[2] < 0.005 and errors[2].max() < 0.02, (medians, errors[2].max())  # ~0.01: 1.3 steps of 8 bits


def test_ddim_inversion_round_trips_and_ddim_is_deterministic(toy):
    x0 = toy.to_diffusion_space(as_images(toy_points(64, 2)))  # [64, 1, 2, 2]
    predict = lambda x, t: toy.predict(x, t)  # noqa: E731
    kwargs = dict(**schedule_of(toy), prediction=toy.config.prediction)
    x_T = invert(predict, x0, make_inverse_scheduler(**kwargs), 50)

    def ddim(start, seed):
        return denoise(predict, tuple(x0.shape), make_scheduler("ddim", **kwargs), 50, eta=0.0, x_T=start,
                       generator=torch.Generator().manual_seed(seed), device="cpu")

    back = ddim(x_T, 0)
    assert torch.equal(back, ddim(x_T, 1))  # eta = 0: x_T alone decides x_0, bit for bit
    error = (back - x0).abs().flatten(1).amax(1)  # per image, the worst pixel
    # Tolerance: each inverse step predicts at x_s what the sampler predicts at x_t, and near t = T
    # (cosine: alpha_bar_T ~ 0) any error of the network is divided by sqrt(alpha_bar_t) on the way
    # back. With 50 steps this toy comes back to ~0.015 (median; the exact prediction's own
    # discretisation error is ~0.012, see above) of [-1, 1], 90% within ~0.04; one or two points
    # of 64, 2 std off their mode towards the ring's middle where this little-trained network's
    # flow is wrong, come back near a neighbouring mode. So: the median within 0.03 (4 steps of the
    # 8-bit data grid), 90% within 0.06, and at least 60 of the 64 in their own mode.
    assert error.median() < 0.03 and error.quantile(0.9) < 0.06, (error.median(), error.quantile(0.9))
    modes = torch.cdist(image_points(x0), CENTRES).argmin(1)
    assert (torch.cdist(image_points(back), CENTRES).argmin(1) == modes).sum() >= 60
    # ... where a fresh x_T lands anywhere on the ring.
    fresh = ddim(torch.randn(x0.shape, generator=torch.Generator().manual_seed(5)), 0)
    assert (fresh - x0).abs().flatten(1).amax(1).median() > 0.3


# ----------------------------------------------------------------------------- the command line and HTTP


def test_cli_inpaints_with_repaint(toy_dir, tmp_path, capsys):
    truth = as_images(toy_points(1, 4))
    source = tmp_path / "point.png"
    source.write_bytes(png_bytes(truth))
    out = tmp_path / "filled.png"
    code, stdout, err = run_cli(capsys, "apply", "inpaint", str(toy_dir), str(source), "--mask", "half:bottom",
                                "--steps", "30", "--jump-n-sample", "3", "-o", str(out))
    assert code == 0, err
    assert "repaint, 30 steps, jumps of 10 x 3: 70 network calls" in stdout
    filled = np.asarray(Image.open(out))
    assert np.array_equal(filled[0], to_uint8(truth, DATA_RANGE)[0, 0, 0].numpy())  # the known row, exactly
    code, stdout, err = run_cli(capsys, "apply", "inpaint", str(toy_dir), "--against", "test", "-n", "32",
                                "--mask", "half:bottom", "-o", str(tmp_path / "grid.png"))
    assert code == 0, err
    gain = float(stdout.split("gain")[1].split("dB")[0])
    assert gain > 5, stdout


def test_cli_bad_repaint_input_is_a_one_line_error(toy_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    source = tmp_path / "point.png"
    source.write_bytes(png_bytes(as_images(toy_points(1, 0))))
    other_size = tmp_path / "mask3.png"
    Image.fromarray(np.full((3, 3), 255, dtype=np.uint8)).save(other_size)
    model, image = str(toy_dir), str(source)
    out = ["-o", str(tmp_path / "x.png")]
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", str(other_size), *out)[::2],
                       "3x3", "2x2")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", "half:top", "--method",
                                "optimize", *out)[::2], "repaint")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", "half:top", "--steps", "5000",
                                *out)[::2], "1..1000")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", "half:top", "--jump-n-sample",
                                "0", *out)[::2], "--jump-n-sample")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", "half:top", "--eta", "2",
                                *out)[::2], "--eta")
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", str(tiny_model_dir), image, "--mask", "half:top",
                                "--method", "repaint", *out)[::2], "needs a diffusion model", "vae")

    import genlab.artifact

    load = genlab.artifact.load

    def load_as_latent(path, *args, **kwargs):  # the model as a latent diffusion model's config describes it
        loaded = load(path, *args, **kwargs)
        loaded.config.latent_channels = 4
        return loaded

    monkeypatch.setattr(genlab.artifact, "load", load_as_latent)
    assert_clean_error(*run_cli(capsys, "apply", "inpaint", model, image, "--mask", "half:top", *out)[::2],
                       "autoencoder latents", "train a pixel-space diffusion model")


def test_the_inpaint_route_serves_diffusion_models(toy_dir, toy):
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    truth = as_images(toy_points(1, 6))
    files = {"image": ("point.png", png_bytes(truth), "image/png")}
    with TestClient(create_app(toy_dir.parent, workers=1), base_url="http://127.0.0.1") as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert "/v1/images/inpaint" in listed["ring"]["endpoints"]
        form = client.get("/openapi.json").json()["components"]["schemas"]
        method = next(schema["properties"]["method"] for schema in form.values()
                      if "jump_n_sample" in schema.get("properties", {}))
        assert "repaint" in method["enum"] and method["default"] == "auto"  # the studio's generic form reads this

        fields = {"model": "ring", "mask_spec": "half:bottom", "steps": "20", "jump_n_sample": "2", "seed": "3"}
        reply = client.post("/v1/images/inpaint", data=fields, files=files)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["method"] == "repaint" and body["masked_pixels"] == 2
        result = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))))
        expected = inpaint(toy, truth, BOTTOM_ROW, steps=20, jump_n_sample=2, seed=3)
        assert np.array_equal(result, to_uint8(expected, DATA_RANGE)[0, 0].numpy())
        assert np.array_equal(result[0], to_uint8(truth, DATA_RANGE)[0, 0, 0].numpy())

        too_much = client.post("/v1/images/inpaint", data={**fields, "steps": "1000", "jump_n_sample": "20"},
                               files=files)
        assert too_much.status_code == 413 and "network calls" in too_much.json()["error"]["message"]
        wrong = client.post("/v1/images/inpaint", data={**fields, "method": "optimize"}, files=files)
        assert wrong.status_code == 400 and "repaint" in wrong.json()["error"]["hint"]
