"""The diffusion family: the forward process, the samplers against diffusers, determinism,
classifier-free guidance, training/saving/sampling through the CLI, exact resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from safetensors.torch import load_file

import genlab
from genlab.errors import GenlabError
from genlab.models.diffusion import Diffusion, DiffusionConfig
from genlab.sampling.diffusion import denoise, make_scheduler

from conftest import assert_clean_error, run_cli

TINY = dict(input_shape=(1, 8, 8), channels=(8, 16), norm_groups=4, sample_steps=4, preview_steps=2)
# Recipe overrides for a model that trains in seconds.
TINY_RECIPE = ["model.channels=[8,16]", "model.norm_groups=4", "model.sample_steps=4", "model.preview_steps=2",
               "batch_size=32", "train.progress=false", "train.tensorboard=false", "train.eval_batches=1",
               "train.samples_every=1000"]


def tiny_model(**overrides) -> Diffusion:
    torch.manual_seed(0)
    return Diffusion(DiffusionConfig(**{**TINY, **overrides})).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion") / "ddpm-digits-tiny"
    return genlab.train("ddpm-digits", ["steps=6", *TINY_RECIPE], out=out)


# ----------------------------------------------------------------------------- forward process


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_matches_its_closed_form(schedule):
    model = tiny_model(schedule=schedule)
    T = model.config.timesteps
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    else:  # Nichol & Dhariwal 2021, betas capped at 0.999
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    assert torch.allclose(model.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), atol=1e-6)

    # x_t | x_0 ~ N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), over many draws of eps
    x0 = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    draws = 20_000
    generator = torch.Generator().manual_seed(0)
    for t in (0, 250, 999):
        noise = torch.randn((draws, 1, 8, 8), generator=generator)
        x_t = model.add_noise(x0.expand(draws, -1, -1, -1), noise, torch.full((draws,), t))
        alpha_bar = model.alphas_cumprod[t]
        assert torch.allclose(x_t.mean(0), alpha_bar.sqrt() * x0[0], atol=4 / math.sqrt(draws))
        assert torch.allclose(x_t.var(0), (1 - alpha_bar).expand(1, 8, 8), rtol=0.05, atol=1e-4)
        # ... and equals diffusers' add_noise on the same eps
        reference = DDPMScheduler(num_train_timesteps=T, beta_schedule={"linear": "linear", "cosine": "squaredcos_cap_v2"}[schedule])
        expected = reference.add_noise(x0.expand(4, -1, -1, -1), noise[:4], torch.full((4,), t))
        assert torch.allclose(x_t[:4], expected, atol=1e-6)


def test_v_target_is_the_velocity():
    model = tiny_model(prediction="v")
    x0, noise, t = torch.rand(3, 1, 8, 8) * 2 - 1, torch.randn(3, 1, 8, 8), torch.tensor([5, 500, 995])
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    assert torch.allclose(model.target(x0, noise, t), scheduler.get_velocity(x0, noise, t), atol=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_min_snr_weighting_is_one_loss_on_x0_in_both_parametrisations(prediction):
    """min-SNR-gamma: w_t ||f - target||^2 = min(SNR_t, gamma) ||x0_hat - x0||^2, whichever the target."""
    gamma = 5.0
    model = tiny_model(prediction=prediction, min_snr_gamma=gamma)
    t = torch.tensor([0, 10, 100, 300, 600, 999])
    alpha_bar = model.alphas_cumprod[t].double()
    snr = alpha_bar / (1 - alpha_bar)
    x0, noise = torch.rand(6, 1, 8, 8).double() * 2 - 1, torch.randn(6, 1, 8, 8).double()
    output = torch.randn(6, 1, 8, 8).double()  # any network output
    a, s = alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    x_t = a * x0 + s * noise
    x0_hat = (x_t - s * output) / a if prediction == "epsilon" else a * x_t - s * output
    on_x0 = snr.clamp(max=gamma) * (x0_hat - x0).pow(2).flatten(1).mean(1)
    target = model.target(x0.float(), noise.float(), t).double()
    weighted = model.loss_weights(t).double() * (output - target).pow(2).flatten(1).mean(1)
    assert torch.allclose(weighted, on_x0, rtol=1e-4, atol=1e-6)
    last = 1.0 if prediction == "epsilon" else (snr[-1] / (snr[-1] + 1)).item()  # SNR_T < gamma: no clipping
    assert model.loss_weights(t)[0] < 0.01 and model.loss_weights(t)[-1].item() == pytest.approx(last, rel=1e-4)

    # and the training loss is the weighted mean: the same draws give the plain loss when gamma = 0
    batch = torch.rand(4, 1, 8, 8)
    weighted_loss = model.loss(batch, None, torch.Generator().manual_seed(3))
    plain = tiny_model(prediction=prediction).loss(batch, None, torch.Generator().manual_seed(3))
    assert weighted_loss.item() != pytest.approx(plain.item(), rel=1e-3)
    with pytest.raises(GenlabError, match="min_snr_gamma"):
        DiffusionConfig(**{**TINY, "min_snr_gamma": -1.0})


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7), ("dpm++", 0.0)])
def test_sampler_loop_equals_diffusers_steps(sampler, eta):
    """genlab's loop (noise from genlab.tensors.randn) against diffusers' schedulers driven by hand."""
    weight = torch.linspace(0.5, 1.5, 64).view(1, 1, 8, 8)

    def predict(x, t):  # any deterministic function of (x_t, t) will do
        return torch.tanh(x * weight) * (t.float() / 1000)

    kwargs = dict(timesteps=1000, schedule="cosine", beta_start=1e-4, beta_end=0.02, prediction="epsilon")
    ours = denoise(predict, (3, 1, 8, 8), make_scheduler(sampler, **kwargs), 7,
                   generator=torch.Generator().manual_seed(5), device="cpu", eta=eta)

    common = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    scheduler = {"ddpm": lambda: DDPMScheduler(**common),
                 "ddim": lambda: DDIMScheduler(**common),
                 "dpm++": lambda: DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                                             thresholding=True, sample_max_value=1.0)}[sampler]()
    scheduler.set_timesteps(7)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn((3, 1, 8, 8), generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = predict(scheduler.scale_model_input(x, t), t)
        if sampler == "ddim":
            noise = torch.randn(x.shape, generator=generator) if eta > 0 else None
            x = scheduler.step(output, t, x, eta=eta, variance_noise=noise).prev_sample
        elif sampler == "ddpm":
            x = scheduler.step(output, t, x, generator=generator).prev_sample
        else:
            x = scheduler.step(output, t, x).prev_sample
    assert torch.equal(ours, x)


def test_ddim_eta_0_draws_no_noise_after_x_T():
    """Deterministic given x_T: disturbing the generator between steps changes nothing at eta 0,
    and changes the result at eta > 0 (where each step adds noise)."""
    model = tiny_model()

    def run(eta: float, disturb: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        callback = (lambda i, x: torch.rand(1, generator=generator)) if disturb else None
        return model.sample(2, generator=generator, sampler="ddim", steps=3, eta=eta, callback=callback)

    assert torch.equal(run(0.0, False), run(0.0, True))
    assert not torch.equal(run(0.7, False), run(0.7, True))


def test_ddim_is_reproducible_from_the_seed():
    model = tiny_model()
    a = genlab.sample(model, 4, seed=1, sampler="ddim", steps=3)
    b = genlab.sample(model, 4, seed=1, sampler="ddim", steps=3)
    c = genlab.sample(model, 4, seed=2, sampler="ddim", steps=3)
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1  # the data range


@pytest.mark.parametrize("sampler", ["ddpm", "dpm++"])
def test_other_samplers_are_reproducible_from_the_seed(sampler):
    model = tiny_model(prediction="v")
    a = genlab.sample(model, 3, seed=4, sampler=sampler, steps=3)
    assert torch.equal(a, genlab.sample(model, 3, seed=4, sampler=sampler, steps=3))
    assert torch.isfinite(a).all()


# ----------------------------------------------------------------------------- guidance


def test_guidance_scale_0_is_unconditional_and_1_conditional():
    model = tiny_model(conditional=True, num_classes=10)
    with torch.no_grad():  # a label embedding that matters (diffusers initialises it randomly)
        model.unet.class_embedding.weight.mul_(5)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor(400)
    labels = torch.tensor([0, 3, 3, 9])
    with torch.no_grad():
        unconditional = model(x, t.expand(4), torch.full((4,), 10))
        conditional = model(x, t.expand(4), labels)
        assert not torch.allclose(unconditional, conditional)
        assert torch.equal(model.predict(x, t, labels, 0.0), unconditional)
        assert torch.equal(model.predict(x, t, labels, 1.0), conditional)
        mixed = model.predict(x, t, labels, 3.0)  # the batched [cond; uncond] pass
        assert torch.allclose(mixed, unconditional + 3.0 * (conditional - unconditional), atol=1e-5)
    images = genlab.sample(model, 4, seed=0, condition=3, guidance_scale=2.5, steps=2)
    assert images.shape == (4, 1, 8, 8)


def test_label_dropout_trains_the_null_label():
    model = tiny_model(conditional=True, num_classes=10, label_dropout=0.5).train()
    seen = []
    original = model.unet.forward
    model.unet.forward = lambda x, t, class_labels=None: (seen.append(class_labels), original(x, t, class_labels))[1]
    model.loss(torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    assert 10 < (seen[0] == 10).sum() < 54  # about half the labels are the null label


# ----------------------------------------------------------------------------- training and the CLI


def test_digits_model_trains_saves_loads_and_samples_through_the_cli(trained, tmp_path, capsys):
    assert (trained / "model.safetensors").exists()
    model = genlab.load(trained)
    assert model.family == "diffusion" and model.capabilities == {"sample"}
    for sampler in ("ddpm", "ddim", "dpm++"):
        grid = tmp_path / f"{sampler}.png"
        code, out, err = run_cli(capsys, "sample", str(trained), "-n", "8", "--sampler", sampler, "--steps", "3",
                                 "-o", str(grid))
        assert code == 0, err
        assert grid.exists() and "wrote 8 samples" in out
    code, _, err = run_cli(capsys, "sample", str(trained), "-n", "4", "-o", str(tmp_path / "default.png"))
    assert code == 0, err


def test_resume_is_exact(tmp_path):
    common = [*TINY_RECIPE, "train.checkpoint_every=5", "train.eval_every=5"]
    straight = genlab.train("ddpm-digits", ["steps=10", *common], out=tmp_path / "straight")
    first = genlab.train("ddpm-digits", ["steps=5", *common], out=tmp_path / "split")
    resumed = genlab.train(None, ["steps=10"], out=first, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- bad input


def test_bad_sampling_input_is_a_one_line_error(trained, tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    code, _, err = run_cli(capsys, "sample", str(trained), "--sampler", "euler", "-o", out)
    assert_clean_error(code, err, "unknown sampler", "ddpm, ddim, dpm++")
    code, _, err = run_cli(capsys, "sample", str(trained), "--steps", "0", "-o", out)
    assert_clean_error(code, err, "--steps")
    code, _, err = run_cli(capsys, "sample", str(trained), "--steps", "1001", "-o", out)
    assert_clean_error(code, err, "1..1000")
    code, _, err = run_cli(capsys, "sample", str(trained), "--guidance", "3", "-o", out)
    assert_clean_error(code, err, "unconditional")
    code, _, err = run_cli(capsys, "sample", str(tiny_model_dir), "--steps", "5", "-o", out)  # a VAE
    assert_clean_error(code, err, "vae models take no --steps")
    vae = genlab.load(tiny_model_dir)
    with pytest.raises(GenlabError, match="--guidance"):
        genlab.sample(vae, 2, guidance_scale=2.0)
    model = tiny_model()
    for bad, needle in ((dict(steps=0), "steps"), (dict(steps=2000), "steps"), (dict(steps=2.5), "steps"),
                        (dict(sampler="heun"), "sampler"), (dict(guidance_scale=1.0), "guidance")):
        with pytest.raises(GenlabError, match=needle):
            genlab.sample(model, 2, **bad)
    conditional = tiny_model(conditional=True)
    for bad, needle in ((dict(guidance_scale=-1.0), "guidance"), (dict(guidance_scale=float("nan")), "guidance"),
                        (dict(condition=10), "class")):
        with pytest.raises(GenlabError, match=needle):
            genlab.sample(conditional, 2, **bad)


@pytest.mark.parametrize("override", ["model.schedule=quadratic", "model.prediction=x0", "model.sampler=euler",
                                      "model.channels=[8,16,32,64,128]", "model.sample_steps=0", "model.timesteps=0"])
def test_bad_config_is_refused(override):
    with pytest.raises(GenlabError, match=override.split(".")[1].split("=")[0]):
        DiffusionConfig(**{**TINY, **_parse(override)})


def _parse(override: str) -> dict:
    key, value = override.split("=")
    key = key.removeprefix("model.")
    if value.startswith("["):
        return {key: tuple(int(v) for v in value[1:-1].split(","))}
    return {key: int(value) if value.lstrip("-").isdigit() else value}
