"""Detection metrics on hand-made masks."""
import math

import torch

from fedml_heterofl.models import build_model
from fedml_heterofl.record.metrics import accuracy_and_loss, detection_metrics, evaluate_model


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


def test_evaluate_model_with_and_without_the_watermark_output():
    # LR with 2 task classes + the watermark output; weights set so that the logits are the inputs:
    # x = (2, 1, 0) -> class 0; (0, 1, 3) -> watermark; (1, 0, 2) -> watermark; (0, 3, 1) -> class 1.
    # Labels 0, 1, 0, 1: all outputs: 2 of 4 right (rows 1, 4); task classes only (first two logits):
    # row 2 -> class 1 (right), row 3 -> class 0 (right): 4 of 4.
    model = build_model("lr", num_classes=2, watermark=True, input_dim=3)
    assert model.task_classes == 2
    with torch.no_grad():
        model.linear.weight.copy_(torch.eye(3))
        model.linear.bias.zero_()
    x = torch.tensor([[2.0, 1, 0], [0, 1, 3], [1, 0, 2], [0, 3, 1]])
    y = torch.tensor([0, 1, 0, 1])
    out = evaluate_model(model, x, y, batch=3)  # two batches
    assert out["test_acc"] == 0.5 and out["test_acc_task"] == 1.0
    assert out["test_watermark_share"] == 0.5  # the 2nd and 3rd inputs go to the watermark output (index 2)
    assert (out["test_correct"], out["test_total"]) == (2, 4)
    plain = build_model("lr", num_classes=3, input_dim=3)  # no watermark: both accuracies agree
    with torch.no_grad():
        plain.linear.weight.copy_(torch.eye(3))
        plain.linear.bias.zero_()
    out = evaluate_model(plain, x, torch.tensor([0, 2, 2, 1]))
    assert out["test_acc"] == out["test_acc_task"] == 1.0 and out["test_watermark_share"] == 0.0
