"""Frame-level likelihood of piano rolls (the polyphonic-music benchmark metric).

A piano roll is a sequence of frames, each a binary vector over the keys (1 = the key
sounds). A frame model gives log p(v_t | v_<t) for every frame; the benchmark figure
(Boulanger-Lewandowski et al. 2012; Bai et al. 2018, locuslab/TCN poly_music) is the
frame-level NLL: the negative log-likelihood of each frame's whole 88-key vector, in nats,
averaged over all frames of the split (every frame counts once, so long pieces weigh more
than short ones; not a mean of per-piece means).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..tensors import eval_mode


def independent_frame_log_prob(logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """log p(v) of binary frames under independent Bernoulli keys with these logits, summed over
    the last (key) dimension: sum_k v_k log s(l_k) + (1 - v_k) log(1 - s(l_k))."""
    return -F.binary_cross_entropy_with_logits(logits.float(), frames.float(), reduction="none").sum(-1)


@torch.no_grad()
def pianoroll_likelihood(model, data, split: str, batch_size: int = 16) -> dict:
    """Frame-level NLL of a piano-roll model on every frame of a split (and without each
    piece's first frame, as locuslab/TCN scores), with the counts behind it."""
    total, first, frames = 0.0, 0.0, 0
    n = data.num_examples(split)
    with eval_mode(model):
        for start in range(0, n, batch_size):
            batch = data.batch(split, torch.arange(start, min(start + batch_size, n)))
            log_p = model.frame_log_probs(batch["x"].to(model.device), batch["mask"].to(model.device)).double()
            total -= log_p.sum().item()
            first -= log_p[:, 0].sum().item()
            frames += int(batch["mask"].sum())
    pieces = data.num_examples(split)
    return {"nll_per_frame": total / frames, "nll_per_frame_after_first": (total - first) / (frames - pieces),
            "frames": frames, "pieces": pieces}
