"""Recommendations for a history of items, from any recommender (multvae, multdae, ease,
popularity): `genlab apply recommend MODEL --items 50,172,133 -k 10` and POST /v1/recommendations.

A history names items by their id in the source data (MovieLens movieId, your CSV's item id) or
by a piece of their title ("matrix" finds "Matrix, The (1999)"); the model scores every item of
its catalogue (which travels with the model, so no data set is needed) and the k best are
returned, the history's own items left out unless include_seen is asked for.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from ..errors import GenlabError, InvalidInput
from ..fileio import atomic_write_text
from ..limits import MAX_HISTORY_ITEMS, MAX_ITEM_TEXT, MAX_RECOMMENDATIONS, ModelName, Strict, bounded_int
from ..registry import Application, HttpRoute, register_application
from ..tensors import eval_mode
from .common import write_output

EXAMPLES = """examples:
  genlab train multvae-synthetic --out runs/mv
  genlab apply recommend runs/mv --items 3,17,42 -k 10
  genlab apply recommend runs/ml20m --items "toy story,matrix" -k 20     # title pieces (MovieLens)
  genlab apply recommend runs/ml20m --item "Godfather, The" --items 260 -o recs.csv

Items are ids of the training data or pieces of their titles (a title with a comma: --item);
the history's own items are left out of the recommendations unless --include-seen."""


# ----------------------------------------------------------------------------- the function


def _catalogue(model) -> tuple[list[int], list[str]]:
    ids, titles = list(model.config.item_ids), list(model.config.item_titles)
    return ids, titles or [""] * len(ids)


def resolve_items(model, items: list) -> tuple[list[int], list[str]]:
    """Item ids or title pieces -> catalogue columns (first appearance order, each once) and
    notices. An unknown id or title is an error naming close matches; an ambiguous title piece
    is an error listing what it matches."""
    ids, titles = _catalogue(model)
    column_of = {item: c for c, item in enumerate(ids)}
    lowered = [t.lower() for t in titles]
    columns, notices = [], []
    for entry in items:
        text = str(entry).strip()
        if isinstance(entry, bool) or not text:
            raise InvalidInput(f"{entry!r} is not an item id or title", "name items by id (e.g. 50) or a piece of title")
        if len(text) > MAX_ITEM_TEXT:
            raise InvalidInput(f"an item is at most {MAX_ITEM_TEXT} characters, got {len(text)}")
        if isinstance(entry, int) or text.lstrip("-").isdigit():
            item = int(text)
            if item not in column_of:
                close = difflib.get_close_matches(text, [str(i) for i in ids], n=3)
                raise InvalidInput(f"unknown item id {item}: the model's catalogue has no such item",
                                   (f"close ids: {', '.join(close)}; " if close else "")
                                   + f"the catalogue has {len(ids):,} items (ids {min(ids)}..{max(ids)})")
            column = column_of[item]
        else:
            column = _match_title(text, titles, lowered, ids)
        if column in columns:
            notices.append(f"{text!r} names item {ids[column]} again: counted once")
            continue
        columns.append(column)
    return columns, notices


def _match_title(text: str, titles: list[str], lowered: list[str], ids: list[int]) -> int:
    needle = text.lower()
    exact = [c for c, t in enumerate(lowered) if t == needle]
    if len(exact) == 1:
        return exact[0]
    found = exact or [c for c, t in enumerate(lowered) if needle in t]
    if len(found) == 1:
        return found[0]
    if not any(titles):
        raise InvalidInput(f"{text!r} is not an item id, and this model's items have no titles", "name items by id")
    if not found:
        close = difflib.get_close_matches(needle, lowered, n=3, cutoff=0.5)
        hint = ("did you mean: " + "; ".join(f"{titles[lowered.index(c)]} (id {ids[lowered.index(c)]})" for c in close)
                if close else "name items by id, or by a piece of their title")
        raise InvalidInput(f"no item's title contains {text!r}", hint)
    shown = "; ".join(f"{titles[c]} (id {ids[c]})" for c in found[:5])
    raise InvalidInput(f"{text!r} matches {len(found)} titles: {shown}{' ...' if len(found) > 5 else ''}",
                       "give more of the title, or the item's id")


@torch.no_grad()
def recommend(model, items: list, k: int = 10, include_seen: bool = False) -> dict:
    """The k items the model scores highest for a history (ids or title pieces).

    Returns {"history": [{item, title}], "recommendations": [{rank, item, title, score}], "k",
    "include_seen", "notices"}; scores are the model's own (Mult-VAE/DAE: logits, EASE: x B,
    popularity: training clicks), comparable within one answer."""
    model.require("recommend", "recommendations")
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidInput("the history is empty", "name at least one item the user liked, e.g. --items 50,172")
    if len(items) > MAX_HISTORY_ITEMS:
        raise InvalidInput(f"a history is at most {MAX_HISTORY_ITEMS:,} items, got {len(items):,}")
    ids, titles = _catalogue(model)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}", "e.g. -k 10")
    columns, notices = resolve_items(model, list(items))
    available = len(ids) - (0 if include_seen else len(columns))
    if k > MAX_RECOMMENDATIONS:
        raise InvalidInput(f"k={k} is above the limit of {MAX_RECOMMENDATIONS:,}", f"use -k {MAX_RECOMMENDATIONS} or fewer")
    if k > available:
        raise InvalidInput(f"k={k} is more than the {available:,} items there are to recommend ({len(ids):,} in the "
                           f"catalogue{'' if include_seen else f', {len(columns)} in the history'})",
                           f"use -k {available} or fewer" if available else "leave some items out of the history")
    history = torch.zeros(1, len(ids))
    history[0, columns] = 1.0
    with eval_mode(model):
        scores = model.scores(history)[0].float().cpu()
    if not include_seen:
        scores[columns] = -torch.inf
    top = torch.topk(scores, k)
    return {"history": [{"item": ids[c], "title": titles[c]} for c in columns],
            "recommendations": [{"rank": r + 1, "item": ids[c], "title": titles[c], "score": float(s)}
                                for r, (s, c) in enumerate(zip(top.values.tolist(), top.indices.tolist()))],
            "k": k, "include_seen": include_seen, "notices": notices}


# ----------------------------------------------------------------------------- command line


def _history(args) -> list[str]:
    items = [piece.strip() for text in (args.items or []) for piece in text.split(",") if piece.strip()]
    return items + [text.strip() for text in (args.item or []) if text.strip()]


def add_arguments(p) -> None:
    p.add_argument("--items", action="append", metavar="ID,ID,...",
                   help="the history: item ids or title pieces, comma-separated (repeatable)")
    p.add_argument("--item", action="append", metavar="TEXT", help="one item whose title has a comma (repeatable)")
    p.add_argument("-k", type=bounded_int("-k", 1, MAX_RECOMMENDATIONS), default=10,
                   help="how many recommendations (default 10)")
    p.add_argument("--include-seen", action="store_true", help="the history's items may be recommended too")
    p.add_argument("-o", "--output", help="write the recommendations as CSV (rank,item,title,score)")


def check_arguments(args) -> None:
    if not _history(args):
        raise GenlabError("the history is empty", "name the items the user liked: --items 50,172,133")
    if args.output and Path(args.output).suffix.lower() != ".csv":
        raise GenlabError(f"-o {args.output}: recommendations are written as CSV", "use -o recs.csv")


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def run(model, args) -> None:
    result = recommend(model, _history(args), args.k, args.include_seen)
    for notice in result["notices"]:
        print(f"notice: {notice}")
    print(f"history ({len(result['history'])} items): "
          + "; ".join(f"{h['item']}{' ' + h['title'] if h['title'] else ''}" for h in result["history"]))
    print(f"{'rank':>4}  {'item':>8}  {'score':>10}  title")
    for row in result["recommendations"]:
        print(f"{row['rank']:>4}  {row['item']:>8}  {row['score']:>10.4f}  {row['title']}")
    if args.output:
        lines = ["rank,item,title,score"] + [f"{r['rank']},{r['item']},{_csv_field(r['title'])},{r['score']:.6g}"
                                             for r in result["recommendations"]]
        print(f"wrote {write_output(args.output, lambda path: atomic_write_text(path, chr(10).join(lines) + chr(10)))}")


# ----------------------------------------------------------------------------- HTTP


class RecommendationRequest(Strict):
    model: str = ModelName
    items: (Annotated[list[int | str], Field(max_length=MAX_HISTORY_ITEMS)]
            | Annotated[str, Field(max_length=MAX_HISTORY_ITEMS * (MAX_ITEM_TEXT + 1))]) = Field(
        default_factory=list, description="the history: item ids (numbers) or pieces of titles, as a "
                                         "list or one comma-separated text")
    k: int = Field(10, ge=1, le=MAX_RECOMMENDATIONS, description="how many recommendations")
    include_seen: bool = Field(False, description="the history's items may be recommended too")


def serve(model, body: RecommendationRequest, files: dict) -> dict:
    """{model, history, recommendations: [{rank, item, title, score}], k, include_seen, notices}."""
    items = body.items if isinstance(body.items, list) else [p.strip() for p in body.items.split(",") if p.strip()]
    return {"model": body.model, **recommend(model, items, body.k, body.include_seen)}


RECOMMEND = register_application(Application(
    name="recommend",
    summary="recommend items for a history of items a user liked (ids or title pieces)",
    examples=EXAMPLES,
    add_arguments=add_arguments,
    run=run,
    kinds=("interactions",),
    capability="recommend",
    function=recommend,
    check_arguments=check_arguments,
    http=HttpRoute("/v1/recommendations", "the top-k items for a history of items", RecommendationRequest, serve, body="json"),
    studio=True,
))
