"""Shared test setup: data from ../shared/data, never the network, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never touch the network and never read a user's cache.
os.environ.setdefault("GENLAB_DATA_DIR", str(SHARED_DATA))
os.environ["GENLAB_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

# A tiny, fast variant of the quick-start recipe used across tests.
TINY_VAE = ["model.hidden=[32]", "model.latent_dim=4", "model.iwae_k=8", "batch_size=32", "train.progress=false"]


def genlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "genlab", *args]


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


# Tiny models of every kind the HTTP API serves (tests/test_serve.py, tests/test_fuzz.py).
SERVED_QUICK = ["batch_size=32", "train.progress=false", "train.tensorboard=false", "train.eval_batches=2"]
SERVED_VAE = ["steps=25", "model.hidden=[32]", "model.latent_dim=4", "model.iwae_k=8", *SERVED_QUICK]
SERVED_GPT = ["data.name=pydoc", "steps=20", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32",
              "batch_size=8", "train.eval_batches=2", "train.progress=false", "train.tensorboard=false"]


def train_served_models(root: Path) -> Path:
    """vae, cvae, gpt, sr and denoiser: one tiny model of each image and text kind the API serves."""
    import genlab

    genlab.train("vae-digits", SERVED_VAE, out=root / "vae")
    genlab.train("vae-digits", [*SERVED_VAE, "model.conditional=true"], out=root / "cvae")
    genlab.train("gpt-shakespeare-char", SERVED_GPT, out=root / "gpt")
    genlab.train("sr-mnist-x2", ["data.name=digits", "steps=15", "model.channels=8", "model.num_blocks=1", *SERVED_QUICK],
                 out=root / "sr")
    genlab.train("denoise-mnist", ["data.name=digits", "steps=15", "model.channels=8", "model.depth=2", *SERVED_QUICK],
                 out=root / "denoiser")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A trained (briefly) vae-digits model directory shared by read-only tests."""
    import genlab

    out = tmp_path_factory.mktemp("models") / "vae-digits-tiny"
    return genlab.train("vae-digits", ["steps=40", *TINY_VAE], out=out)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `genlab ARGS` in-process; returns (exit code, stdout, stderr)."""
    from genlab.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2, a one-line error (and hint) at the end, no traceback, and each needle in it."""
    assert code == 2, err
    assert "error: " in err and err.strip().splitlines()[-1].startswith(("error: ", "hint: "))
    assert "Traceback" not in err
    for needle in needles:
        assert needle.lower() in err.lower(), f"{needle!r} not in {err!r}"


def assert_http_error(response, status: int, *needles: str, param: str | None = None) -> dict:
    """A JSON error in the server's one shape with this status: a one-line message (and hint)
    naming each needle, no traceback, and the offending parameter when `param` is given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "hint", "type", "param", "code"} and error["code"] == status, error
    assert error["message"] and "\n" not in error["message"] and "\n" not in (error["hint"] or ""), error
    assert "Traceback" not in response.text
    text = (error["message"] + " " + (error["hint"] or "")).lower()
    for needle in needles:
        assert needle.lower() in text, (needle, error)
    if param is not None:
        assert error["param"] == param, error
    return error


# ----------------------------------------------------------------------------- no paths in replies
# Every HTTP reply any test receives through a TestClient is checked: it may not contain the
# session's temporary directory (where every test's models live), i.e. no absolute path leaks.

_BASETEMP: list[bytes] = []


def pytest_configure(config):
    from starlette.testclient import TestClient

    original = TestClient.request

    def checked_request(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        if not _BASETEMP:
            base = config._tmp_path_factory.getbasetemp()
            _BASETEMP.extend({str(base).encode(), str(base.resolve()).encode()})
        headers = b"".join(value.encode("latin-1") for value in response.headers.values())
        leaked = any(path in response.content or path in headers for path in _BASETEMP)
        assert not leaked, f"a reply to {args[:2]} contains the test's temporary directory path: {response.text[:300]}"
        return response

    TestClient.request = checked_request
