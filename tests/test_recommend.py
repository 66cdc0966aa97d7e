"""Recommendation (issue 15): the interactions kind and the strong-generalisation protocol, Mult-VAE,
Mult-DAE, EASE and popularity, `genlab eval`, and `genlab apply recommend` / POST /v1/recommendations.

Everything runs on hand-made matrices and the planted synthetic set (MovieLens may not be
redistributed); the MovieLens loaders read tiny files written here, and the download is tested
against a local server with a zip made here."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_cli

import genlab
from genlab.data import interactions as inter
from genlab.data.download import RemoteFile
from genlab.data.interactions import InteractionsSpec, RawInteractions, apply_protocol, load_interactions
from genlab.errors import GenlabError
from genlab.metrics.ranking import ndcg_at_k, ranking_sums, recall_at_k
from genlab.models.ease import ease_weights, gram_matrix

# A small planted set: 4 user groups x 4 item groups, strong affinity; trains in seconds.
SMALL = ["data.users=800", "data.items=80", "data.groups=4", "data.clicks_per_user=12"]
QUIET = ["train.progress=false", "train.tensorboard=false"]


def small_spec(**changes) -> InteractionsSpec:
    values = dict(name="synthetic", users=800, items=80, groups=4, clicks_per_user=12.0)
    return InteractionsSpec(**{**values, **changes})


# ----------------------------------------------------------------------------- the protocol


def reference_protocol(users, items, ratings, threshold, min_clicks, n_heldout, seed, fraction=0.2):
    """The vae_cf notebook's steps, written out the slow and obvious way, to check the fast one."""
    rows = [(u, i) for u, i, r in zip(users, items, ratings) if r > threshold]
    counts = {}
    for u, _ in rows:
        counts[u] = counts.get(u, 0) + 1
    rows = [(u, i) for u, i in rows if counts[u] >= min_clicks]
    unique_uid = np.array(sorted({u for u, _ in rows}))
    unique_uid = unique_uid[np.random.RandomState(seed).permutation(len(unique_uid))]
    n = len(unique_uid)
    train_u = list(unique_uid[: n - 2 * n_heldout])
    val_u, test_u = list(unique_uid[n - 2 * n_heldout: n - n_heldout]), list(unique_uid[n - n_heldout:])
    items_kept = sorted({i for u, i in rows if u in train_u})

    def split(members):
        plays = [(u, i) for u, i in rows if u in members and i in items_kept]
        rng = np.random.RandomState(seed)
        fold, held = set(), set()
        for u in sorted({u for u, _ in plays}):
            group = [(uu, i) for uu, i in plays if uu == u]
            mask = np.zeros(len(group), dtype=bool)
            if len(group) >= 5:
                mask[rng.choice(len(group), size=int(fraction * len(group)), replace=False).astype("int64")] = True
            held |= {p for p, m in zip(group, mask) if m}
            fold |= {p for p, m in zip(group, mask) if not m}
        return fold, held

    return train_u, val_u, test_u, items_kept, split(val_u), split(test_u)


def pairs_of(matrix, row_users, item_ids) -> set:
    coo = matrix.tocoo()
    return {(int(row_users[r]), int(item_ids[c])) for r, c in zip(coo.row, coo.col)}


def hand_made(seed: int = 98765):
    """14 users (ids 100..113), 12 items, ratings 1..5; user 113 has only 2 clicks (dropped) and
    each rating 3 is below the threshold; item 500 is clicked only by one held-out user."""
    rng = np.random.default_rng(7)
    users, items, ratings = [], [], []
    for u in range(100, 113):
        chosen = rng.choice(12, size=rng.integers(6, 11), replace=False)
        for n, i in enumerate(chosen):  # at least 5 ratings above 3.5 each, then some of 3 stars
            users.append(u), items.append(int(i) + 1), ratings.append(float(rng.choice([4.0, 5.0] if n < 5 else [3.0, 4.0])))
    users += [113, 113, 113]
    items += [1, 2, 3]
    ratings += [5.0, 4.0, 3.0]
    # one held-out user (by this seed's shuffle) also clicked item 500, which no training user did
    active = sorted(set(range(100, 113)))
    heldout = np.array(active)[np.random.RandomState(seed).permutation(len(active))][-4:]
    users.append(int(heldout[0])), items.append(500), ratings.append(5.0)
    return RawInteractions(np.array(users), np.array(items), np.array(ratings), {1: "One", 500: "Five hundred"}, 3.5)


def test_the_protocol_on_a_hand_made_matrix():
    raw = hand_made()
    spec = InteractionsSpec(name="csv:x", heldout_users=2)
    data = apply_protocol(raw, spec, "hand-made")
    train_u, val_u, test_u, items, (val_fold, val_held), (test_fold, test_held) = reference_protocol(
        raw.users, raw.items, raw.ratings, 3.5, 5, 2, 98765)
    assert 113 not in [*train_u, *val_u, *test_u]  # 2 clicks above 3.5: dropped
    assert list(data.split_users["val"]) == val_u and list(data.split_users["test"]) == test_u
    assert list(data.item_ids) == items and 500 not in items  # only a held-out user clicked item 500
    assert data.protocol["removed_items"] == 1 and data.protocol["dropped_users"] == 1
    assert data.protocol["users"] == {"train": len(train_u), "val": 2, "test": 2}
    assert pairs_of(data.train, train_u, data.item_ids) == {(u, i) for u, i, r in zip(raw.users, raw.items, raw.ratings)
                                                            if u in train_u and r > 3.5}
    for split, fold, held in (("val", val_fold, val_held), ("test", test_fold, test_held)):
        users = data.split_users[split]
        assert pairs_of(data.fold_in[split], users, data.item_ids) == fold
        assert pairs_of(data.heldout[split], users, data.item_ids) == held
        assert all(len([p for p in held if p[0] == u]) == int(0.2 * len([p for p in fold | held if p[0] == u]))
                   for u in users)
    batch = data.batch("val", torch.tensor([0, 1]))
    assert batch["x"].shape == batch["heldout"].shape == (2, len(items)) and batch["x"].dtype == torch.float32
    assert not (batch["x"] * batch["heldout"]).any()  # fold-in and evaluated items are disjoint
    assert data.titles[0] == "One" and data.classes == [] and data.model_fields()["num_items"] == len(items)


def matrices(data):
    parts = [data.train, *data.fold_in.values(), *data.heldout.values()]
    return b"".join(m.indptr.tobytes() + m.indices.tobytes() + m.data.tobytes() for m in parts)


def test_the_protocol_is_byte_for_byte_reproducible_from_its_seed():
    first, again = load_interactions(small_spec()), load_interactions(small_spec())
    assert matrices(first) == matrices(again) and first.protocol == again.protocol
    other = load_interactions(small_spec(split_seed=1))
    assert matrices(other) != matrices(first)
    assert first.protocol["users"] == {"train": 640, "val": 80, "test": 80}
    assert first.truth["val"].shape == (80, first.num_items)


def test_a_data_set_too_small_for_the_protocol_is_one_clear_error():
    raw = RawInteractions(np.array([1, 1, 1, 1, 1, 2]), np.array([1, 2, 3, 4, 5, 1]), None, {}, None)
    with pytest.raises(GenlabError, match="too small for the protocol"):
        apply_protocol(raw, InteractionsSpec(name="csv:x"), "tiny")


# ----------------------------------------------------------------------------- loaders


def write_csv(path, text: str):
    path.write_text(text)
    return f"csv:{path}"


def test_csv_loader_columns_duplicates_and_bad_ids(tmp_path, capsys):
    rows = ["who,what,stars,when,name"]
    for u in range(30):
        for i in range(8):
            if (u + i) % 3:
                rows.append(f"{u},{i},{4 + (u * i) % 2},{1000 + i},film {i}")
    rows.append("0,1,5,1,film 1")  # a duplicate of a row above: counted once
    name = write_csv(tmp_path / "clicks.csv", "\n".join(rows) + "\n")
    spec = dict(name=name, user_column="who", item_column="what", rating_column="stars", timestamp_column="when",
                title_column="name", threshold=3.5, heldout_users=3)
    data = load_interactions(spec)
    assert "1 duplicate (user, item) row(s) counted once" in capsys.readouterr().err
    assert data.protocol["duplicates"] == 1 and data.titles[data.item_ids.tolist().index(1)] == "film 1"
    with pytest.raises(GenlabError, match="has no item column 'item'.*its columns: who, what"):
        load_interactions({**spec, "item_column": "item"})
    bad = write_csv(tmp_path / "bad.csv", "who,what\n1,2\n1,x3\n")
    with pytest.raises(GenlabError, match="line 3: item id 'x3' is not an integer"):
        load_interactions({"name": bad, "user_column": "who", "item_column": "what"})
    with pytest.raises(GenlabError, match="no such file"):
        load_interactions({"name": f"csv:{tmp_path / 'absent.csv'}"})


def movielens_rows(n_users=40, n_items=15):
    rng = np.random.default_rng(3)
    for u in range(1, n_users + 1):
        for i in rng.choice(n_items, size=9, replace=False):
            yield u, int(i) + 1, float(rng.choice([2, 4, 5])), 880000000 + int(i)


def write_movielens(folder, kind: str):
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(movielens_rows())
    if kind == "u.data":
        (folder / "u.data").write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in rows))
        (folder / "u.item").write_bytes("".join(f"{i}|Film {i} (1995)|01-Jan-1995||url|0\n" for i in range(1, 16))
                                        .encode("latin-1"))
    elif kind == "ratings.dat":
        (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in rows))
        (folder / "movies.dat").write_text("".join(f"{i}::Film {i} (1995)::Drama\n" for i in range(1, 16)))
    else:
        (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                            + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
        (folder / "movies.csv").write_text("movieId,title,genres\n"
                                           + "".join(f'{i},"Film, {i} (1995)",Drama\n' for i in range(1, 16)))
    return rows


@pytest.mark.parametrize("kind", ["u.data", "ratings.dat", "ratings.csv"])
def test_movielens_folder_loader_detects_the_format(tmp_path, kind):
    rows = write_movielens(tmp_path / "ml", kind)
    data = load_interactions({"name": f"movielens:{tmp_path / 'ml'}", "heldout_users": 4})
    clicks = {(u, i) for u, i, r, _ in rows if r > 3.5}
    active = {u for u, _ in clicks if sum(1 for v, _ in clicks if v == u) >= 5}
    clicks = {(u, i) for u, i in clicks if u in active}
    assert data.protocol["threshold"] == 3.5 and data.protocol["clicks"] == len(clicks)
    title = data.titles[0]
    assert title.startswith("Film") and title.endswith("(1995)")


def zip_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        rows = list(movielens_rows())
        archive.writestr(f"{name}/u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in rows))
        archive.writestr(f"{name}/u.item", "".join(f"{i}|Film {i}|x\n" for i in range(1, 16)))
    return buffer.getvalue()


@pytest.fixture
def local_server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "ml-100k.zip").write_bytes(zip_bytes("ml-100k"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_movielens_zip_is_downloaded_checked_and_read(local_server, tmp_path, monkeypatch):
    base, root = local_server
    md5 = hashlib.md5((root / "ml-100k.zip").read_bytes()).hexdigest()
    monkeypatch.setitem(inter.MOVIELENS, "ml-100k", RemoteFile("ml-100k.zip", (f"{base}/ml-100k.zip",), md5=md5))
    cache = tmp_path / "cache"
    with pytest.raises(GenlabError, match="GENLAB_OFFLINE") as offline:  # the tests' default: nothing downloaded
        load_interactions({"name": "ml-100k", "heldout_users": 4}, root=cache, progress=False)
    assert f"{base}/ml-100k.zip" in offline.value.hint and str(cache / "ml-100k") in offline.value.hint
    monkeypatch.setenv("GENLAB_OFFLINE", "0")
    data = load_interactions({"name": "ml-100k", "heldout_users": 4}, root=cache, progress=False)
    assert (cache / "ml-100k" / "ml-100k.zip").is_file() and data.titles[0].startswith("Film")
    assert inter.interaction_dataset_status("ml-100k", cache) == "present"
    monkeypatch.setitem(inter.MOVIELENS, "ml-100k", RemoteFile("ml-100k.zip", (f"{base}/ml-100k.zip",), md5="0" * 32))
    with pytest.raises(GenlabError, match="corrupted or not the expected file"):
        load_interactions({"name": "ml-100k"}, root=cache, progress=False)


def test_the_published_movielens_checksums_are_pinned():
    assert {name: remote.md5 for name, remote in inter.MOVIELENS.items()} == {
        "ml-100k": "0e33842e24a9c977be4e0107933c0723", "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
        "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3", "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada"}


# ----------------------------------------------------------------------------- models


def test_ease_closed_form_equals_a_direct_ridge_solve_per_item():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 9)) < 0.3).astype(np.float64)
    import scipy.sparse as sp

    weights = ease_weights(gram_matrix(sp.csr_matrix(x)), 7.0).double().numpy()
    for j in range(9):  # each column: ridge regression of item j on the other items, B_jj = 0
        others = [i for i in range(9) if i != j]
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + 7.0 * np.eye(8), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], w, atol=1e-5)
        assert weights[j, j] == 0.0


def test_ranking_sums_add_up_to_the_ranking_metrics():
    rng = np.random.default_rng(1)
    scores, relevant = rng.random((40, 30)), rng.random((40, 30)) < 0.2
    exclude = (rng.random((40, 30)) < 0.2) & ~relevant
    relevant[0] = False  # a user with nothing to find is skipped by both
    halves = [ranking_sums(scores[s], relevant[s], exclude[s], ndcg_ks=(10,), recall_ks=(5,)) for s in (slice(0, 20),
                                                                                                         slice(20, 40))]
    users = sum(h["users"] for h in halves)
    assert users == 39
    assert sum(h["ndcg@10"] for h in halves) / users == pytest.approx(ndcg_at_k(scores, relevant, 10, exclude))
    assert sum(h["recall@5"] for h in halves) / users == pytest.approx(recall_at_k(scores, relevant, 5, exclude))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """multvae, multdae, ease and popularity on the small planted set, and their `genlab eval` results."""
    root = tmp_path_factory.mktemp("recommenders")
    settings = {
        "multvae": ["model.hidden=[64]", "model.latent_dim=16", "model.anneal_steps=200", "epochs=12",
                    "batch_size=32", "train.eval_every=20", "lr=3e-3"],
        "multdae": ["model.latent_dim=32", "epochs=12", "batch_size=32", "train.eval_every=20", "lr=3e-3"],
        "ease": [], "popularity": []}
    runs = {}
    for family, extra in settings.items():
        recipe = f"{family}-synthetic"
        runs[family] = genlab.train(recipe, [*SMALL, *QUIET, *extra], out=root / family)
    results = {family: genlab.evaluate(run, progress=False) for family, run in runs.items()}
    return runs, results


def test_multvae_dae_and_ease_beat_popularity_on_the_planted_set(trained):
    runs, results = trained
    pop = results["popularity"]["ranking"]["test"]["popularity"]["ndcg@100"]
    for family in ("multvae", "multdae", "ease"):
        row = results[family]["ranking"]["test"]
        assert row[family]["ndcg@100"] > pop + 0.1, (family, row)
        assert row[family]["ndcg@100"] <= row["ceiling"]["ndcg@100"] + 0.02  # the true model is the ceiling
        assert row["popularity"]["ndcg@100"] == pytest.approx(pop)  # the same baseline on the same users
    assert results["multvae"]["protocol"]["seed"] == 98765 and results["multvae"]["seed"] == 98765
    metrics = json.loads((runs["multvae"] / "metrics.json").read_text())
    assert metrics["eval"]["protocol"]["users"]["val"] == 80 and "ease" in metrics["eval"]["ranking"]["val"]
    assert metrics["training"]["monitor"] == "val.ndcg@100"  # keep_best: the best validation NDCG@100 is exported
    assert metrics["val"]["ndcg@100"] == pytest.approx(metrics["training"]["best_metric"])
    ease = genlab.load(runs["ease"])
    assert float(ease.l2) in ease.config.l2_grid  # the l2 chosen on validation travels with the model


def test_eval_report_and_sample_message(trained, capsys):
    runs, _ = trained
    code, out, err = run_cli(capsys, "eval", str(runs["multdae"]))
    assert code == 0, err
    assert "NDCG@100" in out and "popularity" in out and "true model (ceiling)" in out and "seed 98765" in out
    code, _, err = run_cli(capsys, "sample", str(runs["multvae"]))
    assert_clean_error(code, err, "recommender", "genlab apply recommend")
    code, out, _ = run_cli(capsys, "datasets")
    assert "interactions (" in out and "synthetic" in out and "ml-20m" in out


# ----------------------------------------------------------------------------- the application


def test_cli_apply_equals_the_python_function(trained, capsys, tmp_path):
    from genlab.apps.recommend import recommend

    runs, _ = trained
    model = genlab.load(runs["multvae"])
    expected = recommend(model, ["3", "item 17 (", 42], k=5)
    assert [h["item"] for h in expected["history"]] == [3, 17, 42]
    assert not {r["item"] for r in expected["recommendations"]} & {3, 17, 42}  # seen items left out
    out_csv = tmp_path / "recs.csv"
    code, out, err = run_cli(capsys, "apply", "recommend", str(runs["multvae"]), "--items", "3,item 17 (", "--items",
                             "42", "-k", "5", "-o", str(out_csv))
    assert code == 0, err
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "rank,item,title,score" and len(lines) == 6
    assert [int(line.split(",")[1]) for line in lines[1:]] == [r["item"] for r in expected["recommendations"]]
    with_seen = recommend(model, [3, 17, 42], k=80, include_seen=True)
    assert {3, 17, 42} <= {r["item"] for r in with_seen["recommendations"]}


def test_http_route_equals_the_python_function(trained, tmp_path):
    from fastapi.testclient import TestClient

    from genlab.apps.recommend import recommend
    from genlab.serve.api import create_app

    runs, _ = trained
    models = tmp_path / "served"
    models.mkdir()
    shutil.copytree(runs["ease"], models / "ease", ignore=shutil.ignore_patterns("*checkpoint*", "best.*"))
    shutil.copytree(runs["multvae"], models / "mv", ignore=shutil.ignore_patterns("*checkpoint*", "best.*"))
    with TestClient(create_app(models), base_url="http://127.0.0.1") as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert "/v1/recommendations" in listed["mv"]["endpoints"] and listed["mv"]["data_kind"] == "interactions"
        reply = client.post("/v1/recommendations", json={"model": "mv", "items": [3, "item 17 (", 42], "k": 5})
        assert reply.status_code == 200, reply.text
        expected = recommend(genlab.load(runs["multvae"]), [3, "item 17 (", 42], k=5)
        got = reply.json()
        assert got["model"] == "mv" and got["history"] == expected["history"]
        assert [r["item"] for r in got["recommendations"]] == [r["item"] for r in expected["recommendations"]]
        assert [r["score"] for r in got["recommendations"]] == pytest.approx([r["score"] for r in expected["recommendations"]])
        as_text = client.post("/v1/recommendations", json={"model": "mv", "items": "3, item 17 (,42", "k": 5})
        assert as_text.json()["recommendations"] == got["recommendations"]  # the studio's form sends one text
        for body, status, needle in (
            ({"model": "mv", "items": [], "k": 5}, 422, "history is empty"),
            ({"model": "mv", "items": [99999], "k": 5}, 422, "unknown item id 99999"),
            ({"model": "mv", "items": ["no such film"], "k": 5}, 422, "no item's title contains"),
            ({"model": "mv", "items": [3], "k": 0}, 422, ""),
            ({"model": "mv", "items": [3], "k": 80}, 422, "more than the 79 items"),
            ({"model": "ease", "items": ["item 1"], "k": 5}, 422, "matches"),
        ):
            reply = client.post("/v1/recommendations", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert needle in reply.text
        apps = {a["name"]: a for a in client.get("/v1/applications").json()["data"]}
        assert "recommend" in apps
        assert "/v1/recommendations" in client.get("/openapi.json").json()["paths"]


def test_bad_inputs_are_one_line_errors(trained, capsys):
    runs, _ = trained
    model = str(runs["multvae"])
    cases = [
        (["--items", "99999"], "unknown item id 99999"),
        (["--items", "itme 3 (grop 0)"], "did you mean"),
        (["--items", ","], "the history is empty"),
        (["--items", "3", "-k", "0"], "-k must be in 1..1,000"),
        (["--items", "3", "-k", "80"], "more than the 79 items"),
        (["--items", "3", "-o", "recs.txt"], "written as CSV"),
    ]
    for extra, needle in cases:
        code, _, err = run_cli(capsys, "apply", "recommend", model, *extra)
        assert_clean_error(code, err, needle)
    code, out, err = run_cli(capsys, "apply", "recommend", model, "--items", "3,3", "-k", "2")
    assert code == 0 and "counted once" in out
