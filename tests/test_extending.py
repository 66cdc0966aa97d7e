"""Adding a data kind, a family and an application touches no genlab module (docs/extending.md).

tests/toy_plugin.py declares all three; here they go through every surface: `genlab datasets`,
`genlab train`, `sample`, `eval`, `apply --help` and `apply`, the server's routes, its OpenAPI
document and the studio's list of applications (GET /v1/applications, what the page is built from)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

import genlab
from genlab import registry


@pytest.fixture(scope="module")
def toy():
    import toy_plugin

    registry.register_data_kind(toy_plugin.POINTS)  # again, in case an earlier test removed them
    registry.register_application(toy_plugin.STATS)
    registry.register_family("toy-gaussian")(toy_plugin.ToyGaussian)
    yield toy_plugin
    registry.unregister(registry.DATA_KINDS, "points")
    registry.unregister(registry.APPLICATIONS, "points-stats")
    registry.unregister(registry.FAMILIES, "toy-gaussian")


@pytest.fixture(scope="module")
def toy_model(toy, tmp_path_factory):
    models = tmp_path_factory.mktemp("toy-models")
    genlab.train(toy.RECIPE, out=models / "ring")
    return models / "ring"


def test_the_toy_kind_is_listed_by_genlab_datasets(toy, capsys):
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0
    assert "points (toy-gaussian; a test plugin):" in out
    assert "ring" in out and "points on a noisy ring" in out
    assert "images (" in out and "text (" in out  # the built-in kinds are still there


def test_the_toy_application_is_listed_by_genlab_apply_help(toy, capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "apply", "--help")
    out = capsys.readouterr().out
    assert "points-stats" in out and "mean and standard deviation of a toy model's samples" in out
    with pytest.raises(SystemExit):
        run_cli(capsys, "apply", "points-stats", "--help")
    assert "genlab apply points-stats MODEL -n 1000" in capsys.readouterr().out


def test_a_toy_model_trains_samples_evaluates_and_applies_through_the_cli(toy, toy_model, capsys):
    config = json.loads((toy_model / "config.json").read_text())
    assert config["family"] == "toy-gaussian" and config["data"] == {"name": "ring", "n": 600, "split_seed": 0}
    model = genlab.load(toy_model)
    assert torch_close(model.mean, [1.0, -2.0], 0.35)  # the ring's centre: the fit learnt something

    code, out, _ = run_cli(capsys, "sample", str(toy_model), "-n", "3", "--seed", "1")
    assert code == 0 and len(out.strip().splitlines()) == 3

    code, out, _ = run_cli(capsys, "eval", str(toy_model))
    assert code == 0 and "test NLL on ring:test" in out
    nll = json.loads((toy_model / "metrics.json").read_text())["eval"]["nll"]
    assert 2.0 < nll < 5.0  # a Gaussian on a radius-3 ring: about log(2 pi e * 2.1^2) = 4.3 nats

    code, out, _ = run_cli(capsys, "apply", "points-stats", str(toy_model), "-n", "4000")
    assert code == 0
    mean = [float(v) for v in out.split(":")[1].split()]
    assert abs(mean[0] - 1.0) < 0.4 and abs(mean[1] + 2.0) < 0.4

    # A built-in application refuses the toy kind with a message, not a traceback.
    code, _, err = run_cli(capsys, "apply", "inpaint", str(toy_model), "--mask", "half:top", "--against", "test")
    assert code == 2 and "works on image models" in err and "points model" in err


def test_the_toy_application_is_served_documented_and_listed_for_the_studio(toy, toy_model):
    from fastapi.testclient import TestClient

    from genlab.serve import create_app

    with TestClient(create_app(toy_model.parent, workers=1), base_url="http://127.0.0.1") as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/points/stats" in paths and "post" in paths["/v1/points/stats"]
        assert "/v1/points/stats" in client.get("/docs").text
        listed = {app["name"]: app for app in client.get("/v1/applications").json()["data"]}
        assert listed["points-stats"]["studio"] is True and listed["points-stats"]["endpoint"] == "/v1/points/stats"
        assert {"inpaint", "superres", "denoise", "anomaly", "compose"} <= set(listed)
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["ring"]["endpoints"] == ["/v1/points/stats"] and models["ring"]["data_kind"] == "points"
        reply = client.post("/v1/points/stats", json={"model": "ring", "n": 4000, "seed": 2})
        assert reply.status_code == 200, reply.text
        assert abs(reply.json()["mean"][0] - 1.0) < 0.4
        bad = client.post("/v1/points/stats", json={"model": "ring", "n": 0})
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "n"


def torch_close(tensor, values, tolerance: float) -> bool:
    return all(abs(a - b) < tolerance for a, b in zip(tensor.tolist(), values))
