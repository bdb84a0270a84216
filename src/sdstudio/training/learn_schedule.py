"""A1111's learning-rate schedule: `0.005:100, 1e-5:1000, 1e-6` means 0.005 until step 100, then 1e-5 until 1000.

Each comma-separated entry is `RATE:STEP` (the rate holds while the step is below STEP) or a bare
`RATE` (until the run's last step); STEP -1 also means the last step. Entries that end at or
before the step a resumed run starts from are dropped, and the schedule ends at the run's
maximum steps, as in A1111's LearnRateScheduler: a run whose schedule ends earlier stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdstudio.errors import InvalidRequest

EXAMPLE = "0.005:100, 1e-5:1000, 1e-6"


@dataclass(frozen=True)
class LearnRateSchedule:
    """Rates and the step each one holds until (exclusive), in order."""

    spans: tuple[tuple[float, int], ...]

    @classmethod
    def parse(
        cls, text: str | float, max_steps: int, start_step: int = 0, field: str = "learn_rate"
    ) -> LearnRateSchedule:
        """Read the schedule text; errors name `field` and the entry at fault."""
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest(field, f"give a learning rate or a schedule such as {EXAMPLE!r}")
        spans: list[tuple[float, int]] = []
        previous_end = 0
        for raw in text.split(","):
            entry = raw.strip()
            rate_text, colon, step_text = entry.partition(":")
            rate = _rate(rate_text.strip(), entry, field)
            end = max_steps
            if colon:
                end = _step(step_text.strip(), entry, field)
                if end == -1:
                    end = max_steps
                elif end <= previous_end:
                    raise InvalidRequest(
                        field, f"step {end} in {entry!r} does not come after {previous_end}; steps must increase"
                    )
            previous_end = end
            if end > start_step:
                spans.append((rate, min(end, max_steps)))
            if end >= max_steps or not colon:
                break
        return cls(tuple(spans))

    @property
    def end_step(self) -> int:
        """The step the schedule (and so the run) ends at."""
        return self.spans[-1][1] if self.spans else 0

    def rate_at(self, step: int) -> float | None:
        """The rate for the optimizer step `step` (0-based), or None when the schedule has ended."""
        for rate, end in self.spans:
            if step < end:
                return rate
        return None


def _rate(text: str, entry: str, field: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise InvalidRequest(
            field, f"{entry!r} is not a rate or RATE:STEP; write the schedule like {EXAMPLE!r}"
        ) from None
    if not rate > 0 or rate == float("inf"):
        raise InvalidRequest(field, f"rate {text} in {entry!r} must be a positive number")
    return rate


def _step(text: str, entry: str, field: str) -> int:
    try:
        step = int(text)
    except ValueError:
        raise InvalidRequest(
            field, f"step {text!r} in {entry!r} must be a whole number (or -1 for the last step)"
        ) from None
    if step < 1 and step != -1:
        raise InvalidRequest(field, f"step {step} in {entry!r} must be at least 1 (or -1 for the last step)")
    return step
