"""Per-round detection metrics (paper §VII-A and Fig. 4, Table III).

Positive = a malicious update; a rule "detects" an update by removing it. The paper's *removal
success rate* is the share of the f attackers that were removed; it equals the true-positive rate.
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import Tensor


#: relative tolerance of ``deviation_agrees`` (:func:`aggregates_agree`)
AGGREGATE_RTOL = 1e-4


def aggregates_agree(real: Tensor, predicted: Tensor, rtol: float = AGGREGATE_RTOL) -> bool:
    """Whether the server's aggregate equals an oracle's prediction: ``‖real − predicted‖ ≤ rtol·‖real‖``
    (float64; both zero agree). The two are the same weighted sum of the same float32 rows, summed in
    another order and precision (the oracle's rows are ``cat(benign, poisoned)``, the server's in client
    order), which moves the result by ~1e-7 relative; a different kept set or weight moves it by about a
    row's share, ≥ 1e-2 for n ≤ 100 — ``rtol = 1e-4`` tells them apart."""
    real, predicted = real.detach().double().cpu(), predicted.detach().double().cpu()
    if real.shape != predicted.shape:
        return False
    return float(torch.linalg.vector_norm(real - predicted)) <= rtol * float(torch.linalg.vector_norm(real))


def kept_sets_agree(predicted: Tensor, kept: Tensor, updates: Tensor) -> bool:
    """Whether an oracle's predicted kept mask is the server's, up to exchanging identical rows.

    Identical rows (IPM's or ALIE's copies, the ``ḡ`` rows of ``adaptive_deviation``) have equal
    scores under every rule; which of them a rule keeps is decided by their positions (a stable sort),
    and the oracle sees the rows in another order than the server (``cat(benign, own)``). Keeping one
    copy or another is the same decision — the aggregate is the same — so the masks agree when the
    rows predicted kept but removed are, as a multiset, the rows kept but predicted removed."""
    if torch.equal(predicted, kept):
        return True
    only_predicted = updates[(predicted & ~kept).to(updates.device)]
    only_kept = updates[(kept & ~predicted).to(updates.device)]
    if only_predicted.shape[0] != only_kept.shape[0]:
        return False
    a, count_a = torch.unique(only_predicted, dim=0, return_counts=True)
    b, count_b = torch.unique(only_kept, dim=0, return_counts=True)
    return a.shape == b.shape and torch.equal(a, b) and torch.equal(count_a, count_b)


def detection_metrics(kept: Tensor, malicious: Tensor, removed_by: Mapping[str, Tensor]) -> Dict[str, float]:
    """Removal counts and rates of one round.

    Args:
        kept: ``(n,)`` bool, rows the rule kept.
        malicious: ``(n,)`` bool, rows sent by attackers.
        removed_by: step or reason -> removed row indices (``AggregationResult.removed_by``).

    Returns:
        ``removed``, ``removed_malicious``, ``removed_benign``; ``removal_success_rate`` (removed
        attackers / f, NaN when f = 0), ``tpr`` (the same), ``fpr`` (removed benign / benign, NaN
        without benign rows); and ``removed_<step>`` / ``removed_malicious_<step>`` per step.
    """
    kept = kept.bool()
    malicious = malicious.bool()
    removed = ~kept
    f = int(malicious.sum())
    benign = int((~malicious).sum())
    out: Dict[str, float] = {
        "removed": int(removed.sum()),
        "removed_malicious": int((removed & malicious).sum()),
        "removed_benign": int((removed & ~malicious).sum()),
    }
    out["removal_success_rate"] = out["removed_malicious"] / f if f else float("nan")
    out["tpr"] = out["removal_success_rate"]
    out["fpr"] = out["removed_benign"] / benign if benign else float("nan")
    for step, index in removed_by.items():
        out[f"removed_{step}"] = int(index.numel())
        out[f"removed_malicious_{step}"] = int(malicious[index].sum()) if index.numel() else 0
    return out


#: what :func:`evaluate_model` adds to a round's metrics row (both backends)
EVAL_COLUMNS = ("test_acc", "test_acc_task", "test_loss", "test_watermark_share")


def evaluate_model(model: torch.nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> Dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)`` in eval mode, on the model's device,
    in batches of ``batch``.

    ``test_acc`` takes the argmax over all outputs, HeteroFL's watermark class included (a model that
    calls a real input "trigger" is wrong); ``test_acc_task`` over the task's L classes only (the
    model's ``task_classes``, see :func:`~fedml_heterofl.models.build_model`; all outputs when it has
    none), i.e. the model as it would serve the task. Without a watermark output both are equal.
    ``test_watermark_share`` is the share of the inputs predicted as HeteroFL's watermark class (the
    output after the task's; 0 without one).

    Returns ``test_acc``, ``test_acc_task``, ``test_loss``, ``test_watermark_share`` and FedML's
    ``test_correct``/``test_total``.
    """
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([model(x[s:s + batch].to(device)).cpu() for s in range(0, len(y), batch)])
    finally:
        model.train(was_training)
    out: Dict[str, float] = accuracy_and_loss(logits, y)
    task = getattr(model, "task_classes", logits.shape[1])
    out["test_acc_task"] = float((logits[:, :task].argmax(dim=1) == y).float().mean())
    watermark = logits.shape[1] > task
    out["test_watermark_share"] = float((logits.argmax(dim=1) == task).float().mean()) if watermark else 0.0
    out["test_total"] = int(len(y))
    out["test_correct"] = int((logits.argmax(dim=1) == y).sum())
    return out


def accuracy_and_loss(logits: Tensor, labels: Tensor) -> Dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of a model's logits on labelled data."""
    loss = torch.nn.functional.cross_entropy(logits, labels)
    acc = (logits.argmax(dim=1) == labels).float().mean()
    return {"test_acc": float(acc), "test_loss": float(loss)}
