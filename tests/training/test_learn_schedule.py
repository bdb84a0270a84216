"""A1111's learning-rate schedule syntax: rates until steps, resumed runs, errors naming the field."""

from __future__ import annotations

import pytest

from sdstudio.errors import InvalidRequest
from sdstudio.training.learn_schedule import LearnRateSchedule


def test_rates_hold_until_their_step_and_a_bare_rate_until_the_end():
    schedule = LearnRateSchedule.parse("0.005:100, 1e-5:1000, 1e-6", max_steps=3000)
    assert [schedule.rate_at(s) for s in (0, 99, 100, 999, 1000, 2999)] == [0.005, 0.005, 1e-5, 1e-5, 1e-6, 1e-6]
    assert schedule.rate_at(3000) is None and schedule.end_step == 3000


def test_a_single_number_is_a_constant_rate():
    schedule = LearnRateSchedule.parse("0.005", max_steps=10)
    assert schedule.spans == ((0.005, 10),)
    assert LearnRateSchedule.parse(0.01, max_steps=5).spans == ((0.01, 5),)


def test_the_schedule_ends_the_run_early_or_at_max_steps():
    assert LearnRateSchedule.parse("0.01:50", max_steps=1000).end_step == 50
    assert LearnRateSchedule.parse("0.01:50, 0.001:5000, 1e-4", max_steps=200).spans == ((0.01, 50), (0.001, 200))
    assert LearnRateSchedule.parse("0.01:50, 0.001:-1", max_steps=80).spans == ((0.01, 50), (0.001, 80))


def test_a_resumed_run_skips_the_spans_already_done():
    schedule = LearnRateSchedule.parse("0.01:50, 0.001:100, 1e-4", max_steps=300, start_step=60)
    assert schedule.spans == ((0.001, 100), (1e-4, 300))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "give a learning rate"),
        ("fast", "'fast' is not a rate"),
        ("0.01:ten", "must be a whole number"),
        ("-0.01", "must be a positive number"),
        ("0.01:100, 0.001:50", "steps must increase"),
        ("0.01:0", "at least 1"),
    ],
)
def test_bad_schedules_name_the_field_and_the_entry(text, words):
    with pytest.raises(InvalidRequest) as caught:
        LearnRateSchedule.parse(text, max_steps=1000, field="learn_rate")
    assert caught.value.field == "learn_rate" and words in str(caught.value)
