"""Norms, cosine similarities and squared distances read from a round's Gram matrix ``G = U Uᵀ``
(:func:`~fedml_heterofl.defense.rows.gram_matrix`): one pass over the d coordinates serves every
distance- or angle-based rule — HeteroFL's steps 1, 2 and 4 (Lu, Hu et al., IEEE TIFS 2024, §V),
Multi-Krum, Bulyan — and the attacks' distance bounds."""
from __future__ import annotations

from torch import Tensor


def norms_from_gram(G: Tensor) -> Tensor:
    """Euclidean norms ``‖g_i‖ = sqrt(G_ii)``."""
    return G.diagonal().clamp_min(0).sqrt()


def cosine_from_gram(G: Tensor) -> Tensor:
    """Cosine similarities ``G_ij / (‖g_i‖ ‖g_j‖)``, clamped to [-1, 1]."""
    norms = norms_from_gram(G)
    return (G / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)


def sq_distances_from_gram(G: Tensor) -> Tensor:
    """Squared Euclidean distances ``G_ii + G_jj - 2 G_ij`` (clamped at 0, zero diagonal)."""
    diag = G.diagonal()
    D = (diag[:, None] + diag[None, :] - 2.0 * G).clamp_min(0)
    D.fill_diagonal_(0)
    return D
