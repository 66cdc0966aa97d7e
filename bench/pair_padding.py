"""How much of a training batch of text pairs is padding, with random batches and with data.group_by_length.

One epoch's order (seeded), cut into batches as the Trainer cuts it; padding is the share of the
[B, longest source] and [B, longest target] cells that are <pad>. No training: a few seconds.

    GENLAB_DATA_DIR=../shared/data python bench/pair_padding.py                  # tatoeba-cmn zh-en, batch 64
    python bench/pair_padding.py --data sgd --batch-size 32
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))

import torch  # noqa: E402

from genlab.data import data_root  # noqa: E402
from genlab.data.pairs import PAD_ID, load_pair_data  # noqa: E402


def padding_share(data, order: torch.Tensor, batch_size: int) -> float:
    cells = real = 0
    for start in range(0, len(order) // batch_size * batch_size, batch_size):
        batch = data.batch("train", order[start : start + batch_size])
        cells += batch["src"].numel() + batch["tgt"].numel()
        real += int((batch["src"] != PAD_ID).sum() + (batch["tgt"] != PAD_ID).sum())
    return 1 - real / cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="tatoeba-cmn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_pair_data({"name": args.data}, root=data_root())
    order = torch.randperm(data.num_examples("train"), generator=torch.Generator().manual_seed(args.seed))
    grouped = data.order_batches(order, args.batch_size, torch.Generator().manual_seed(args.seed + 1))
    print(f"{args.data}, batch {args.batch_size}: padding {padding_share(data, order, args.batch_size):.1%} of the cells "
          f"with random batches, {padding_share(data, grouped, args.batch_size):.1%} grouped by length")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
