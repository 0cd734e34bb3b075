"""Detection metrics on hand-made masks."""
import math

import torch

from fedml_heterofl.experiments.metrics import accuracy_and_loss, detection_metrics


def test_detection_metrics_hand_computed():
    # 6 rows, attackers 0 and 1 (f = 2), benign 2..5.
    # step A removed rows 0 and 3, step B removed row 1: all attackers and one benign removed.
    malicious = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    kept = torch.tensor([0, 0, 1, 0, 1, 1], dtype=torch.bool)
    m = detection_metrics(kept, malicious, {"A": torch.tensor([0, 3]), "B": torch.tensor([1])})
    assert m["removed"] == 3 and m["removed_malicious"] == 2 and m["removed_benign"] == 1
    assert m["removal_success_rate"] == 1.0 and m["tpr"] == 1.0
    assert m["fpr"] == 0.25  # 1 of 4 benign
    assert m["removed_A"] == 2 and m["removed_malicious_A"] == 1
    assert m["removed_B"] == 1 and m["removed_malicious_B"] == 1


def test_no_attackers_gives_nan_rate():
    m = detection_metrics(torch.ones(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool), {})
    assert math.isnan(m["removal_success_rate"]) and m["fpr"] == 0.0


def test_accuracy_and_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    out = accuracy_and_loss(logits, labels)
    assert abs(out["test_acc"] - 2 / 3) < 1e-6
    # CE: two rows log(1 + e^-2), one row log(1 + e^2)
    expected = (2 * math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 3
    assert abs(out["test_loss"] - expected) < 1e-6
