"""Multi-view timbre loss of the encoder (contrastive + consistency + variance/covariance)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------- loss


def multiview_timbre_loss(
    emb: torch.Tensor,
    proj: torch.Tensor,
    source_ids: torch.Tensor | None = None,
    temperature: float = 0.1,
    w_contrastive: float = 1.0,
    w_consistency: float = 0.5,
    w_variance: float = 1.0,
    w_covariance: float = 0.04,
    variance_target: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Supervised multi-view contrastive loss + consistency, variance and covariance terms.

    Args:
        emb: ``(B, V, D)`` L2-normalised embeddings (V views of each of B sources).
        proj: ``(B, V, P)`` projection-head outputs (normalised here).
        source_ids: ``(B,)`` source identity of each item (items with equal ids are positives of
            each other too); default ``arange(B)``.
        temperature: softmax temperature of the contrastive term.
        w_*: weights of the terms in ``total``.
        variance_target: hinge target of the per-dimension std of ``sqrt(D) * emb``.

    Returns:
        dict of scalar tensors ``total``, ``contrastive``, ``consistency``, ``variance``,
        ``covariance``.
    """
    if emb.dim() != 3 or proj.dim() != 3 or emb.shape[:2] != proj.shape[:2]:
        raise ValueError(f"expected emb (B,V,D) and proj (B,V,P), got {tuple(emb.shape)}, {tuple(proj.shape)}")
    b, v, d = emb.shape
    ids = torch.arange(b, device=emb.device) if source_ids is None else source_ids.to(emb.device)
    labels = ids.repeat_interleave(v)  # (N,)
    n = b * v

    # contrastive (SupCon / multi-positive NT-Xent)
    z = F.normalize(proj.reshape(n, -1), dim=-1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    pos_log_prob = log_prob.masked_fill(~pos, 0.0).sum(dim=1)
    contrastive = -(pos_log_prob[has_pos] / n_pos[has_pos]).mean() if has_pos.any() else emb.sum() * 0

    # within-source consistency: mean squared distance of unit views to their mean = 1 - |mean|^2
    consistency = (1.0 - emb.mean(dim=1).pow(2).sum(dim=-1)).mean()

    # variance / covariance (VICReg) over all N views of sqrt(D) * unit embeddings
    u = emb.reshape(n, d) * math.sqrt(d)
    if n >= 2:
        u = u - u.mean(dim=0, keepdim=True)
        var = u.pow(2).sum(dim=0) / (n - 1)
        variance = F.relu(variance_target - torch.sqrt(var + 1e-4)).mean()
        cov = u.T @ u / (n - 1)
        off = cov - torch.diag(torch.diagonal(cov))
        covariance = off.pow(2).sum() / d
    else:
        variance = covariance = emb.sum() * 0
    total = (
        w_contrastive * contrastive
        + w_consistency * consistency
        + w_variance * variance
        + w_covariance * covariance
    )
    return {
        "total": total,
        "contrastive": contrastive,
        "consistency": consistency,
        "variance": variance,
        "covariance": covariance,
    }


