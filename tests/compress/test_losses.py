import math

import pytest
import torch

from tinyship.compress.losses import LOSSES
from tinyship.runtime.errors import TinyshipError


def test_prediction_loss_equals_hand_computed_value():
    teacher = torch.tensor([[0.0, math.log(3.0)]])  # softmax: [0.25, 0.75]
    student = torch.tensor([[0.0, 0.0]])  # log_softmax: [log 0.5, log 0.5]
    assert LOSSES["prediction"](student, teacher).item() == pytest.approx(math.log(2.0))


def test_prediction_loss_with_temperature_and_batch_mean():
    teacher = torch.tensor([[0.0, 2 * math.log(3.0)], [0.0, 0.0]])  # /2 -> [0.25, 0.75] and [0.5, 0.5]
    student = torch.tensor([[0.0, 2 * math.log(3.0)], [0.0, 2 * math.log(3.0)]])  # /2 -> [0.25, 0.75] twice
    first = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    second = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    loss = LOSSES["prediction"](student, teacher, temperature=2.0)
    assert loss.item() == pytest.approx((first + second) / 2)


def test_prediction_loss_is_smallest_when_student_matches_teacher():
    teacher = torch.randn(4, 3)
    matched = LOSSES["prediction"](teacher.clone(), teacher)
    assert matched < LOSSES["prediction"](torch.randn(4, 3), teacher)


def test_prediction_mse_for_regression():
    assert LOSSES["prediction_mse"](torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])).item() == 5.0


def test_state_loss_over_real_tokens_equals_hand_computed_value():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # batch 1, 2 tokens, width 2
    teacher = torch.zeros(1, 2, 2)
    assert LOSSES["hidden"](student, teacher).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert LOSSES["embedding"](student, teacher, mask=torch.tensor([[1, 0]])).item() == pytest.approx((1 + 4) / 2)


def test_state_loss_projects_the_student_width():
    projection = torch.nn.Linear(1, 2, bias=False)
    projection.weight.data = torch.tensor([[1.0], [2.0]])
    student, teacher = torch.tensor([[[1.0]]]), torch.tensor([[[0.0, 1.0]]])  # projected: [1, 2]
    assert LOSSES["hidden"](student, teacher, projection=projection).item() == pytest.approx((1 + 1) / 2)
    with pytest.raises(TinyshipError, match="give a projection"):
        LOSSES["hidden"](student, teacher)


def test_attention_loss_averages_heads_over_real_positions_and_ignores_masked_scores():
    student = torch.tensor([[[[1.0, float("-inf")], [0.5, 0.5]], [[3.0, -1e4], [7.0, 7.0]]]])  # 2 heads, 2 tokens
    teacher = torch.zeros(1, 2, 2, 2)
    student.requires_grad_(True)
    loss = LOSSES["attention"](student, teacher, mask=torch.tensor([[1, 0]]))  # only query 0, key 0 is real
    assert loss.item() == pytest.approx((1.0**2 + 3.0**2) / 2)
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, :, 0, 0].tolist() == [1.0, 3.0]  # 2·x / 2
    unmasked = LOSSES["attention"](student.detach().clamp(min=-1), teacher)
    assert unmasked.item() == pytest.approx((1 + 1 + 0.25 + 0.25 + 9 + 1 + 49 + 49) / 8)


def test_attention_loss_refuses_different_head_counts():
    with pytest.raises(TinyshipError, match="4 attention heads and the teacher 12"):
        LOSSES["attention"](torch.zeros(1, 4, 3, 3), torch.zeros(1, 12, 3, 3))
