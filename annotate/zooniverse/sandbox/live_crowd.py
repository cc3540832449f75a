"""The live crowd: simulated volunteers who keep classifying in a background thread."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from .crowd import Crowd, CrowdTurns
from .records import VolunteerRecord
from .store import Store
from .truth import Truth, TruthFn, truth_function
from .volunteers import CrowdConfig

LIVE_JITTER = 0.1  # a live crowd's gaps vary by up to 10 % either side of 60 / per_minute
LIVE_IDLE_POLL_S = 1.0  # how often an idle live crowd looks for newly linked subjects


class LiveCrowdStatus(TypedDict):
    """``Sandbox.live_crowd_status()`` and ``GET /_sandbox/live``."""

    running: bool
    per_minute: float  # 0 when stopped
    workflow_id: int | None  # None: every workflow with open subjects
    classifications: int  # made by live crowds since this sandbox started
    retired: int  # subjects those classifications retired
    last_at: str | None  # created_at of the latest live classification
    started_at: str | None
    idle: bool
    idle_reason: str | None  # why the last turn made nothing
    open_subjects: int  # linked, unretired subjects at the last turn
    volunteers: int
    error: str | None  # the last error a turn raised (the crowd keeps going)


@dataclass
class LiveRun:
    per_minute: float
    crowd: CrowdConfig
    truth: TruthFn
    workflow_id: int | None
    volunteers: list[VolunteerRecord]
    rng: random.Random  # the turns' draws, as in run_volunteers
    jitter: random.Random  # the spacing, kept apart so a rate change does not alter the answers
    started_at: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    turns: dict[int, CrowdTurns] = field(default_factory=dict)  # workflow id -> its turns
    cursor: int = 0  # round-robin position over workflows
    idle_reason: str | None = None
    open_subjects: int = 0
    error: str | None = None


class LiveCrowd:
    """A crowd that keeps classifying in a background thread; one at a time, restartable."""

    def __init__(self, store: Store, crowd: Crowd, sleep: Callable[[float], None] | None) -> None:
        self.store = store
        self.crowd = crowd
        self.sleep = sleep
        # One live crowd at a time, started and stopped under _control (not the store lock,
        # which its thread takes for every turn), with totals that outlive restarts.
        self._running: LiveRun | None = None
        self._control = threading.Lock()
        self._made = 0
        self._retired = 0
        self._last_at: str | None = None

    @property
    def current(self) -> LiveRun | None:
        """The crowd started last, unless it was stopped."""
        return self._running

    def start(
        self,
        *,
        per_minute: float,
        crowd: CrowdConfig | None = None,
        truth: Truth | None = None,
        workflow_id: int | None = None,
    ) -> None:
        """Start a crowd that keeps classifying in a background thread, or change it.

        About ``per_minute`` classifications a minute, evenly spaced with a little jitter from
        the crowd's seed, one at a time and each the way a ``run_volunteers`` turn makes it
        (same volunteers for the same config, same subject choice and retirement), on every
        active workflow with linked, unretired subjects in turn, or only on ``workflow_id``.
        With no open subject it idles and looks again every second. A running crowd is
        replaced; ``per_minute=0`` stops it. Gold-standard classifications are not made live.

        Raises:
            ValueError: a negative or non-finite rate, no volunteers, an unknown profile.
        """
        rate = float(per_minute)
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"per_minute must be a finite number >= 0, got {per_minute!r}")
        crowd = crowd or CrowdConfig()
        if rate > 0 and crowd.n_volunteers < 1:
            raise ValueError("a live crowd needs at least one volunteer")
        truth_fn = truth_function(truth)
        with self._control:
            self._stop()
            if rate == 0:
                return
            with self.store.lock:
                if workflow_id is not None:
                    self.store.workflow_record(workflow_id)
                rng = random.Random(crowd.seed)
                volunteers = self.crowd.recruit(crowd, rng)
                self.store.save()
                live = LiveRun(
                    per_minute=rate,
                    crowd=crowd,
                    truth=truth_fn,
                    workflow_id=workflow_id,
                    volunteers=volunteers,
                    rng=rng,
                    jitter=random.Random(f"live-crowd:{crowd.seed}"),
                    started_at=self.store.now(),
                )
                self._running = live
            live.thread = threading.Thread(
                target=self._loop, args=(live,), name="sandbox-live-crowd", daemon=True
            )
            live.thread.start()

    def stop(self) -> None:
        """Stop the live crowd, if any; no classification is made after this returns."""
        with self._control:
            self._stop()

    def status(self) -> LiveCrowdStatus:
        with self.store.lock:
            live = self._running
            running = (
                live is not None
                and not live.stop.is_set()
                and live.thread is not None
                and live.thread.is_alive()
            )
            return LiveCrowdStatus(
                running=running,
                per_minute=live.per_minute if live and running else 0.0,
                workflow_id=live.workflow_id if live else None,
                classifications=self._made,
                retired=self._retired,
                last_at=self._last_at,
                started_at=live.started_at if live else None,
                idle=running and live is not None and live.idle_reason is not None,
                idle_reason=live.idle_reason if live and running else None,
                open_subjects=live.open_subjects if live else 0,
                volunteers=len(live.volunteers) if live else 0,
                error=live.error if live else None,
            )

    def _stop(self) -> None:
        live = self._running
        if live is None:
            return
        live.stop.set()
        if live.thread is not None and live.thread is not threading.current_thread():
            # A turn checks the stop signal under the store lock before classifying, so even a
            # caller holding that lock (and timing out here) gets no classification afterwards.
            live.thread.join(5)
        with self.store.lock:
            if self._running is live:
                self._running = None

    def _loop(self, live: LiveRun) -> None:
        interval = 60.0 / live.per_minute
        while not live.stop.is_set():
            try:
                made = self._turn(live)
            except Exception as exc:
                # A demo's crowd must not die silently: report the error and keep going.
                with self.store.lock:
                    live.error = f"{type(exc).__name__}: {exc}"
                made = False
            if made:
                delay = interval * live.jitter.uniform(1 - LIVE_JITTER, 1 + LIVE_JITTER)
            else:
                delay = min(interval, LIVE_IDLE_POLL_S)
            if self.sleep is None:
                if live.stop.wait(delay):
                    break
            else:
                self.sleep(delay)

    def _turn(self, live: LiveRun) -> bool:
        """One classification on the next workflow with open subjects; False when idle."""
        with self.store.lock:
            if live.stop.is_set():
                return False
            if live.workflow_id is not None:
                workflow_ids = [live.workflow_id]
            else:
                workflow_ids = sorted(w.id for w in self.store.state.workflows.values() if w.active)
            candidates = [self._turns_for(live, wid) for wid in workflow_ids]
            live.open_subjects = sum(len(t.open_ids) for t in candidates)
            candidates = [t for t in candidates if t.open_ids]
            if not candidates:
                live.idle_reason = "no open subject: none linked, or all retired"
                return False
            # Round robin: start after the workflow that got the previous classification.
            candidates.sort(key=lambda t: (t.workflow.id <= live.cursor, t.workflow.id))
            for turns in candidates:
                while turns.active:
                    record, retired = self.crowd.turn(turns)
                    if record is None:
                        continue
                    live.cursor = turns.workflow.id
                    live.idle_reason = None
                    self._made += 1
                    self._retired += int(retired)
                    self._last_at = record.created_at
                    if retired:
                        live.open_subjects -= 1
                    self.store.save()
                    return True
            live.idle_reason = "every volunteer has classified every open subject"
            return False

    def _turns_for(self, live: LiveRun, workflow_id: int) -> CrowdTurns:
        """The live crowd's turns on a workflow, brought up to date with the store."""
        workflow = self.store.workflow_record(workflow_id)
        turns = live.turns.get(workflow_id)
        if turns is None:
            turns = self.crowd.turns(workflow, live.crowd, live.rng, live.truth, live.volunteers)
            live.turns[workflow_id] = turns
        else:
            self.crowd.catch_up(turns)
        # Between two turns anything may have changed: new sets linked, subjects retired or
        # unretired by the app, the vocabulary edited, the selection order switched.
        turns.workflow = workflow
        turns.answer_index = self.store.answer_index(workflow)
        turns.open_ids = [
            m.subject_id
            for m in self.store.linked_members(workflow_id)
            if not self.store.is_retired(m.subject_id, workflow_id)
        ]
        turns.active = list(turns.volunteers)
        return turns
