"""The training losses on logits with soft targets and per-sample weights, and the balanced
weight of positives; each takes ``(logits, targets, weights)``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class WeightedBCE(nn.Module):
    """BCE with logits on soft targets, averaged over concepts, weighted per sample."""

    pos_weight: torch.Tensor | None  # a buffer

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        per_item = F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=self.pos_weight, reduction="none"
        ).mean(dim=1)  # (B, C) -> (B,)
        return (weights * per_item).sum() / len(per_item)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al., ICCV 2021) on logits, with soft targets.

    Negatives are down-weighted by ``p_m ** gamma_neg`` where ``p_m = max(p - clip, 0)``, so easy
    negatives (the many concepts absent from an image) stop dominating; positives by
    ``(1 - p) ** gamma_pos``. A soft target mixes the two terms.
    """

    pos_weight: torch.Tensor | None  # a buffer

    def __init__(
        self,
        *,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip
        self.register_buffer("pos_weight", pos_weight)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        p = torch.sigmoid(logits)
        log_p = F.logsigmoid(logits)
        if self.clip > 0:
            p_neg = (p - self.clip).clamp(min=0)
            log_1m_p = torch.log((1 - p_neg).clamp(min=1e-8))  # 1 - p_neg >= clip: no log(0)
        else:
            p_neg, log_1m_p = p, F.logsigmoid(-logits)
        pos = (1 - p).pow(self.gamma_pos) * log_p
        if self.pos_weight is not None:
            pos = pos * self.pos_weight
        neg = p_neg.pow(self.gamma_neg) * log_1m_p
        per_item = -(targets * pos + (1 - targets) * neg).mean(dim=1)  # (B, C) -> (B,)
        return (weights * per_item).sum() / len(per_item)


def balanced_pos_weight(
    targets: torch.Tensor, weights: torch.Tensor, *, cap: float
) -> torch.Tensor:
    """Per-concept weight of the positive term: evidence-weighted negatives / positives.

    Clipped to [1, cap]: balancing never down-weights positives, and a concept with a handful
    of positives does not get a weight in the hundreds.
    """
    w = weights[:, None]
    pos = (w * targets).sum(0)
    neg = (w * (1 - targets)).sum(0)
    ratio = torch.where(pos > 0, neg / pos.clamp(min=1e-12), torch.ones_like(pos))
    return ratio.clamp(1.0, cap)
