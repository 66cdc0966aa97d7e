"""Optimizers a family may build in configure_optimizers beyond torch's own (the Trainer wraps each one)."""

from __future__ import annotations

import torch


class MuonWithAdamW:
    """Muon for a network's hidden weight matrices, AdamW for every other parameter, as one optimizer.

    Muon (Jordan et al. 2024, torch.optim.Muon) replaces each matrix's momentum update by its nearest
    semi-orthogonal matrix (five Newton-Schulz iterations), so every direction of the update moves at
    the same rate; in the nanoGPT speedruns it reaches AdamW's loss in fewer steps. It is defined for
    2-D hidden weights only: embeddings, the read-out, gains and biases keep AdamW. Moonshot's scaling
    (adjust_lr_fn="match_rms_adamw": update RMS 0.2 x sqrt(max side)) lets both use the same lr and
    weight decay, so one schedule drives them.

    To the Trainer and the checkpoint this is one optimizer: `param_groups` are the two inner
    optimizers' own group dicts (the learning-rate schedule reaches both), and `state_dict` numbers
    the parameters through Muon's groups, then AdamW's.
    """

    def __init__(self, matrices: list[torch.Tensor], adamw_groups: list[dict], *, lr: float, weight_decay: float,
                 betas: tuple[float, float]):
        self.muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas)
        self.inner = (self.muon, self.adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.inner for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.inner:
            opt.step()

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt in self.inner:
            inner = opt.state_dict()
            state.update({pid + offset: value for pid, value in inner["state"].items()})
            groups += [{**group, "params": [pid + offset for pid in group["params"]]} for group in inner["param_groups"]]
            offset += sum(len(group["params"]) for group in inner["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        groups, offset = list(saved["param_groups"]), 0
        for opt in self.inner:
            mine, groups = groups[: len(opt.param_groups)], groups[len(opt.param_groups) :]
            count = sum(len(group["params"]) for group in mine)
            opt.load_state_dict({
                "state": {pid - offset: value for pid, value in saved["state"].items() if offset <= pid < offset + count},
                "param_groups": [{**group, "params": [pid - offset for pid in group["params"]]} for group in mine]})
            offset += count
