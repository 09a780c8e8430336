import math

import pytest
import torch

from ringctl.rl.advantages import group_advantages


def test_population_std_hand_example():
    # group [1, 0, 0, 0]: mean 0.25, population var = (0.75^2 + 3 * 0.25^2) / 4 = 0.1875, std = sqrt(3)/4
    # A = 0.75 / (sqrt(3)/4) = sqrt(3) for the correct answer, -0.25 / (sqrt(3)/4) = -1/sqrt(3) for the others
    out = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), std="population", eps=0.0)
    expected = torch.tensor([[math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)]])
    torch.testing.assert_close(out.advantages, expected)
    assert out.zero_variance_groups == 0


def test_sample_std_hand_example():
    # sample var = 0.75 / (4 - 1) = 0.25, std = 0.5: A = 0.75 / 0.5 = 1.5 and -0.25 / 0.5 = -0.5
    out = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), std="sample", eps=0.0)
    torch.testing.assert_close(out.advantages, torch.tensor([[1.5, -0.5, -0.5, -0.5]]))


def test_zero_variance_groups_are_zero_and_counted():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    out = group_advantages(rewards)
    assert out.zero_variance_groups == 2 and out.num_groups == 3
    assert torch.equal(out.advantages[:2], torch.zeros(2, 3))
    assert out.advantages[2].abs().sum() > 0
    # advantages of a non-degenerate group sum to zero
    assert abs(float(out.advantages[2].sum())) < 1e-5


def test_rejects_flat_rewards():
    with pytest.raises(ValueError):
        group_advantages(torch.tensor([1.0, 0.0]))
