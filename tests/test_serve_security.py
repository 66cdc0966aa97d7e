"""The HTTP server's hardening (genlab.serve): who may use it (Host allow-list, cross-origin
refusal, API key, no unauthenticated non-loopback bind), what it never says (absolute paths,
object addresses, exception text), how it treats damaged models, and how it bounds slow and
many clients (a real uvicorn on 127.0.0.1 with a short read timeout).

Every response made here is checked to hold no path of this test's temporary directories."""

from __future__ import annotations

import io
import json
import select
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from genlab.errors import GenlabError
from genlab.serve import create_app
from genlab.serve.errors import scrub

from conftest import assert_http_error, run_cli

QUICK = ["batch_size=32", "train.progress=false", "train.tensorboard=false", "train.eval_batches=2"]
TINY_VAE = ["steps=10", "model.hidden=[16]", "model.latent_dim=2", "model.iwae_k=4", *QUICK]
TINY_GPT = ["steps=5", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "data.block_size=16", "batch_size=8",
            "train.eval_batches=1", "train.progress=false", "train.tensorboard=false"]
KEY = "test-key-0123456789"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def secret_roots(tmp_path_factory) -> list[str]:
    """The paths no response may contain: pytest's base temporary directory (it holds every
    models directory and training file of this module)."""
    base = tmp_path_factory.getbasetemp()
    return [str(base), str(base.resolve())]


def assert_no_leak(response, roots) -> None:
    text = response.text
    for root in roots:
        assert root not in text, (response.request.method, response.request.url.path, text[:500])
    assert " object at 0x" not in text, text[:500]
    assert "Traceback" not in text


class CheckedClient(TestClient):
    """A TestClient reaching the app as http://127.0.0.1 that checks every response for leaks."""

    def __init__(self, app, roots, **kwargs):
        kwargs.setdefault("base_url", "http://127.0.0.1")
        super().__init__(app, **kwargs)
        self.roots = roots

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        assert_no_leak(response, self.roots)
        return response


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """vae, a conditional vae, a gpt trained on a file given by its absolute path, and two damaged
    copies of the vae: weights that do not match a hand-edited config, and a config that is not JSON."""
    root = tmp_path_factory.mktemp("secure-served")
    notes = tmp_path_factory.mktemp("private-user-files") / "notes.txt"
    notes.write_text("The quick brown fox jumps over the lazy dog. " * 400)
    genlab.train("vae-digits", TINY_VAE, out=root / "vae")
    genlab.train("vae-digits", [*TINY_VAE, "model.conditional=true"], out=root / "cvae")
    genlab.train("gpt-shakespeare-char", [f"data.name=file:{notes}", *TINY_GPT], out=root / "gpt")
    assert str(notes) in (root / "gpt" / "config.json").read_text()  # the absolute path the server must not show
    for name in ("huge", "broken"):
        (root / name).mkdir()
        for file in (root / "vae").iterdir():
            if file.is_file():
                (root / name / file.name).write_bytes(file.read_bytes())
    config = json.loads((root / "huge" / "config.json").read_text())
    config["model"]["hidden"] = [30000, 30000]  # 900M weights if it were built
    (root / "huge" / "config.json").write_text(json.dumps(config))
    (root / "broken" / "config.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def client(models_dir, secret_roots):
    with CheckedClient(create_app(models_dir, workers=1, queue_size=8), secret_roots) as test_client:
        yield test_client


def png_upload(array: np.ndarray, name: str = "digit.png") -> tuple[str, bytes, str]:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return name, buffer.getvalue(), "image/png"


# ----------------------------------------------------------------------------- Host header


def test_only_loopback_host_names_are_served(models_dir, client, secret_roots):
    assert client.get("/healthz").status_code == 200
    for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST."):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "localhost:x", ""):
        assert_http_error(client.get("/healthz", headers={"host": host}), 421, "--allowed-host")
        assert_http_error(client.post("/v1/images/generations", json={"model": "vae"}, headers={"host": host}), 421)
    with TestClient(create_app(models_dir)) as default:  # TestClient's own Host, "testserver", is no loopback name
        assert_http_error(default.get("/v1/models"), 421, "testserver")
    with CheckedClient(create_app(models_dir, allowed_hosts=["genlab.lan"]), secret_roots) as named:
        assert named.get("/healthz", headers={"host": "genlab.lan:8000"}).status_code == 200
        assert named.get("/healthz").status_code == 200  # loopback stays allowed
        assert_http_error(named.get("/healthz", headers={"host": "attacker.example"}), 421)
    with CheckedClient(create_app(models_dir, allowed_hosts=["0.0.0.0"]), secret_roots) as everywhere:
        assert everywhere.get("/healthz", headers={"host": "192.168.1.20:8000"}).status_code == 200  # an address
        assert_http_error(everywhere.get("/healthz", headers={"host": "attacker.example"}), 421)  # but not any name
    with pytest.raises(GenlabError, match="not a host name"):
        create_app(models_dir, allowed_hosts=["bad host/"])


# ----------------------------------------------------------------------------- cross-origin pages


def test_cross_origin_requests_are_refused_unless_named(models_dir, client, secret_roots):
    generate = "/v1/images/generations"
    evil = {"origin": "http://evil.example"}
    assert_http_error(client.post(generate, json={"model": "vae", "n": 1}, headers=evil), 403, "cross-origin",
                      "--cors-origin")
    # the simple multipart POST a page can send without a preflight
    image = {"image": png_upload(np.zeros((8, 8), dtype=np.uint8))}
    assert_http_error(client.post("/v1/images/inpaint", data={"model": "vae", "mask_spec": "half:top"}, files=image,
                                  headers=evil), 403)
    assert_http_error(client.get("/v1/models", headers={"origin": "null"}), 403)
    assert_http_error(client.get("/v1/models", headers={"origin": "http://localhost"}), 403)  # another origin too
    # the server's own pages (the studio) send their own origin
    own = client.post(generate, json={"model": "vae", "n": 1}, headers={"origin": "http://127.0.0.1"})
    assert own.status_code == 200, own.text
    assert "access-control-allow-origin" not in own.headers
    site = "http://localhost:3000"
    with CheckedClient(create_app(models_dir, cors_origins=[site]), secret_roots) as cors:
        allowed = cors.post(generate, json={"model": "vae", "n": 1}, headers={"origin": site})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == site
        preflight = cors.options(generate, headers={"origin": site, "access-control-request-method": "POST",
                                                    "access-control-request-headers": "content-type"})
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        assert_http_error(cors.post(generate, json={"model": "vae", "n": 1}, headers=evil), 403)
    with pytest.raises(GenlabError, match="not an origin"):
        create_app(models_dir, cors_origins=["localhost:3000/page"])


# ----------------------------------------------------------------------------- API key


def test_api_key_guards_everything_but_health_and_static_pages(models_dir, secret_roots):
    with CheckedClient(create_app(models_dir, api_key=KEY), secret_roots) as client:
        for method, path, kwargs in (("GET", "/v1/models", {}), ("GET", "/v1/models/vae", {}), ("GET", "/metrics", {}),
                                     ("POST", "/v1/images/generations", {"json": {"model": "vae", "n": 1}})):
            missing = client.request(method, path, **kwargs)
            assert_http_error(missing, 401, "needs an API key", "Authorization: Bearer")
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = client.request(method, path, headers={"authorization": "Bearer not-the-key"}, **kwargs)
            assert_http_error(wrong, 401, "not valid")
            assert_http_error(client.request(method, path, headers={"authorization": KEY}, **kwargs), 401)  # no scheme
            right = client.request(method, path, headers={"authorization": f"Bearer {KEY}"}, **kwargs)
            assert right.status_code == 200, right.text
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200  # the studio's static files hold no data
        assert KEY not in client.get("/").text


def serve_without_running(monkeypatch, capsys, *args):
    """`genlab serve ARGS` up to the point where uvicorn would run: (exit code, out, err, the uvicorn Config)."""
    import uvicorn

    import genlab.serve.cli as serve_cli

    seen = {}
    monkeypatch.setattr(serve_cli, "bind", lambda host, port: seen.setdefault("bound", (host, port)))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.setdefault("config", self.config))
    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli(capsys, "serve", "--torch-threads", str(threads), *args)
    finally:
        torch.set_num_threads(threads)
    return code, out, err, seen


def test_a_reachable_server_needs_a_key(models_dir, monkeypatch, capsys, secret_roots):
    monkeypatch.delenv("GENLAB_API_KEY", raising=False)
    for host in ("0.0.0.0", "192.0.2.7", "::"):
        code, out, err, seen = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--host", host)
        assert code == 2 and "bound" not in seen, err  # refused before anything binds
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        assert "--api-key" in err and "GENLAB_API_KEY" in err and "--insecure-no-auth" in err
    code, out, err, seen = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--host", "0.0.0.0",
                                                 "--insecure-no-auth")
    assert code == 0 and seen["bound"] == ("0.0.0.0", 8000) and "without an API key" in err
    monkeypatch.setenv("GENLAB_API_KEY", KEY)
    code, out, err, seen = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--host", "0.0.0.0",
                                                 "--allowed-host", "genlab.lan", "--cors-origin", "http://localhost:3000",
                                                 "--max-connections", "9", "--read-timeout", "7")
    assert code == 0 and "API key required" in out, err
    config = seen["config"]
    assert config.limit_concurrency == 10 and config.timeout_keep_alive == 5
    assert config.http.__name__ == "DeadlineH11Protocol"
    app = config.app
    assert app.state.access.api_key == KEY and "genlab.lan" in app.state.access.hosts
    with CheckedClient(app, secret_roots) as client:
        auth = {"authorization": f"Bearer {KEY}"}
        assert client.get("/v1/models", headers={"host": "genlab.lan:8000", **auth}).status_code == 200
        assert client.get("/v1/models", headers={"host": "10.1.2.3:8000", **auth}).status_code == 200
        assert_http_error(client.get("/v1/models", headers={"host": "attacker.example", **auth}), 421)
        assert_http_error(client.get("/v1/models", headers={"host": "10.1.2.3:8000"}), 401)
        assert client.get("/v1/models", headers={"origin": "http://localhost:3000", **auth}).status_code == 200
    code, _, err, _ = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--api-key", "has space")
    assert code == 2 and "API key" in err
    code, _, err, _ = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--read-timeout", "0")
    assert code == 2 and "--read-timeout" in err
    code, _, err, _ = serve_without_running(monkeypatch, capsys, "--models", str(models_dir), "--max-connections", "0")
    assert code == 2 and "--max-connections" in err
    with pytest.raises(SystemExit):
        run_cli(capsys, "serve", "--help")
    usage = capsys.readouterr().out
    for option in ("--api-key", "--allowed-host", "--cors-origin", "--insecure-no-auth", "--max-connections",
                   "--read-timeout", "GENLAB_API_KEY"):
        assert option in usage, option


# ----------------------------------------------------------------------------- what is never said


def test_scrub_hides_paths_and_addresses():
    roots = ["/srv/genlab/models"]
    assert scrub("cannot read /srv/genlab/models/vae/config.json: bad", roots) == "cannot read vae/config.json: bad"
    assert scrub("no models at /srv/genlab/models.", roots) == "no models at models."
    assert scrub("cannot read /home/ann/secret/notes.txt (file:/home/ann/x.txt)") == "cannot read notes.txt (file:x.txt)"
    assert scrub("bad image <_io.BytesIO object at 0x7f3a2b1c0d90>") == "bad image <_io.BytesIO object>"
    assert scrub(r"cannot open C:\Users\ann\notes.txt now") == "cannot open notes.txt now"
    for kept in ("GET /v1/models lists them", "see /docs", "use /v1/completions with this model",
                 "http://127.0.0.1:8000/v1/models", "a/b and 1/2", "no such endpoint: GET /missing.js"):
        assert scrub(kept, roots) == kept


@pytest.mark.parametrize("name, shown", [
    ("labeled:/home/ann/private/quotes.tsv", "labeled:quotes.tsv"),
    ("pairs:/home/ann/private/pairs.csv", "pairs:pairs.csv"),
    ("dialogue:/home/ann/chats.jsonl", "dialogue:chats.jsonl"),
    ("folder:/home/ann/authors/", "folder:authors"),
    ("styles:tinyshakespeare+file:/home/ann/austen.txt", "styles:tinyshakespeare+file:austen.txt"),
    ("tatoeba-cmn", "tatoeba-cmn"),
])
def test_every_data_set_named_by_a_path_is_shown_by_its_file_name(name, shown):
    from genlab.serve.models import public_data_name

    assert public_data_name(name) == shown


def test_health_listing_and_detail_name_no_path(client, models_dir):
    health = client.get("/healthz").json()
    assert health["models_dir"] == models_dir.name
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(models) == {"vae", "cvae", "gpt", "huge", "broken"}
    # descriptions come from each model's own config, not from its recipe's text
    assert models["vae"]["description"] == "vae on digits"
    assert models["cvae"]["description"] == "conditional vae on digits"
    assert models["gpt"]["description"] == "gpt on file:notes.txt (char tokens)"
    assert models["gpt"]["recipe"] == "gpt-shakespeare-char" and "Shakespeare" not in models["gpt"]["description"]
    detail = client.get("/v1/models/gpt").json()
    assert detail["config"]["data"]["name"] == "file:notes.txt"
    assert detail["description"] == models["gpt"]["description"]


def test_damaged_models_are_listed_with_the_reason_and_refused_fast(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    broken = models["broken"]
    assert "endpoints" not in broken and "not valid JSON" in broken["error"] and broken["error"].startswith("broken/")
    start = time.perf_counter()
    refused = client.post("/v1/images/generations", json={"model": "broken", "n": 1})
    assert_http_error(refused, 500, "cannot be loaded", "broken/config.json")
    huge = models["huge"]
    assert "endpoints" not in huge and "does not match" in huge["error"] and huge["hint"], huge
    detail = client.get("/v1/models/huge").json()
    assert "does not match" in detail["error"] and "config" not in detail
    refused = client.post("/v1/images/generations", json={"model": "huge", "n": 1})
    assert_http_error(refused, 500, "cannot be loaded", "does not match")
    assert time.perf_counter() - start < 10  # refused from the header, never built at 30000 x 30000
    assert "huge" not in [name for name, _ in client.app.state.store.loaded()]


def test_error_messages_are_scrubbed_centrally(models_dir, monkeypatch, secret_roots):
    from genlab.serve import jobs

    def reads_a_file(*args, **kwargs):
        raise GenlabError(f"cannot read {models_dir}/vae/extra.bin or /etc/genlab/private.key "
                          f"from <_io.BytesIO object at 0x7f3a2b1c0d90>", f"look at {models_dir}")

    monkeypatch.setattr(jobs, "generate_images", reads_a_file)
    with CheckedClient(create_app(models_dir), secret_roots) as client:
        error = assert_http_error(client.post("/v1/images/generations", json={"model": "vae"}), 400)
        assert error["message"] == "cannot read vae/extra.bin or private.key from <_io.BytesIO object>"
        assert error["hint"] == f"look at {models_dir.name}"

    def bug(*args, **kwargs):
        raise RuntimeError(f"a bug reading {models_dir}/vae/model.safetensors")

    monkeypatch.setattr(jobs, "generate_images", bug)
    with CheckedClient(create_app(models_dir), secret_roots, raise_server_exceptions=False) as client:
        error = assert_http_error(client.post("/v1/images/generations", json={"model": "vae"}), 500, "RuntimeError")
        assert "bug" not in error["message"] and "safetensors" not in error["message"]


def test_one_model_directory_is_served_as_a_one_model_store(models_dir, secret_roots, monkeypatch, capsys):
    with CheckedClient(create_app(models_dir / "vae"), secret_roots) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["vae"]
        assert client.get("/healthz").json()["models_dir"] == "vae"
        assert client.post("/v1/images/generations", json={"model": "vae", "n": 2}).status_code == 200
        assert_http_error(client.post("/v1/images/generations", json={"model": "cvae"}), 404, "no model named 'cvae'")
        assert_http_error(client.get("/v1/models/gpt"), 404)
    code, out, err, _ = serve_without_running(monkeypatch, capsys, "--models", str(models_dir / "vae"))
    assert code == 0 and "serving the model" in out, err


def test_previews_are_files_inside_the_models_directory(models_dir, tmp_path, secret_roots):
    root = tmp_path / "served"
    (root / "vae").mkdir(parents=True)
    for file in (models_dir / "vae").iterdir():
        if file.is_file() and file.name not in ("samples.png", "samples.txt"):
            (root / "vae" / file.name).write_bytes(file.read_bytes())
    secret = tmp_path / "secret.txt"
    secret.write_text("private words")
    (root / "vae" / "samples.txt").symlink_to(secret)  # a link out of the models directory is not followed
    (root / "vae" / "samples.png").symlink_to(secret)
    with CheckedClient(create_app(root), secret_roots) as client:
        detail = client.get("/v1/models/vae").json()
        assert detail["samples_text"] is None and "samples.png" not in detail["previews"]
        assert_http_error(client.get("/v1/models/vae/previews/samples.png"), 404)
        assert "private words" not in client.get("/v1/models/vae/previews/samples.txt").text


def test_bounds_and_method_errors(client):
    generate = "/v1/images/generations"
    for label in (1e20, 10**20, 2**63):
        assert_http_error(client.post(generate, json={"model": "cvae", "class": label}), 422, "class")
    assert_http_error(client.post(generate, json={"model": "vae", "seed": 2**64}), 422, "seed")
    assert client.post(generate, json={"model": "vae", "n": 1, "seed": 2**63 - 1}).status_code == 200
    for method in ("PUT", "GET", "DELETE"):
        response = client.request(method, "/v1/completions")
        assert_http_error(response, 405, f"does not take {method}")
        assert response.headers["allow"] == "POST"
    response = client.delete("/v1/models")
    assert_http_error(response, 405)
    assert response.headers["allow"] == "GET"
    assert_http_error(client.put("/index.html"), 405)  # a studio file: the studio's own methods
    assert_http_error(client.get("/v1/nothing"), 404)


# ----------------------------------------------------------------------------- slow and many clients


class RunningServer:
    """`genlab serve`'s uvicorn configuration (serve.cli.server_config) on 127.0.0.1 in a thread."""

    def __init__(self, app, **bounds):
        import uvicorn

        from genlab.serve.cli import bind, server_config

        self.socket = bind("127.0.0.1", 0)
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, log_level="warning", **bounds))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


def trickle_until_closed(sockets: list[socket.socket], payload: bytes, every_s: float, limit_s: float) -> dict:
    """Send `payload` one byte per socket every `every_s` until the server closes each socket;
    returns {socket index: (seconds until closed, bytes the server sent)}; at most limit_s."""
    start = time.monotonic()
    closed, received, sent = {}, {i: b"" for i in range(len(sockets))}, 0
    while len(closed) < len(sockets) and time.monotonic() - start < limit_s:
        for i, s in enumerate(sockets):
            if i in closed:
                continue
            try:
                if payload:
                    s.sendall(payload[sent % len(payload):sent % len(payload) + 1])
            except OSError:
                closed[i] = time.monotonic() - start
        sent += 1
        wait_until = time.monotonic() + every_s
        while time.monotonic() < wait_until and len(closed) < len(sockets):
            open_ = [s for i, s in enumerate(sockets) if i not in closed]
            readable, _, _ = select.select(open_, [], [], max(0.0, wait_until - time.monotonic()))
            for s in readable:
                i = sockets.index(s)
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                received[i] += data
                if not data:
                    closed[i] = time.monotonic() - start
    return {i: (closed.get(i), received[i]) for i in range(len(sockets))}


def test_slow_and_surplus_clients_are_cut_off(models_dir):
    read_timeout = 1.0
    app = create_app(models_dir, workers=1, read_timeout_s=read_timeout)
    with RunningServer(app, read_timeout_s=read_timeout, max_connections=8) as running:
        sockets = []
        try:
            # 4 clients trickling a request head, one byte every 0.2 s (uvicorn alone would wait forever)
            heads = [running.connect() for _ in range(4)]
            # a client that sent one whole request, then trickles the next on the kept-alive connection
            kept = running.connect()
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += kept.recv(65536)
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += kept.recv(65536)
            assert head.startswith(b"HTTP/1.1 200")
            # a client that sends a complete head and then its body one byte at a time
            body_client = running.connect()
            body_client.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{")
            sockets = [*heads, kept, body_client]
            start = time.monotonic()
            results = trickle_until_closed(sockets, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200, 0.2,
                                           limit_s=read_timeout + 4)
            for i, (when, _) in results.items():
                assert when is not None and when <= read_timeout + 2, (i, results)
            _, answer = results[len(sockets) - 1]
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"connection: close" in head.lower()
            assert json.loads(body)["error"]["code"] == 408
            assert time.monotonic() - start < read_timeout + 4

            # past max_connections: answered 503 (JSON) and closed at once
            idle = [running.connect() for _ in range(8)]
            sockets = idle
            time.sleep(0.2)
            extra = running.connect()
            sockets = [*idle, extra]
            extra.settimeout(3)
            answer = b""
            while chunk := extra.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == 503
            # the idle ones are closed by the deadline too, and then the server answers again
            results = trickle_until_closed(idle, b"", 0.2, limit_s=read_timeout + 4)
            assert all(when is not None and when <= read_timeout + 2 for when, _ in results.values()), results
        finally:
            for s in sockets:
                s.close()
        import httpx

        assert httpx.get(f"http://127.0.0.1:{running.port}/healthz", timeout=10).status_code == 200
        # a bad Host on the real server: the JSON 421, whatever the client
        refused = httpx.get(f"http://127.0.0.1:{running.port}/healthz", headers={"host": "attacker.example"}, timeout=10)
        assert refused.status_code == 421 and refused.json()["error"]["code"] == 421
