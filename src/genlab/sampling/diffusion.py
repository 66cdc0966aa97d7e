"""Sampling a diffusion model: the network predicts, the scheduler steps.

A diffusion model (genlab.models.diffusion) learns one thing: given a noisy image x_t and its
timestep t, predict the noise eps (or the velocity v) that was mixed in. Turning that
prediction into an image is the scheduler's job, and genlab uses diffusers' schedulers for it
unchanged:

    ddpm   DDPMScheduler: ancestral sampling (Ho et al. 2020), fresh noise every step; with
           fewer steps than training timesteps it strides over them
    ddim   DDIMScheduler (Song et al. 2021): eta = 0 is deterministic given the starting noise,
           eta = 1 is DDPM-like; any number of steps
    dpm++  DPMSolverMultistepScheduler, "dpmsolver++" order 2 (Lu et al. 2022, "2M"): good
           images in 10-25 steps

The loop (`denoise`) is the same for all three:

    x_T ~ N(0, I) * init_noise_sigma                          [n, C, H, W], from genlab.tensors.randn
    for t in scheduler.timesteps:                             (T-1 ... 0, `steps` of them)
        output  = predict(scale_model_input(x_t, t), t)       [n, C, H, W], eps or v
        x_{t-1} = scheduler.step(output, t, x_t).prev_sample  [n, C, H, W]
    return x_0

Timesteps are spaced "trailing" (Lin et al. 2024): the first step starts at t = T - 1, pure
noise, whatever the number of steps.

Two more loops drive the same kind of `predict`:

    repaint  RePaint inpainting (Lugmayr et al. 2022) with diffusers' RePaintScheduler: at every
             step the known pixels are the data noised to that step's level (q(x_t | x_0), fresh
             noise), the unknown ones the model's DDIM/DDPM step; every `jump_length` steps the
             chain goes back up (re-noising) and down again, `jump_n_sample` times, so that the
             unknown region can agree with the known one
    invert   DDIM inversion with diffusers' DDIMInverseScheduler: the eta = 0 update run from
             x_0 towards x_T, over the same (trailing) timesteps as the ddim sampler, so that
             `denoise(..., x_T=invert(...))` with the ddim sampler comes back close to x_0

This module knows no model: `predict` is any function (x_t, t) -> output, so classifier-free
guidance (two predictions mixed) lives in the model that owns the label embedding.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import GenlabError
from ..tensors import randn

SAMPLERS = ("ddpm", "ddim", "dpm++")
# model.schedule -> diffusers' beta_schedule name
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction"}


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise GenlabError(f"unknown sampler {sampler!r}", f"use one of {', '.join(SAMPLERS)}", param="sampler")
    return sampler


def check_steps(steps, timesteps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= timesteps:
        raise GenlabError(f"steps must be an integer in 1..{timesteps} (the model's training timesteps), got {steps!r}",
                          "e.g. --steps 50 (ddim), 20 (dpm++), or the full 1000 (ddpm)", param="steps")
    return steps


def make_scheduler(sampler: str, *, timesteps: int, schedule: str, beta_start: float, beta_end: float,
                   prediction: str, clip: float | None = 1.0):
    """A fresh diffusers scheduler for `sampler` over the training noise schedule. clip: the
    predicted x_0 is clipped to [-clip, clip] at every step (None: no clipping)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    check_sampler(sampler)
    common = dict(num_train_timesteps=timesteps, beta_schedule=BETA_SCHEDULES[schedule], beta_start=beta_start,
                  beta_end=beta_end, prediction_type=PREDICTIONS[prediction], timestep_spacing="trailing")
    clipping = dict(clip_sample=clip is not None, clip_sample_range=clip or 1.0)
    if sampler == "ddpm":
        return DDPMScheduler(**common, **clipping, variance_type="fixed_small")
    if sampler == "ddim":
        return DDIMScheduler(**common, **clipping, set_alpha_to_one=True)
    # DPM-Solver++ clips the predicted x_0 through dynamic thresholding (Saharia et al. 2022) with a
    # maximum of `clip`, i.e. to [-clip, clip]. Without it the first steps, where alpha_bar_t is
    # near 0 (the cosine schedule's t = T - 1), divide the prediction error by sqrt(alpha_bar_t)
    # and the images saturate.
    thresholding = dict(thresholding=clip is not None, sample_max_value=clip or 1.0)
    return DPMSolverMultistepScheduler(**common, **thresholding, algorithm_type="dpmsolver++", solver_order=2,
                                       lower_order_final=True)


def alphas_cumprod(*, timesteps: int, schedule: str, beta_start: float, beta_end: float) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), [T] float32: the training noise schedule (the
    same numbers every sampler's scheduler is built on)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule=BETA_SCHEDULES[schedule],
                              beta_start=beta_start, beta_end=beta_end)
    return scheduler.alphas_cumprod.clone().float()


@torch.no_grad()
def denoise(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...], scheduler,
            steps: int, *, generator: torch.Generator | None, device: torch.device | str, eta: float = 0.0,
            callback: Callable[[int, torch.Tensor], None] | None = None,
            x_T: torch.Tensor | None = None) -> torch.Tensor:
    """Run `scheduler` for `steps` steps from x_T ~ N(0, I) of `shape`; x_0 (unclamped).
    callback(i, x_t) is called after each step (previews, progress bars). x_T: start from this
    [n, C, H, W] (e.g. from `invert`) instead of drawing it (`shape` must match)."""
    scheduler.set_timesteps(steps, device=device)
    if x_T is None:
        x = randn(shape, generator, device) * scheduler.init_noise_sigma  # x_T: [n, C, H, W]
    elif tuple(x_T.shape) != tuple(shape):
        raise GenlabError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    else:
        x = x_T.to(device)
    for i, t in enumerate(scheduler.timesteps):
        output = predict(scheduler.scale_model_input(x, t), t)  # eps or v: [n, C, H, W]
        x = step(scheduler, output, t, x, generator=generator, eta=eta)  # x_{t-1}
        if callback is not None:
            callback(i, x)
    return x


def step(scheduler, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor, *, generator: torch.Generator | None,
         eta: float = 0.0) -> torch.Tensor:
    """One scheduler step x_t -> x_{t-1}. The noise a stochastic step adds is drawn here, from
    genlab.tensors.randn on the generator's device, and handed to the scheduler."""
    name = type(scheduler).__name__
    if name == "DDIMScheduler":
        noise = randn(tuple(x.shape), generator, x.device, x.dtype) if eta > 0 else None
        return scheduler.step(output, t, x, eta=eta, variance_noise=noise).prev_sample
    if name == "DDPMScheduler":
        # DDPMScheduler draws its own noise; with a generator it draws it on the generator's
        # device exactly as genlab.tensors.randn does (diffusers' randn_tensor).
        return scheduler.step(output, t, x, generator=generator).prev_sample
    return scheduler.step(output, t, x).prev_sample  # DPM-Solver++ (2M) is deterministic


# ----------------------------------------------------------------------------- RePaint inpainting


def make_repaint_scheduler(*, timesteps: int, schedule: str, beta_start: float, beta_end: float,
                           eta: float = 0.0, clip: bool = True):
    """diffusers' RePaintScheduler over the training noise schedule. eta: the unknown pixels'
    step, 0 DDIM (deterministic given x_t), 1 DDPM-like; clip: the predicted x_0 to [-1, 1]."""
    from diffusers import RePaintScheduler

    if not 0 <= eta <= 1:
        raise GenlabError(f"eta must be in [0, 1], got {eta!r}", param="eta")
    return RePaintScheduler(num_train_timesteps=timesteps, beta_schedule=BETA_SCHEDULES[schedule],
                            beta_start=beta_start, beta_end=beta_end, eta=eta, clip_sample=clip)


def repaint_evaluations(steps: int, jump_length: int, jump_n_sample: int) -> int:
    """The network calls one RePaint run makes: `steps` on the way down, plus jump_length for
    each of the jump_n_sample - 1 extra passes at every jump point (RePaintScheduler.set_timesteps)."""
    jump_points = len(range(0, steps - jump_length, jump_length))
    return steps + jump_points * (jump_n_sample - 1) * jump_length


def epsilon_from_v(v: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t: a v-prediction as the noise it implies
    (v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps)."""
    return alpha_bar_t.sqrt() * v + (1 - alpha_bar_t).sqrt() * x_t


@torch.no_grad()
def repaint(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, known: torch.Tensor,
            scheduler, steps: int, *, jump_length: int, jump_n_sample: int, generator: torch.Generator | None,
            prediction: str = "epsilon", callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022): x_0 [n, C, H, W] in [-1, 1] whose pixels where `known` is 1
    follow `x0` and whose others the model fills in (unclamped; the known pixels are only as
    exact as the arithmetic: paste them again in data space).

    known: [n, C, H, W] float, 1 = a known pixel, 0 = one to fill in (diffusers' convention, the
    opposite of genlab's masks). The loop is diffusers' RePaintPipeline's: going down (t below
    the last t), predict and step; going up, `undo_step` adds the forward process's noise.
    RePaintScheduler takes the noise eps, so a v-predicting network's output is converted."""
    if prediction not in PREDICTIONS:
        raise GenlabError(f"unknown prediction {prediction!r}", "use epsilon or v")
    if jump_length < 1 or jump_n_sample < 1:
        raise GenlabError(f"jump_length and jump_n_sample must be >= 1, got {jump_length} and {jump_n_sample}",
                          param="jump_length" if jump_length < 1 else "jump_n_sample")
    scheduler.set_timesteps(steps, jump_length, jump_n_sample, device=x0.device)
    known = known.to(x0.dtype)
    x = randn(tuple(x0.shape), generator, x0.device, x0.dtype)  # x_T: [n, C, H, W]
    t_last = scheduler.timesteps[0] + 1
    for i, t in enumerate(scheduler.timesteps):
        if t < t_last:  # down: x_t -> x_{t - T/steps}, the known pixels re-noised to that level
            output = predict(x, t)  # eps or v: [n, C, H, W]
            if PREDICTIONS[prediction] == "v_prediction":
                output = epsilon_from_v(output, x, scheduler.alphas_cumprod[t].to(x.device, x.dtype))
            x = scheduler.step(output, t, x, x0, known, generator=generator).prev_sample
        else:  # up: the resampling jump, T/steps forward-process steps
            x = scheduler.undo_step(x, t_last, generator=generator)
        t_last = t
        if callback is not None:
            callback(i, x)
    return x


# ----------------------------------------------------------------------------- DDIM inversion


def make_inverse_scheduler(*, timesteps: int, schedule: str, beta_start: float, beta_end: float, prediction: str,
                           clip: float | None = 1.0):
    """diffusers' DDIMInverseScheduler over the training noise schedule, on the ddim sampler's
    trailing timesteps (its steps are the ddim sampler's, run backwards)."""
    from diffusers import DDIMInverseScheduler

    return DDIMInverseScheduler(num_train_timesteps=timesteps, beta_schedule=BETA_SCHEDULES[schedule],
                                beta_start=beta_start, beta_end=beta_end, prediction_type=PREDICTIONS[prediction],
                                timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=clip is not None,
                                clip_sample_range=clip or 1.0)


@torch.no_grad()
def invert(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, scheduler, steps: int,
           *, callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021, sec. 4.3; Dhariwal & Nichol 2021): x_0 [n, C, H, W] in
    [-1, 1] -> x_T, deterministic. Each step s -> t (t = s + T/steps) is the eta = 0 update
    backwards,

        x0_hat = (x_s - sqrt(1 - alpha_bar_s) eps) / sqrt(alpha_bar_s)
        x_t    = sqrt(alpha_bar_t) x0_hat + sqrt(1 - alpha_bar_t) eps,     eps = predict(x_s, t)

    with the prediction made at x_s where the sampler makes it at x_t: the round trip through
    the ddim sampler (same steps, eta = 0) is exact only as steps grow."""
    if type(scheduler).__name__ != "DDIMInverseScheduler":
        raise GenlabError("DDIM inversion needs a DDIMInverseScheduler (make_inverse_scheduler)")
    scheduler.set_timesteps(steps, device=x0.device)
    x = x0
    for i, t in enumerate(scheduler.timesteps):
        output = predict(scheduler.scale_model_input(x, t), t)  # eps or v: [n, C, H, W]
        x = scheduler.step(output, t, x).prev_sample
        if callback is not None:
            callback(i, x)
    return x
