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
            callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run `scheduler` for `steps` steps from x_T ~ N(0, I) of `shape`; x_0 (unclamped).
    callback(i, x_t) is called after each step (previews, progress bars)."""
    scheduler.set_timesteps(steps, device=device)
    x = randn(shape, generator, device) * scheduler.init_noise_sigma  # x_T: [n, C, H, W]
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
