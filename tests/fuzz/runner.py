"""Sending fuzz cases one at a time, keeping the server usable between them, and reporting what failed."""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from sdstudio.config import SettingsStore

from .generator import FuzzCase
from .watcher import Access, Watch


@dataclass(frozen=True)
class Failure:
    """A case the server failed: a 5xx, no answer in time, or a broken state it left behind."""

    key: str
    outcome: str  # "500", "timeout", "then GET options 500", ...
    detail: str
    fields: str = ""
    """The case's route and fields without their values (`POST options outdir_samples`): one class of failure."""


@dataclass
class FuzzRun:
    """Sends cases in order over one client and collects failures.

    Sequential on purpose: /interrupt and /skip then never race a job the run cares about.
    The client should not keep connections alive: a server that drops one after a failure
    would otherwise fail the next case, which is then blamed.
    A case the server does not answer within `timeout` is a failure; the run interrupts the
    job and waits for the queue to drain, and stops (`stuck`) if the server does not recover.
    Options a case changed (POST /options, or override_settings kept afterwards) are put back
    so that one case's saved value cannot be blamed on the next.
    """

    client: httpx.Client
    store: SettingsStore
    watch: Watch
    timeout: float
    baseline_options: dict = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    outcomes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    seconds: dict[str, float] = field(default_factory=dict)
    """Each case's time to its answer (and recovery), by key: the slowest show what to refuse sooner."""
    route_seconds: Counter = field(default_factory=Counter)
    stuck: str = ""
    sent: int = 0

    def __post_init__(self) -> None:
        self.baseline_options = self.store.current.to_json_dict()

    def send(self, case: FuzzCase) -> None:
        self.watch.cause = case.key
        self.sent += 1
        headers = {"content-type": "application/json"} if case.content is not None else {}
        started = time.monotonic()
        try:
            answer = self.client.request(
                case.method.upper(),
                case.path,
                params=case.params,
                content=case.content,
                headers=headers,
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            self.outcomes[case.route]["timeout"] += 1
            self.failures.append(Failure(case.key, "timeout", f"no answer within {self.timeout:.0f} s", case.fields))
            self.recover(case)
            return
        except httpx.HTTPError as error:
            self.outcomes[case.route]["no answer"] += 1
            self.failures.append(Failure(case.key, "no answer", repr(error)[:200], case.fields))
            self.recover(case)
            return
        finally:
            self.seconds[case.key] = time.monotonic() - started
            self.route_seconds[case.route] += self.seconds[case.key]
        self.outcomes[case.route][str(answer.status_code)] += 1
        if answer.status_code >= 500:
            self.failures.append(Failure(case.key, str(answer.status_code), error_text(answer), case.fields))
        self.restore_options(case)

    def totals(self, seconds: float) -> str:
        """One line of figures: requests, seconds, answers >= 500 and the failures of any kind."""
        server_errors = sum(
            n for outcomes in self.outcomes.values() for k, n in outcomes.items() if k.isdigit() and int(k) >= 500
        )
        return (
            f"{self.sent} requests in {seconds:.0f} s: {server_errors} x 5xx, "
            f"{len(self.failures)} failures in all, {len(self.watch.accesses)} file-system events outside the roots"
        )

    def summary(self, slowest: int = 15) -> str:
        """Answers by route and status, and the slowest cases."""
        lines = ["answers by route (seconds in all):"]
        for route, outcomes in sorted(self.outcomes.items()):
            lines.append(f"  {route}: {dict(sorted(outcomes.items()))} {self.route_seconds[route]:.0f} s")
        lines.append("slowest:")
        for key, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])[:slowest]:
            lines.append(f"  {seconds:6.1f} s  {key[:150]}")
        return "\n".join(lines)

    def recover(self, case: FuzzCase) -> None:
        """Interrupt what the timed-out case left running; `stuck` if the server does not come back."""
        self.watch.cause = f"(recovering after) {case.key}"
        deadline = time.monotonic() + 60
        try:
            self.client.post("/sdapi/v1/interrupt", timeout=10)
            while time.monotonic() < deadline:
                state = self.client.get("/sdapi/v1/progress", timeout=10).json()["state"]
                if not state["job"] and not state["queue_size"]:
                    self.restore_options(case)
                    return
                time.sleep(0.2)
        except (httpx.HTTPError, ValueError, KeyError) as error:
            self.stuck = f"after {case.key}: {error!r}"[:300]
            return
        self.stuck = f"after {case.key}: a job still running 60 s after /interrupt"

    def restore_options(self, case: FuzzCase) -> None:
        """Put back the saved options the case changed; the GET that clients make must still answer."""
        saved = self.store.current.to_json_dict()
        changed = {
            name: self.baseline_options.get(name)
            for name in set(saved) | set(self.baseline_options)
            if json.dumps(saved.get(name)) != json.dumps(self.baseline_options.get(name))
        }
        if not changed:
            return
        self.watch.cause = f"(options saved by) {case.key}"
        try:
            shown = self.client.get("/sdapi/v1/options", timeout=self.timeout)
            if shown.status_code >= 500:
                failure = Failure(case.key, f"then GET options {shown.status_code}", error_text(shown), case.fields)
                self.failures.append(failure)
            restored = self.client.post("/sdapi/v1/options", json=changed, timeout=self.timeout)
        except httpx.HTTPError as error:
            self.failures.append(Failure(case.key, "then options not restorable", repr(error)[:200], case.fields))
            return
        if restored.status_code != 200:
            detail = f"{sorted(changed)}: {restored.status_code} {error_text(restored)}"
            self.failures.append(Failure(case.key, "then options not restorable", detail, case.fields))


def error_text(answer: httpx.Response) -> str:
    """The error an answer names, short."""
    try:
        body = answer.json()
        text = f"{body.get('error', '')}: {body.get('errors') or body.get('detail')}"
    except (ValueError, AttributeError):
        text = answer.text
    return " ".join(str(text).split())[:160]


def report(failures: list[Failure], accesses: list[Access], most: int = 150) -> str:
    """Failures grouped by route, field and value, then accesses outside the roots grouped by request."""
    lines: list[str] = []
    if failures:
        classes = Counter((failure.fields, failure.outcome) for failure in failures)
        lines.append(f"failures by route and field ({len(classes)} classes):")
        lines.extend(f"  {fields} -> {outcome} x{n}" for (fields, outcome), n in sorted(classes.items())[:most])
        grouped: dict[tuple[str, str], list[Failure]] = defaultdict(list)
        for failure in failures:
            grouped[(failure.key, failure.outcome)].append(failure)
        lines.append(f"{len(failures)} failed requests, {len(grouped)} distinct (route field=value, outcome):")
        for (key, outcome), group in sorted(grouped.items())[:most]:
            lines.append(f"  {key} -> {outcome} x{len(group)}: {group[0].detail}")
        if len(grouped) > most:
            lines.append(f"  ... and {len(grouped) - most} more")
    if accesses:
        by_cause: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for access in accesses:
            by_cause[access.cause].add((access.event, access.path))
        lines.append(f"{len(accesses)} file-system events outside the allowed roots, from {len(by_cause)} requests:")
        for cause, seen in sorted(by_cause.items())[:most]:
            shown = ", ".join(f"{event} {path}" for event, path in sorted(seen)[:4])
            lines.append(f"  {cause}: {shown}{' ...' if len(seen) > 4 else ''}")
    return "\n".join(lines)


def process_memory() -> int:
    """This process's address space in bytes (VmSize)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextmanager
def address_space_cap(extra_bytes: int) -> Iterator[None]:
    """Cap the process's address space at its size now plus `extra_bytes` while the block runs.

    A size the server fails to refuse then fails as an allocation error (a 5xx the run
    reports) instead of taking the shared machine's memory.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = process_memory() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Silence these loggers and their children while the block runs: a traceback per 5xx would bury the report."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def env_number(name: str, default: float) -> float:
    """A numeric setting from the environment (FUZZ_SEED, FUZZ_COUNT, ...)."""
    text = os.environ.get(name, "").strip()
    return float(text) if text else default
