import math

import pytest
import torch

from tinyship.compress.losses import LOSSES


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
