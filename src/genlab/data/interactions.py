"""Implicit-feedback interactions: a users x items click matrix, split by the strong-generalisation
protocol of Liang et al. 2018 ("Variational autoencoders for collaborative filtering", the
dawenl/vae_cf notebook), which Mult-VAE, Mult-DAE and EASE are all reported on.

Sources:
    synthetic          planted structure: user groups x item groups and a popularity skew, with
                       known generating probabilities (so the ceiling NDCG can be computed)
    ml-100k ml-1m      GroupLens's MovieLens zips, downloaded once and checked against the MD5s
    ml-20m ml-25m      GroupLens publishes beside them (never shipped: their licence forbids it)
    movielens:DIR      an unzipped MovieLens folder (u.data, ratings.dat or ratings.csv, detected)
    csv:FILE           any CSV; its columns named by data.user_column / item_column / rating_column
                       / timestamp_column / title_column

The protocol, step by step as in vae_cf:
    1. ratings above data.threshold become clicks (3.5 on MovieLens: 4 and 5 stars);
       a (user, item) pair listed twice counts once;
    2. users with fewer than data.min_clicks (5) clicks are dropped;
    3. the users, sorted by id, are shuffled by numpy's RandomState(data.split_seed) (98765);
    4. the last 2 x H of them are held out: H validation users, then H test users
       (H = 10,000 on ML-20M and ML-25M; a fraction data.heldout_fraction of the users elsewhere);
    5. the items are those the training users clicked: an item seen only among held-out users is
       removed (no model could have learned it);
    6. for each held-out user with at least 5 clicks, in order of user id, one RandomState(seed) per
       split draws int(0.2 x clicks) of them (without replacement) to be evaluated; the rest fold in.
       Models see only the training users' rows; at evaluation they score from the fold-in rows.

Everything stays sparse (scipy CSR); a batch densifies only its own rows: [B, I] floats.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import GenlabError, warn
from .download import RemoteFile, data_root, ensure_files

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
# name -> (the zip GroupLens publishes with the MD5 in its .md5 file beside it, the folder inside the zip)
MOVIELENS = {
    "ml-100k": RemoteFile("ml-100k.zip", (f"{GROUPLENS}/ml-100k.zip",), md5="0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": RemoteFile("ml-1m.zip", (f"{GROUPLENS}/ml-1m.zip",), md5="c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": RemoteFile("ml-20m.zip", (f"{GROUPLENS}/ml-20m.zip",), md5="cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": RemoteFile("ml-25m.zip", (f"{GROUPLENS}/ml-25m.zip",), md5="6b51fb2759a8657d3bfcbfc42b592ada"),
}
INTERACTION_DATASETS = {
    "synthetic": "planted user groups x item groups with a popularity skew (embedded; known ceiling)",
    "ml-100k": "MovieLens 100K: 943 users x 1,682 films (GroupLens zip, 5 MB)",
    "ml-1m": "MovieLens 1M: 6,040 users x 3,706 films (GroupLens zip, 6 MB)",
    "ml-20m": "MovieLens 20M: the Mult-VAE paper's set, 138,493 users (GroupLens zip, 190 MB)",
    "ml-25m": "MovieLens 25M: 162,541 users (GroupLens zip, 250 MB)",
    "movielens:DIR": "an unzipped MovieLens folder (u.data, ratings.dat or ratings.csv)",
    "csv:FILE": "your own interactions: data.user_column, item_column (+ rating_column, title_column)",
}
MOVIELENS_THRESHOLD = 3.5  # vae_cf: ratings of 4 and 5 stars are clicks
PAPER_HELDOUT_USERS = {"ml-20m": 10_000, "ml-25m": 10_000}  # Liang et al.: 10,000 validation and 10,000 test users
MIN_EVALUATED_CLICKS = 5  # vae_cf splits a held-out user's clicks only when there are at least 5 (else all fold in)


@dataclass
class InteractionsSpec:
    name: str = "synthetic"  # synthetic | ml-100k | ml-1m | ml-20m | ml-25m | movielens:DIR | csv:FILE
    threshold: float | None = None  # ratings > threshold are clicks; None: 3.5 with MovieLens ratings, else every row
    min_clicks: int = 5  # users with fewer clicks are dropped
    heldout_users: int | None = None  # validation users and as many test users; None: 10,000 on ml-20m/25m, else the fraction
    heldout_fraction: float = 0.1  # of the users, for validation and again for test, when heldout_users is None
    evaluated_fraction: float = 0.2  # of each held-out user's clicks, scored; the rest is the fold-in history
    split_seed: int = 98765  # the user shuffle and the fold-in split (vae_cf's seed)
    # csv:FILE columns (by header name) and separator
    user_column: str = "user"
    item_column: str = "item"
    rating_column: str | None = None
    timestamp_column: str | None = None  # read and checked; the protocol itself does not order by time
    title_column: str | None = None
    delimiter: str = ","
    # synthetic: the planted structure
    users: int = 3000
    items: int = 300
    groups: int = 10  # user groups = item groups; a user clicks mostly within its own group's items
    clicks_per_user: float = 20.0  # mean clicks per user (at least min_clicks each)
    affinity: float = 0.8  # share of a user's clicks drawn from its group's items; the rest follows popularity
    popularity_skew: float = 1.0  # Zipf exponent of item popularity
    synthetic_seed: int = 0

    def __post_init__(self):
        def check(ok, message, hint=None):
            if not ok:
                raise GenlabError(message, hint)

        check(self.min_clicks >= 1, f"data.min_clicks must be at least 1, got {self.min_clicks}")
        check(self.heldout_users is None or self.heldout_users >= 1,
              f"data.heldout_users must be at least 1 (or unset), got {self.heldout_users}")
        check(0.0 < self.heldout_fraction < 0.5, f"data.heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        check(0.0 < self.evaluated_fraction < 1.0,
              f"data.evaluated_fraction must be in (0, 1), got {self.evaluated_fraction}")
        check(0 <= self.split_seed < 2**32, f"data.split_seed must be in 0..2^32-1 (numpy's RandomState), got {self.split_seed}")
        check(len(self.delimiter) == 1, f"data.delimiter must be one character, got {self.delimiter!r}")
        if self.name == "synthetic":
            check(self.users >= 10 and self.items >= 2, "synthetic data needs data.users >= 10 and data.items >= 2")
            check(1 <= self.groups <= self.items, f"data.groups must be in 1..data.items ({self.items}), got {self.groups}")
            check(self.min_clicks <= self.clicks_per_user <= self.items / 2,
                  f"data.clicks_per_user must be in data.min_clicks..items/2 ({self.min_clicks}..{self.items / 2:g}), "
                  f"got {self.clicks_per_user}")
            check(0.0 <= self.affinity <= 1.0, f"data.affinity must be in [0, 1], got {self.affinity}")
            check(self.popularity_skew >= 0.0, f"data.popularity_skew must be >= 0, got {self.popularity_skew}")
            check(self.synthetic_seed >= 0, f"data.synthetic_seed must be >= 0, got {self.synthetic_seed}")


@dataclass
class RawInteractions:
    """Rows as read, in file order: user and item ids (int64 [N]), ratings (float64 [N] or None),
    and item id -> title where the source has titles."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None
    titles: dict[int, str]
    threshold: float | None  # the source's default threshold (3.5 for MovieLens ratings)


# ----------------------------------------------------------------------------- the data object


class InteractionData:
    """The protocol's result: training users' rows, and each held-out user's fold-in and evaluated rows.

    Splits: train (CSR [n_train, I]), val and test (fold-in CSR and evaluated CSR, [n_val, I] each).
    batch("train") -> {"x": [B, I] clicks}; batch("val" | "test") -> {"x": [B, I] fold-in clicks,
    "heldout": [B, I] evaluated clicks}. Columns are the kept items in ascending id order.
    """

    classes: list = []
    value_range = (0.0, 1.0)

    def __init__(self, spec: InteractionsSpec, train: sp.csr_matrix, fold_in: dict, heldout: dict,
                 item_ids: np.ndarray, titles: dict[int, str], protocol: dict, truth: dict | None = None):
        self.spec = spec
        self.train = train
        self.fold_in = fold_in  # split -> CSR
        self.heldout = heldout  # split -> CSR
        self.item_ids = item_ids  # int64 [I]: column -> the source's item id
        self.titles = [titles.get(int(i), "") for i in item_ids]
        self.protocol = protocol  # what metrics.json records
        self.truth = truth  # synthetic only: split -> [n, I] generating probabilities of each user

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def rows(self, split: str) -> sp.csr_matrix:
        """The rows a model sees for `split`: all clicks (train) or the fold-in clicks (val, test)."""
        if split == "train":
            return self.train
        if split not in self.fold_in:
            raise GenlabError(f"unknown split {split!r}", "use train, val or test")
        return self.fold_in[split]

    def num_examples(self, split: str) -> int:
        return self.rows(split).shape[0]

    def batch(self, split: str, indices, generator=None) -> dict:
        idx = np.asarray(indices, dtype=np.int64)
        out = {"x": dense(self.rows(split)[idx])}
        if split != "train":
            out["heldout"] = dense(self.heldout[split][idx])
        return out

    def model_fields(self) -> dict:
        # The item catalogue travels with the model, so `genlab apply recommend` needs no data set.
        return {"num_items": self.num_items, "item_ids": tuple(int(i) for i in self.item_ids),
                "item_titles": tuple(self.titles)}


def dense(rows: sp.csr_matrix) -> torch.Tensor:
    """CSR rows -> a dense float32 tensor [B, I] (only these rows are densified)."""
    return torch.from_numpy(np.asarray(rows.toarray(), dtype=np.float32))


# ----------------------------------------------------------------------------- the protocol


def heldout_count(spec: InteractionsSpec, n_users: int) -> int:
    if spec.heldout_users is not None:
        return spec.heldout_users
    if spec.name in PAPER_HELDOUT_USERS:
        return PAPER_HELDOUT_USERS[spec.name]
    return max(1, int(round(n_users * spec.heldout_fraction)))


def clicks_from(raw: RawInteractions, spec: InteractionsSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """Steps 1: (user, item) clicks in file order, duplicates counted once; returns the number of duplicates."""
    users, items = raw.users, raw.items
    threshold = spec.threshold if spec.threshold is not None else raw.threshold
    if raw.ratings is not None and threshold is not None:
        keep = raw.ratings > threshold
        users, items = users[keep], items[keep]
    _, first = np.unique(pair_keys(users, items), return_index=True)
    duplicates = len(users) - len(first)
    if duplicates:
        first.sort()  # keep file order: the fold-in draw below depends on each user's row order
        users, items = users[first], items[first]
    return users, items, duplicates


def pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One int64 per (user, item) pair (a 1-D unique is much faster than np.unique(axis=0) on 20M rows)."""
    if not len(users):
        return np.zeros(0, np.int64)
    u, i = users - users.min(), items - items.min()
    width = int(i.max()) + 1
    if (int(u.max()) + 1) * width >= 2**62:  # ids too far apart for one int64: compare the pairs as rows
        return np.unique(np.stack([u, i], 1), axis=0, return_inverse=True)[1].ravel()
    return u * width + i


def positions(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The index in `members` (distinct ids, any order) of each of `values` (all among them)."""
    sorter = np.argsort(members, kind="stable")
    return sorter[np.searchsorted(members, values, sorter=sorter)].astype(np.int64)


def split_fold_in(users: np.ndarray, items: np.ndarray, fraction: float, seed: int):
    """Step 6 for one split: per user (ascending id), draw int(fraction x n) of its rows to evaluate.
    Returns a boolean mask over the rows: True = evaluated."""
    rng = np.random.RandomState(seed)  # vae_cf seeds once per split, then walks the users in id order
    order = np.argsort(users, kind="stable")  # each user's rows stay in file order
    evaluated = np.zeros(len(users), dtype=bool)
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    ends = np.r_[starts[1:], len(order)]
    for start, end in zip(starts, ends):
        n = end - start
        if n >= MIN_EVALUATED_CLICKS:
            chosen = rng.choice(n, size=int(fraction * n), replace=False).astype(np.int64)
            evaluated[order[start + chosen]] = True
    return evaluated


def apply_protocol(raw: RawInteractions, spec: InteractionsSpec, source: str) -> InteractionData:
    users, items, duplicates = clicks_from(raw, spec)
    if duplicates:
        warn(f"{source}: {duplicates:,} duplicate (user, item) row(s) counted once")
    # Step 2: users with too few clicks.
    uid, counts = np.unique(users, return_counts=True)
    active = uid[counts >= spec.min_clicks]
    keep = np.isin(users, active)
    users, items = users[keep], items[keep]
    n_users = len(active)
    n_heldout = heldout_count(spec, n_users)
    if n_users < 2 * n_heldout + 1 or n_heldout < 1:
        raise GenlabError(
            f"{source} is too small for the protocol: {n_users} user(s) with at least {spec.min_clicks} clicks, "
            f"but {n_heldout} validation + {n_heldout} test users must be held out and some left to train on",
            "use more data, or a smaller data.heldout_users / data.heldout_fraction / data.min_clicks")
    # Steps 3-4: a seeded shuffle of the users (sorted by id first, as pandas' groupby gives them).
    shuffled = active[np.random.RandomState(spec.split_seed).permutation(n_users)]
    train_users = shuffled[: n_users - 2 * n_heldout]
    split_users = {"val": shuffled[n_users - 2 * n_heldout: n_users - n_heldout], "test": shuffled[n_users - n_heldout:]}
    # Step 5: the items are those the training users clicked.
    in_train = np.isin(users, train_users)
    item_ids = np.unique(items[in_train])
    def matrix(rows, cols, n_rows):
        values = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((values, (rows, cols)), shape=(n_rows, len(item_ids)), dtype=np.float32)

    train = matrix(positions(users[in_train], train_users), np.searchsorted(item_ids, items[in_train]), len(train_users))
    fold_in, heldout, removed_clicks = {}, {}, 0
    for split, members in split_users.items():
        mine = np.isin(users, members)
        known = mine & np.isin(items, item_ids)
        removed_clicks += int(mine.sum() - known.sum())
        su, si = users[known], items[known]
        evaluated = split_fold_in(su, si, spec.evaluated_fraction, spec.split_seed)
        rows = positions(su, members)
        cols = np.searchsorted(item_ids, si)
        fold_in[split] = matrix(rows[~evaluated], cols[~evaluated], len(members))
        heldout[split] = matrix(rows[evaluated], cols[evaluated], len(members))
    if any(h.nnz == 0 for h in heldout.values()):
        raise GenlabError(f"{source} is too small for the protocol: no held-out user has {MIN_EVALUATED_CLICKS} or more "
                          "clicks to evaluate", "use more data, or a larger data.heldout_users")
    all_items = np.unique(items)
    protocol = {
        "name": "strong generalisation (Liang et al. 2018, dawenl/vae_cf)",
        "threshold": spec.threshold if spec.threshold is not None else raw.threshold,
        "min_clicks": spec.min_clicks, "heldout_users": n_heldout, "evaluated_fraction": spec.evaluated_fraction,
        "seed": spec.split_seed, "users": {"train": len(train_users), "val": n_heldout, "test": n_heldout},
        "items": len(item_ids), "clicks": int(len(users)), "train_clicks": int(train.nnz),
        "dropped_users": int(len(uid) - n_users), "removed_items": int(len(all_items) - len(item_ids)),
        "removed_clicks": removed_clicks, "duplicates": int(duplicates),
        "density": round(len(users) / max(1, n_users * len(all_items)), 6),
    }
    data = InteractionData(spec, train, fold_in, heldout, item_ids, raw.titles, protocol)
    data.split_users = split_users  # source user ids of the held-out rows (the synthetic truth needs them)
    return data


# ----------------------------------------------------------------------------- sources


def load_interactions(spec: InteractionsSpec | dict | str, root: Path | None = None, progress: bool = True) -> InteractionData:
    """Read a source and split it by the protocol (deterministic in spec.split_seed)."""
    if isinstance(spec, str):
        spec = InteractionsSpec(name=spec)
    elif isinstance(spec, dict):
        from ..config import from_dict

        spec = from_dict(InteractionsSpec, spec, "data")
    root = Path(root) if root is not None else data_root()
    name = spec.name
    if name == "synthetic":
        raw, truth = synthetic_interactions(spec)
        data = apply_protocol(raw, spec, "synthetic")
        kept = data.item_ids  # the truth over the kept columns, for the held-out users
        data.truth = {split: truth.user_probabilities(users)[:, kept] for split, users in data.split_users.items()}
        return data
    if name in MOVIELENS:
        (path,) = ensure_files(name, [MOVIELENS[name]], root, progress)
        return apply_protocol(read_movielens_zip(path, name), spec, name)
    if name.startswith("movielens:"):
        return apply_protocol(read_movielens_dir(Path(name[len("movielens:"):]).expanduser()), spec, name)
    if name.startswith("csv:"):
        path = Path(name[len("csv:"):]).expanduser()
        return apply_protocol(read_csv(path, spec), spec, f"csv:{path.name}")
    raise GenlabError(f"unknown interaction data {name!r}",
                      "use synthetic, ml-100k, ml-1m, ml-20m, ml-25m, movielens:DIR or csv:FILE")


def interaction_dataset_status(name: str, root: Path) -> str:
    if name == "synthetic":
        return "embedded"
    if name in MOVIELENS:
        return "present" if (Path(root) / name / MOVIELENS[name].filename).is_file() else "download"
    return "local"


# -- MovieLens

# file name -> (separator, has a header line, encoding); the columns are user, item, rating, timestamp
RATING_FILES = {"u.data": ("\t", False), "ratings.dat": ("::", False), "ratings.csv": (",", True)}
TITLE_FILES = ("u.item", "movies.dat", "movies.csv")


def read_movielens_zip(path: Path, name: str) -> RawInteractions:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(m).name: m for m in archive.namelist() if Path(m).parent.name == name}
            rating_name = next((f for f in RATING_FILES if f in members), None)
            if rating_name is None:
                raise GenlabError(f"{path.name} holds none of {', '.join(RATING_FILES)} in {name}/",
                                  f"delete {path} so it is downloaded again")
            with archive.open(members[rating_name]) as f:
                users, items, ratings = parse_ratings(f, rating_name, path.name)
            title_name = next((f for f in TITLE_FILES if f in members), None)
            titles = {}
            if title_name is not None:
                with archive.open(members[title_name]) as f:
                    titles = parse_titles(f.read(), title_name)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise GenlabError(f"cannot read {path}: {e}", f"delete {path} so it is downloaded again") from None
    return RawInteractions(users, items, ratings, titles, MOVIELENS_THRESHOLD)


def read_movielens_dir(folder: Path) -> RawInteractions:
    if not folder.is_dir():
        raise GenlabError(f"movielens:{folder} is not a folder", "point movielens: at an unzipped MovieLens folder")
    rating_name = next((f for f in RATING_FILES if (folder / f).is_file()), None)
    if rating_name is None:
        raise GenlabError(f"{folder.name} holds none of {', '.join(RATING_FILES)}",
                          "point movielens: at the folder of an unzipped MovieLens zip (e.g. .../ml-1m)")
    with open(folder / rating_name, "rb") as f:
        users, items, ratings = parse_ratings(f, rating_name, rating_name)
    title_name = next((f for f in TITLE_FILES if (folder / f).is_file()), None)
    titles = parse_titles((folder / title_name).read_bytes(), title_name) if title_name else {}
    return RawInteractions(users, items, ratings, titles, MOVIELENS_THRESHOLD)


def parse_ratings(stream, file_name: str, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """user, item (int64) and rating (float64) columns of a MovieLens ratings file, read by numpy's C parser."""
    separator, header = RATING_FILES[file_name]
    text = io.TextIOWrapper(stream, encoding="latin-1", newline="")
    lines = (line.replace("::", "\t") for line in text) if separator == "::" else text
    try:
        table = np.loadtxt(lines, delimiter="\t" if separator == "::" else separator, skiprows=1 if header else 0,
                           usecols=(0, 1, 2), dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise GenlabError(f"{source}: {file_name} is not a MovieLens ratings file ({e})") from None
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]


def parse_titles(content: bytes, file_name: str) -> dict[int, str]:
    text = content.decode("utf-8" if file_name == "movies.csv" else "latin-1")
    titles = {}
    if file_name == "movies.csv":  # movieId,title,genres with quoted titles
        rows = csv.reader(io.StringIO(text))
        next(rows, None)
        pairs = ((row[0], row[1]) for row in rows if len(row) >= 2)
    else:
        sep = "|" if file_name == "u.item" else "::"
        pairs = (line.split(sep)[:2] for line in text.splitlines() if sep in line)
    for item, title in pairs:
        try:
            titles[int(item)] = title.strip()
        except ValueError:
            continue
    return titles


# -- csv:FILE


def read_csv(path: Path, spec: InteractionsSpec) -> RawInteractions:
    """A CSV with a header; user and item ids must be integers; a rating column is optional."""
    if not path.is_file():
        raise GenlabError(f"csv:{path.name}: no such file", "give the path of a CSV file after csv:")
    wanted = {"user": spec.user_column, "item": spec.item_column, "rating": spec.rating_column,
              "timestamp": spec.timestamp_column, "title": spec.title_column}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f, delimiter=spec.delimiter)
            header = next(rows, None)
            if header is None:
                raise GenlabError(f"csv:{path.name} is empty", "the first line names the columns, e.g. user,item,rating")
            header = [h.strip() for h in header]
            missing = [f"{role} column {col!r}" for role, col in wanted.items() if col is not None and col not in header]
            if missing:
                raise GenlabError(f"csv:{path.name} has no {' and no '.join(missing)} (its columns: {', '.join(header)})",
                                  "name the columns with data.user_column=..., data.item_column=..., "
                                  "data.rating_column=... (optional)")
            index = {role: header.index(col) for role, col in wanted.items() if col is not None}
            return _csv_rows(rows, index, path.name, len(header))
    except UnicodeDecodeError as e:
        raise GenlabError(f"csv:{path.name} is not UTF-8 text (byte {e.start})", "save the file as UTF-8") from None
    except csv.Error as e:
        raise GenlabError(f"csv:{path.name} is not a readable CSV: {e}") from None


def _csv_rows(rows, index: dict, name: str, width: int) -> RawInteractions:
    users, items, ratings, titles = [], [], [], {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise GenlabError(f"csv:{name} line {line} has {len(row)} field(s), the header {width}")
        for role, values in (("user", users), ("item", items)):
            cell = row[index[role]].strip()
            try:
                values.append(int(cell))
            except ValueError:
                raise GenlabError(f"csv:{name} line {line}: {role} id {cell!r} is not an integer",
                                  "user and item ids must be whole numbers; map other ids to numbers first") from None
        if "rating" in index:
            cell = row[index["rating"]].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise GenlabError(f"csv:{name} line {line}: rating {cell!r} is not a number")
            ratings.append(value)
        if "timestamp" in index:
            cell = row[index["timestamp"]].strip()
            try:
                float(cell)
            except ValueError:
                raise GenlabError(f"csv:{name} line {line}: timestamp {cell!r} is not a number") from None
        if "title" in index:
            titles.setdefault(items[-1], row[index["title"]].strip())
    if not users:
        raise GenlabError(f"csv:{name} has a header but no rows")
    return RawInteractions(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64),
                           np.asarray(ratings, dtype=np.float64) if "rating" in index else None, titles, None)


# -- synthetic


@dataclass
class PlantedTruth:
    """The generating model of the synthetic set: each user's group and each group's click distribution."""

    user_group: np.ndarray  # int64 [U]
    group_probabilities: np.ndarray  # float64 [G, I]: p(item | group), affinity and popularity mixed in

    def user_probabilities(self, users: np.ndarray) -> np.ndarray:
        return self.group_probabilities[self.user_group[users]]


def synthetic_interactions(spec: InteractionsSpec) -> tuple[RawInteractions, PlantedTruth]:
    """Users in `groups` groups each click mostly (affinity) among their own group's items, the
    rest by global popularity (Zipf, exponent popularity_skew); clicks are drawn without
    replacement, so the best possible ranking of a user's unseen items is by p(item | group)."""
    rng = np.random.default_rng(spec.synthetic_seed)
    n_users, n_items, n_groups = spec.users, spec.items, spec.groups
    popularity = 1.0 / np.arange(1, n_items + 1) ** spec.popularity_skew
    popularity = rng.permutation(popularity)
    popularity /= popularity.sum()
    item_group = rng.permutation(np.arange(n_items) % n_groups)
    within = np.zeros((n_groups, n_items))
    within[item_group, np.arange(n_items)] = popularity
    within /= within.sum(1, keepdims=True)
    probabilities = spec.affinity * within + (1.0 - spec.affinity) * popularity  # [G, I]
    user_group = rng.integers(0, n_groups, n_users)
    extra = max(0.0, spec.clicks_per_user - spec.min_clicks)
    counts = np.minimum(spec.min_clicks + rng.poisson(extra, n_users), n_items // 2)
    users, items = [], []
    for start in range(0, n_users, 1024):  # Gumbel top-k: sampling without replacement, a chunk of users at a time
        stop = min(n_users, start + 1024)
        keys = np.log(probabilities[user_group[start:stop]] + 1e-300) + rng.gumbel(size=(stop - start, n_items))
        order = np.argsort(-keys, axis=1)
        for r in range(stop - start):
            chosen = order[r, : counts[start + r]]
            users.append(np.full(len(chosen), start + r))
            items.append(chosen)
    titles = {i: f"item {i} (group {item_group[i]})" for i in range(n_items)}
    raw = RawInteractions(np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64), None, titles, None)
    return raw, PlantedTruth(user_group, probabilities)


def describe_protocol(data: InteractionData) -> str:
    p = data.protocol
    return (f"{p['users']['train']:,} training users, {p['users']['val']:,} validation and {p['users']['test']:,} test users, "
            f"{p['items']:,} items, {p['clicks']:,} clicks (seed {p['seed']})")


if __name__ == "__main__":  # python -m genlab.data.interactions NAME: the protocol's counts
    print(describe_protocol(load_interactions(sys.argv[1] if len(sys.argv) > 1 else "synthetic")))
