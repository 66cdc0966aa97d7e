"""The Trainer: exact resume, divergence handling, interrupts, EMA, clipping, DDP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import genlab
from genlab.config import TrainConfig
from genlab.data import load_image_data
from genlab.errors import GenlabError
from genlab.models.base import GenerativeModel
from genlab.registry import register_family
from genlab.training import Trainer
from genlab.training.distributed import DistInfo
from genlab.training.ema import EMA
from genlab.errors import DivergenceError
from genlab.training.optim import ManagedOptimizer

from conftest import TINY_VAE, genlab_cmd, subprocess_env


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def checkpoint_step(path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["genlab"])["step"]


def test_resume_mid_epoch_is_bit_exact(tmp_path):
    # digits: ~1375 training images / 32 per batch = 42 steps per epoch; step 30 is mid-epoch.
    common = [*TINY_VAE, "model.iwae_k=0", "train.checkpoint_every=30"]
    straight = genlab.train("vae-digits", ["steps=70", *common], out=tmp_path / "straight")
    first = genlab.train("vae-digits", ["steps=30", *common], out=tmp_path / "split")
    assert checkpoint_step(first / "checkpoint.safetensors") == 30
    resumed = genlab.train(None, ["steps=70"], out=first, resume=True)
    assert_same_weights(straight, resumed)


def test_different_seeds_give_different_weights(tmp_path):
    a = genlab.train("vae-digits", ["steps=5", *TINY_VAE, "seed=1"], out=tmp_path / "a")
    b = genlab.train("vae-digits", ["steps=5", *TINY_VAE, "seed=2"], out=tmp_path / "b")
    wa, wb = weights(a), weights(b)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    args = ["train", "vae-digits", "steps=1500", *TINY_VAE, "model.iwae_k=0", "train.checkpoint_every=50",
            "train.tensorboard=false"]
    subprocess.run(genlab_cmd(*args, "--out", str(tmp_path / "straight")), check=True, env=subprocess_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(genlab_cmd(*args, "--out", str(killed)), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not (checkpoint.exists() and checkpoint_step(checkpoint) >= 100):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    step = checkpoint_step(checkpoint)
    assert 100 <= step < 1500
    subprocess.run(genlab_cmd("train", "--resume", str(killed)), check=True, env=subprocess_env(), capture_output=True)
    assert_same_weights(tmp_path / "straight", killed)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(genlab_cmd("train", "vae-digits", "steps=100000", *TINY_VAE, "model.iwae_k=0",
                                       "train.checkpoint_every=100000", "train.eval_every=42", "--out", str(out)),
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "history.jsonl").exists():  # first epoch done
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr + stdout
    step = checkpoint_step(out / "checkpoint.safetensors")
    assert 0 < step < 100000


@dataclass
class NanConfig:
    nan_at_step: int = 7
    input_shape: tuple[int, ...] = (1, 8, 8)


@register_family("test-nan")
class NanModel(GenerativeModel):
    """A linear model whose loss turns NaN at a chosen step."""

    config_class = NanConfig

    def __init__(self, config):
        super().__init__(config)
        self.weight = torch.nn.Parameter(torch.zeros(64))

    def training_step(self, batch, step, optimizers):
        loss = (batch["x"].flatten(1) @ self.weight - 1.0).pow(2).mean()
        if step == self.config.nan_at_step:
            loss = loss * float("nan")
        optimizers["main"].step(loss)
        return {"loss": loss.item()}


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data = load_image_data("digits")
    model = NanModel(NanConfig(nan_at_step=7))
    cfg = TrainConfig(steps=20, batch_size=32, checkpoint_every=5, tensorboard=False, progress=False)
    trainer = Trainer(model, data, cfg, tmp_path)
    with pytest.raises(DivergenceError) as info:
        trainer.fit()
    message = str(info.value)
    assert "diverged" in message and "at step 7" in message and "intact" in message
    assert "lr" in info.value.hint
    assert checkpoint_step(tmp_path / "checkpoint.safetensors") == 5
    # the weights in memory were not touched by the bad step, and the checkpoint is readable
    assert torch.isfinite(model.weight).all()
    fresh = NanModel(NanConfig(nan_at_step=-1))
    resumed = Trainer(fresh, data, cfg, tmp_path)
    resumed.load_checkpoint()
    assert resumed.step == 5 and torch.isfinite(fresh.weight).all()


def test_gradient_clipping_bounds_the_update():
    p = torch.nn.Parameter(torch.zeros(10))
    opt = ManagedOptimizer("main", torch.optim.SGD([p], lr=1.0), grad_clip=0.5, dist_info=DistInfo())
    opt.step((p * 100.0).sum())  # gradient norm 100 * sqrt(10)
    assert opt.last_grad_norm == pytest.approx(100.0 * 10**0.5, rel=1e-5)
    assert p.detach().norm().item() == pytest.approx(0.5, rel=1e-5)


def test_ema_is_the_exponential_average():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, [n for n, _ in model.named_parameters()], decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(step=1000)  # past the warm-up: the decay is 0.9
    assert torch.allclose(ema.shadow["weight"], 0.9 * start + 0.1 * (start + 1.0))
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10) == pytest.approx(11 / 20)
    with ema.swapped_in():
        assert torch.allclose(model.weight, ema.shadow["weight"])
    assert torch.allclose(model.weight, start + 1.0)


def test_ema_weights_are_exported(tmp_path):
    run = genlab.train("vae-digits", ["steps=10", *TINY_VAE, "ema_decay=0.5"], out=tmp_path / "ema")
    plain = genlab.train("vae-digits", ["steps=10", *TINY_VAE], out=tmp_path / "plain")
    ema_w, plain_w = weights(run), weights(plain)
    assert any(not torch.equal(ema_w[k], plain_w[k]) for k in ema_w)
    genlab.load(run)


def test_data_order_is_a_function_of_seed_and_epoch(tmp_path):
    data = load_image_data("digits")

    def order(seed, step):
        model = NanModel(NanConfig(nan_at_step=-1))
        trainer = Trainer(model, data, TrainConfig(steps=1, batch_size=32, seed=seed, tensorboard=False, progress=False), tmp_path)
        return trainer._train_indices(step)

    spe = len(data.train) // 32
    assert torch.equal(order(0, 3), order(0, 3))
    assert not torch.equal(order(0, 3), order(1, 3))
    assert not torch.equal(order(0, 3), order(0, 3 + spe))  # a new epoch, a new permutation
    epoch = torch.cat([order(0, i) for i in range(spe)])
    assert len(set(epoch.tolist())) == len(epoch)  # no example twice within an epoch


def test_batch_larger_than_data_is_a_clear_error(tmp_path):
    with pytest.raises(GenlabError, match="batch_size"):
        genlab.train("vae-digits", ["steps=1", "batch_size=100000", *TINY_VAE[:2]], out=tmp_path / "x")


def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genlab", "train", "vae-digits", "steps=12",
         *TINY_VAE, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights identical on all 2 ranks" in result.stderr
    assert result.stdout.count("model directory:") == 1  # only rank 0 reports and writes
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["world_size"] == 2
    model = genlab.load(out)
    assert model.sample(4).shape == (4, 1, 8, 8)


def test_keep_best_exports_the_best_evaluation(tmp_path):
    # A high learning rate makes validation noisy: the best evaluation is usually not the last.
    run = genlab.train("vae-digits", ["steps=120", *TINY_VAE, "model.iwae_k=0", "lr=0.05", "ema_decay=0.5",
                                      "train.eval_every=10", "train.keep_best=true", "train.early_stopping_patience=4"],
                       out=tmp_path / "best")
    best = load_file(str(run / "best.safetensors"))
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        best_step = json.loads(f.metadata()["genlab"])["step"]
    exported = weights(run)
    assert exported.keys() == best.keys() and all(torch.equal(exported[k], best[k]) for k in best)
    training = json.loads((run / "metrics.json").read_text())["training"]
    assert training["best_step"] == best_step < training["steps"]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert training["best_metric"] == min(h["val"]["loss"] for h in history)


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_cpu_amp_runs_the_matmuls_in_bf16_only_where_the_cpu_is_fast_at_them(tmp_path, monkeypatch, fast_bf16):
    """train.cpu_amp: on a CPU with AMX the forward pass runs under bf16 autocast while the weights stay fp32;
    elsewhere the run says why it stays in fp32 and does."""
    from genlab.data import TextDataSpec, load_text_data
    from genlab.models.transformer import GPT, GPTConfig

    monkeypatch.setattr("genlab.training.trainer.cpu_has_fast_bf16", lambda: fast_bf16)
    torch.manual_seed(0)
    data = load_text_data(TextDataSpec(name="pydoc", tokenizer="byte", block_size=16))
    model = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=1, n_embd=8))
    seen = []
    model.transformer.blocks[0].mlp.up.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    messages = []
    cfg = TrainConfig(steps=3, batch_size=4, cpu_amp=True, device="cpu", progress=False, tensorboard=False,
                      eval_batches=1)
    Trainer(model, data, cfg, tmp_path, log=messages.append).fit()
    expected = torch.bfloat16 if fast_bf16 else torch.float32
    assert seen and all(dtype == expected for dtype in seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any("no AMX" in message for message in messages) != fast_bf16
