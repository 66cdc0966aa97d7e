"""Naming a split of a data set on the command line: `--against DATA[:SPLIT]`."""

from __future__ import annotations

SPLITS = ("train", "val", "test")


def parse_against(spec: str | None, own_data: str) -> tuple[str, str]:
    """`mnist:test` -> ("mnist", "test"); `test` -> (own data, "test"); None -> (own data, "test").

    Only the last `:` part is a split, so data names that hold a colon (`folder:/x/y`) keep it."""
    if spec is None:
        return own_data, "test"
    if spec in SPLITS:
        return own_data, spec
    head, _, tail = spec.rpartition(":")
    if head and tail in SPLITS:
        return head, tail
    return spec, "test"
