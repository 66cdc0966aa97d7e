"""Tests for genlab.data: built-in sets, checksummed downloads, and the user's own files.

Nothing here touches the network: downloads go to a local HTTP server on 127.0.0.1 or to
file:// URLs, and real MNIST comes from the shared/ folder next to the repository.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import ImageDataSpec, data_root, load_image_data
from genlab.data.download import RemoteFile, ensure_files, fetch
from genlab.data.images import dataset_status, load_raw, read_cifar10_binary, read_idx
from genlab.errors import GenlabError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Point the data root at a temp folder and make sure no proxy or offline flag leaks in."""
    monkeypatch.setenv("GENLAB_DATA_DIR", str(tmp_path / "data_root"))
    for var in ("GENLAB_OFFLINE", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None].astype(np.uint8)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


# ----------------------------------------------------------------------------- built-in sets


def test_digits_loads_offline(monkeypatch):
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    raw = load_raw("digits", data_root())
    assert raw.train_images.shape == (1797, 1, 8, 8)
    assert raw.train_images.dtype == np.uint8
    assert raw.train_images.min() == 0 and raw.train_images.max() == 255
    assert raw.train_labels.dtype == np.int64
    assert set(raw.train_labels.tolist()) == set(range(10))
    assert raw.test_images is None and raw.classes == [str(i) for i in range(10)]

    data = load_image_data("digits")
    splits = [data.train, data.val, data.test]
    assert sum(len(s) for s in splits) == 1797 and all(len(s) > 0 for s in splits)
    # The three splits are a partition of the raw set: same rows, each used exactly once.
    images = np.concatenate([s.images.numpy() for s in splits])
    labels = np.concatenate([s.labels.numpy() for s in splits])
    assert np.array_equal(sorted_rows(images, labels), sorted_rows(raw.train_images, raw.train_labels))

    again = load_image_data("digits")
    for a, b in zip(splits, [again.train, again.val, again.test]):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_mnist_loads_from_data_dir(monkeypatch):
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST copy at {SHARED_DATA / 'mnist'}")
    monkeypatch.setenv("GENLAB_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("GENLAB_OFFLINE", "1")  # must come from the folder, never the network
    assert dataset_status("mnist", data_root()) == "present"

    raw = load_raw("mnist", data_root())
    assert raw.train_images.shape == (60000, 1, 28, 28) and raw.test_images.shape == (10000, 1, 28, 28)
    assert raw.train_labels.shape == (60000,) and raw.test_labels.shape == (10000,)
    assert raw.train_labels[0] == 5
    assert raw.train_images.min() == 0 and raw.train_images.max() == 255
    assert abs(raw.train_images.mean() / 255.0 - 0.1307) < 0.001  # the well-known MNIST mean
    assert np.bincount(raw.test_labels).tolist()[:3] == [980, 1135, 1032]

    data = load_image_data(ImageDataSpec(name="mnist", binarize="dynamic"))
    assert len(data.train) + len(data.val) == 60000 and len(data.test) == 10000
    idx = torch.arange(64)
    draw = lambda seed: data.batch("train", idx, torch.Generator().manual_seed(seed))["x"]  # noqa: E731
    x = draw(0)
    assert x.shape == (64, 1, 28, 28)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, draw(0)) and not torch.equal(x, draw(1))


def test_unknown_name_and_status(tmp_path):
    with pytest.raises(GenlabError, match="folder:DIR"):
        load_raw("imagenet", tmp_path)
    with pytest.raises(GenlabError, match="needs a path"):
        load_raw("folder:", tmp_path)
    with pytest.raises(GenlabError, match="only to folder"):
        load_raw("digits", tmp_path, image_size=32)
    assert dataset_status("digits", tmp_path) == "embedded"
    assert dataset_status("cifar10", tmp_path) == "download"
    assert dataset_status("npz:FILE", tmp_path) == "local"


# --------------------------------------------------------------------------------- downloads

PAYLOAD = b"genlab download test payload\n" * 200


@pytest.fixture
def server(tmp_path):
    """A local HTTP server serving tmp_path/srv; yields (base URL, list of requested paths)."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / "payload.bin").write_bytes(PAYLOAD)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there now: connection refused


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fetch_downloads_and_verifies(server, tmp_path):
    base, requests = server
    dest = tmp_path / "dest"
    remote = RemoteFile("payload.bin", (f"{base}/payload.bin",), sha256=SHA)
    path = fetch(remote, dest, progress=False)
    assert path == dest / "payload.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["payload.bin"]  # no temp file left behind
    # Present and intact: used as is, no second request.
    assert fetch(remote, dest, progress=False) == path and len(requests) == 1


def test_fetch_tries_mirrors_in_turn(server, tmp_path):
    base, _ = server
    remote = RemoteFile("payload.bin", (f"{closed_port_url()}/payload.bin", f"{base}/payload.bin"), sha256=SHA)
    assert fetch(remote, tmp_path / "dest", progress=False).read_bytes() == PAYLOAD


def test_fetch_wrong_checksum(server, tmp_path):
    base, _ = server
    dest = tmp_path / "dest"
    remote = RemoteFile("payload.bin", (f"{base}/payload.bin",), md5="0" * 32)
    with pytest.raises(GenlabError, match="checksum"):
        fetch(remote, dest, progress=False)
    assert list(dest.iterdir()) == []  # neither the bad file nor a temp file is kept


def test_existing_corrupted_file_is_reported(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "payload.bin").write_bytes(b"something else")
    remote = RemoteFile("payload.bin", ("http://127.0.0.1:9/payload.bin",), sha256=SHA)
    with pytest.raises(GenlabError) as e:
        fetch(remote, dest, progress=False)
    text = str(e.value)
    assert "payload.bin" in text and SHA in text and "delete" in text


def test_unreachable_server_names_files_and_folder(tmp_path):
    url = closed_port_url()
    files = [RemoteFile(name, (f"{url}/{name}",), sha256=SHA) for name in ("a.gz", "b.gz")]
    with pytest.raises(GenlabError) as e:
        ensure_files("toy", files, tmp_path / "root", progress=False)
    text = str(e.value)
    assert "offline" in text and "GENLAB_DATA_DIR" in text
    assert "a.gz" in text and "b.gz" in text and f"{url}/a.gz" in text
    assert str(tmp_path / "root" / "toy") in text


def test_offline_flag_skips_network(server, tmp_path, monkeypatch):
    base, requests = server
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    remote = RemoteFile("payload.bin", (f"{base}/payload.bin",), sha256=SHA)
    with pytest.raises(GenlabError, match="GENLAB_OFFLINE") as e:
        ensure_files("toy", [remote], tmp_path / "root", progress=False)
    assert "payload.bin" in str(e.value) and str(tmp_path / "root" / "toy") in str(e.value)
    assert requests == []


def test_file_url(tmp_path):
    source = tmp_path / "source" / "payload.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    remote = RemoteFile("payload.bin", (source.as_uri(),), sha256=SHA)
    (path,) = ensure_files("toy", [remote], tmp_path / "root", progress=False)
    assert path == tmp_path / "root" / "toy" / "payload.bin" and path.read_bytes() == PAYLOAD


# --------------------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_idx_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0, 2, 1], dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    raw = load_raw(f"idx:{tmp_path}", tmp_path)
    assert np.array_equal(raw.train_images, x[:, None]) and raw.train_labels.tolist() == y.tolist()
    assert raw.test_images is None and raw.classes == ["0", "1", "2"]
    assert np.array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte"), y)
    wide = np.arange(6, dtype=np.int32).reshape(2, 3) * 100000
    (tmp_path / "wide").write_bytes(idx_bytes(wide))
    assert np.array_equal(read_idx(tmp_path / "wide"), wide)  # big-endian int32 decoded right

    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x[:2]))
    with pytest.raises(GenlabError, match="t10k-labels-idx1-ubyte"):  # test files only come in pairs
        load_raw(f"idx:{tmp_path}", tmp_path)


def test_corrupted_idx_files(tmp_path):
    good = idx_bytes(np.zeros((4, 3, 3), dtype=np.uint8))
    bad_magic = tmp_path / "bad-magic-idx3-ubyte"
    bad_magic.write_bytes(b"\x12\x34" + good[2:])
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(good[:-5])
    cut_gzip = tmp_path / "cut-idx3-ubyte.gz"
    cut_gzip.write_bytes(gzip.compress(good)[:-12])
    for path, why in [(bad_magic, "magic"), (truncated, "need 36 bytes"), (cut_gzip, "decompress")]:
        with pytest.raises(GenlabError, match=why) as e:
            read_idx(path)
        assert path.name in str(e.value) and "delete" in str(e.value)


# ------------------------------------------------------------------------------------ folder


def make_folder(root: Path) -> None:
    (root / "dog").mkdir(parents=True)
    (root / "cat").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "cat" / "a.png")
    Image.fromarray(rng.integers(0, 256, (10, 8), dtype=np.uint8), mode="L").save(root / "cat" / "b.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="RGBA").save(root / "dog" / "c.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "dog" / "d.jpg")
    (root / "README.txt").write_text("not an image")
    (root / "dog" / "notes.txt").write_text("not an image either")


def test_folder_loads_and_resizes(tmp_path, capsys):
    make_folder(tmp_path / "imgs")
    raw = load_raw(f"folder:{tmp_path / 'imgs'}", tmp_path)
    assert raw.classes == ["cat", "dog"]
    assert raw.train_images.shape == (4, 3, 12, 12) and raw.train_images.dtype == np.uint8
    assert raw.train_labels.tolist() == [0, 0, 1, 1] and raw.test_images is None
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "README.txt" in err

    gray = load_raw(f"folder:{tmp_path / 'imgs'}", tmp_path, image_size=6, channels=1)
    assert gray.train_images.shape == (4, 1, 6, 6)


def test_folder_grayscale_and_non_square(tmp_path, capsys):
    (tmp_path / "imgs" / "only").mkdir(parents=True)
    Image.new("L", (10, 7), 128).save(tmp_path / "imgs" / "only" / "x.png")
    Image.new("L", (5, 5), 7).save(tmp_path / "imgs" / "only" / "y.bmp")
    raw = load_raw(f"folder:{tmp_path / 'imgs'}", tmp_path)
    assert raw.train_images.shape == (2, 1, 7, 7)  # all grayscale -> 1 channel; min side of the first
    assert raw.train_images[1].min() == raw.train_images[1].max() == 7
    assert "not square" in capsys.readouterr().err


def test_folder_errors(tmp_path):
    make_folder(tmp_path / "imgs")
    fake = tmp_path / "imgs" / "dog" / "fake.png"
    fake.write_bytes(b"this is not a png")
    with pytest.raises(GenlabError, match="fake.png"):
        load_raw(f"folder:{tmp_path / 'imgs'}", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="class sub-folders"):
        load_raw(f"folder:{tmp_path / 'empty'}", tmp_path)
    (tmp_path / "no_images" / "cls").mkdir(parents=True)
    (tmp_path / "no_images" / "cls" / "a.txt").write_text("x")
    with pytest.raises(GenlabError, match="no images"):
        load_raw(f"folder:{tmp_path / 'no_images'}", tmp_path)
    with pytest.raises(GenlabError, match="does not exist"):
        load_raw(f"folder:{tmp_path / 'missing'}", tmp_path)


# --------------------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.random((6, 5, 5, 3), dtype=np.float32)  # NHWC floats in [0, 1]
    x_test = rng.random((2, 5, 5, 3), dtype=np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, 2, 0, 1, 3]), x_test=x_test, y_test=np.array([3, 0]))
    raw = load_raw(f"npz:{path}", tmp_path)
    assert raw.train_images.shape == (6, 3, 5, 5) and raw.train_images.dtype == np.uint8
    assert np.array_equal(raw.train_images, np.rint(x_train.transpose(0, 3, 1, 2) * 255).astype(np.uint8))
    assert raw.test_images.shape == (2, 3, 5, 5) and raw.test_labels.tolist() == [3, 0]
    assert raw.classes == ["0", "1", "2", "3"]

    images = rng.integers(0, 256, (4, 1, 7, 7), dtype=np.uint8)  # NCHW uint8, images/labels keys
    np.savez(path, images=images, labels=np.array([1, 0, 1, 0], dtype=np.int32))
    raw = load_raw(f"npz:{path}", tmp_path)
    assert np.array_equal(raw.train_images, images) and raw.train_labels.dtype == np.int64


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    objects = np.empty(2, dtype=object)
    objects[:] = [np.zeros((3, 3)), np.zeros((3, 3))]
    np.savez(path, images=objects, labels=np.array([0, 1]))  # savez pickles object arrays
    with pytest.raises(GenlabError, match="pickle"):
        load_raw(f"npz:{path}", tmp_path)
    np.savez(path, pictures=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(GenlabError, match="x_train/y_train or images/labels"):
        load_raw(f"npz:{path}", tmp_path)
    np.savez(path, images=np.zeros((2, 3, 3, 5, 5), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(GenlabError, match="shape"):
        load_raw(f"npz:{path}", tmp_path)
    np.savez(path, images=np.full((2, 3, 3), 2.0), labels=np.array([0, 1]))
    with pytest.raises(GenlabError, match=r"\[0, 1\]"):
        load_raw(f"npz:{path}", tmp_path)


# ------------------------------------------------------------------------------------- CIFAR


def make_cifar_tar(path: Path, members: list[str]) -> dict[str, np.ndarray]:
    """A tiny cifar-10-binary.tar.gz in the real format: 2 records per batch file."""
    records = {}
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(members):
            recs = np.zeros((2, 3073), dtype=np.uint8)
            recs[:, 0] = [i % 10, (i + 3) % 10]
            recs[:, 1:1025] = 10 * i + 1  # red plane
            recs[:, 1025:2049] = 10 * i + 2  # green plane
            recs[:, 2049:] = np.arange(1024, dtype=np.uint8)  # blue plane: row-major pixel order
            records[name] = recs
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = recs.nbytes
            tar.addfile(info, io.BytesIO(recs.tobytes()))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return records


def test_cifar10_binary_reader(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    records = make_cifar_tar(path, names)
    raw = read_cifar10_binary(path)
    assert raw.train_images.shape == (10, 3, 32, 32) and raw.test_images.shape == (2, 3, 32, 32)
    assert raw.train_labels.tolist() == [r for n in names[:5] for r in records[n][:, 0].tolist()]
    assert raw.test_labels.tolist() == records["test_batch.bin"][:, 0].tolist()
    assert (raw.train_images[2, 0] == 11).all() and (raw.train_images[2, 1] == 12).all()
    assert raw.test_images[0, 2, 0, :3].tolist() == [0, 1, 2] and raw.test_images[0, 2, 1, 0] == 32
    assert raw.classes[:3] == ["airplane", "automobile", "bird"] and len(raw.classes) == 10

    make_cifar_tar(path, names[:5])
    with pytest.raises(GenlabError, match="test_batch.bin"):
        read_cifar10_binary(path)
    path.write_bytes(b"not a tarball")
    with pytest.raises(GenlabError, match="delete"):
        read_cifar10_binary(path)
