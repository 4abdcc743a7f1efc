"""Learning-rate schedules against hand-computed values, and their LambdaLR wrapping."""

from __future__ import annotations

import math

import pytest
import torch

from yolov3.train.schedule import ScheduleConfig, build_scheduler, lr_factor, schedule_curve


def test_darknet_burn_in_and_steps() -> None:
    config = ScheduleConfig(policy="steps", warmup="burn_in", warmup_steps=100, step_fractions=(0.5, 0.75))
    assert lr_factor(0, 1000, config) == 0.0
    assert lr_factor(50, 1000, config) == pytest.approx(0.5**4)  # Darknet: (i / burn_in) ** 4
    assert lr_factor(100, 1000, config) == 1.0
    assert lr_factor(499, 1000, config) == 1.0
    assert lr_factor(500, 1000, config) == pytest.approx(0.1)
    assert lr_factor(750, 1000, config) == pytest.approx(0.01)


def test_linear_and_exponential_warmup() -> None:
    linear = ScheduleConfig(policy="constant", warmup="linear", warmup_steps=10)
    assert [lr_factor(step, 100, linear) for step in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    exponential = ScheduleConfig(policy="constant", warmup="exponential", warmup_steps=10)
    assert lr_factor(0, 100, exponential) == pytest.approx(math.exp(-5))
    assert lr_factor(5, 100, exponential) == pytest.approx(math.exp(-2.5))


def test_cosine_after_warmup_reaches_the_floor() -> None:
    config = ScheduleConfig(policy="cosine", warmup="linear", warmup_steps=10, min_factor=0.05)
    assert lr_factor(10, 110, config) == pytest.approx(1.0)
    assert lr_factor(60, 110, config) == pytest.approx(0.05 + 0.95 * 0.5)  # half-way: cos(pi/2) = 0
    assert lr_factor(110, 110, config) == pytest.approx(0.05)


def test_cosine_warm_restarts_with_warmup() -> None:
    config = ScheduleConfig(
        policy="cosine_restarts",
        warmup="none",
        warmup_steps=0,
        restart_cycles=3,
        restart_warmup_steps=4,
        min_factor=0.0,
    )
    curve = schedule_curve(300, config)
    assert curve[0] == pytest.approx(1.0)
    assert curve[99] < 0.01 and curve[199] < 0.01  # each 100-step cycle decays to the floor
    assert curve[100] == 0.0 and curve[102] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.02)))
    assert curve[104] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.04)))  # warm-up done: back near 1


def test_lambda_lr_follows_the_factor() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    config = ScheduleConfig(policy="poly", warmup="linear", warmup_steps=5, poly_power=2.0)
    scheduler = build_scheduler(optimizer, 50, config)
    rates = []
    for _ in range(50):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.1 * lr_factor(step, 50, config) for step in range(50)])


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        ScheduleConfig(step_fractions=(0.5,), scales=(0.1, 0.1))
    with pytest.raises(ValueError, match="must lie in"):
        ScheduleConfig(step_fractions=(1.5,), scales=(0.1,))
