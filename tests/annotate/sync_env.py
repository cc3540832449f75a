"""The sync tests' environment: the sandbox served on a free port with its workflow configured,
a panoptes-client on a fake clock, and the helpers that push, classify and compare what a pull
stored with what the sandbox holds. Fixtures here are imported by the test modules that use them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from annotate.models import Classification, Concept, Item, Round, SyncCursor, Volunteer, Workflow
from annotate.services.zooniverse.push import round_push
from annotate.zooniverse.client import RetryPolicy, ZooniverseClient, connect
from annotate.zooniverse.sandbox import CrowdConfig, Sandbox, SandboxServer, serve
from tests.factories import WorkflowFactory
from tests.fake_clock import FakeClock

LABELS = ["painting", "drawing", "map", "photograph"]
PAGE = 10  # small pages, so a few dozen classifications make several


@dataclass
class Env:
    sandbox: Sandbox
    server: SandboxServer
    clock: FakeClock
    workflow: Workflow

    def client(self, **policy: float) -> ZooniverseClient:
        defaults = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "budget_s": 600.0}
        return connect(
            endpoint=self.server.endpoint,
            client_id="",
            client_secret="",
            username="crowdloop-bot",
            password="a-test-password",
            policy=RetryPolicy(**{**defaults, **policy}),  # type: ignore[arg-type]
            sleep=self.clock.sleep,
            clock=self.clock,
            rng=random.Random(0),
        )

    def posts(self, path: str) -> int:
        return sum(1 for e in self.sandbox.request_log if e.method == "POST" and e.path == path)


@pytest.fixture
def env(db, concepts):
    # Retirement at 15: runs stop at their count.
    yield from served(Sandbox(LABELS, keys=LABELS))


def served(sandbox: Sandbox):
    """The sandbox served on a free port, with its workflow configured here; shut down after."""
    server, _ = serve("127.0.0.1", 0, sandbox=sandbox)
    workflow = WorkflowFactory(
        zooniverse_id=sandbox.workflow_id, project_id=sandbox.project_id, version=None
    )
    try:
        yield Env(sandbox=sandbox, server=server, clock=FakeClock(), workflow=workflow)
    finally:
        server.shutdown()
        server.server_close()


def sync_items(n: int) -> list[Item]:
    return [
        Item.objects.create(
            external_id=f"europeana/{i}",
            image_url=f"https://images.example.org/{i}.jpg",
            metadata={"truth": [LABELS[i % len(LABELS)], LABELS[(i + 1) % len(LABELS)]]},
        )
        for i in range(n)
    ]


def sync_round(env: Env, number: int = 1) -> Round:
    return Round.objects.create(number=number, name=f"round-{number}", workflow=env.workflow)


def items_truth(items: list[Item]):
    by_external = {item.external_id: item.metadata["truth"] for item in items}
    return lambda subject_id, metadata: by_external[metadata["external_id"]]


def pushed_and_classified(env: Env, *, n_items: int = 8, n_classifications: int = 45) -> None:
    items = sync_items(n_items)
    round_push(round=sync_round(env), items=items, client=env.client())
    env.sandbox.run_volunteers(
        env.sandbox.workflow_id,
        crowd=CrowdConfig(
            n_volunteers=12, anonymous_share=0.3, repeat_rate=0.1, gold_share=0.1, seed=3
        ),
        classifications=n_classifications,
        truth=items_truth(items),
    )


def stored_snapshot() -> list[tuple]:
    """What a pull stored, in a form two runs can be compared by."""
    return sorted(
        Classification.objects.values_list(
            "zooniverse_id",
            "subject__zooniverse_id",
            "item__external_id",
            "volunteer__key",
            "workflow_version",
            "concept_ids",
            "invalid_answers",
            "is_duplicate",
            "gold_standard",
            "session",
            "created_at",
        )
    )


def sandbox_classifications(env: Env) -> list[tuple[int, int, int | None, list[str]]]:
    """The sandbox's own classifications: id, subject, user, ticked labels."""
    return [
        (c.id, c.subject_ids[0], c.user_id, sorted(LABELS[i] for i in c.annotations[0]["value"]))
        for c in env.sandbox.classifications(env.sandbox.workflow_id)
    ]


def stored_classifications() -> list[tuple[int, int, int | None, list[str]]]:
    keys = dict(Concept.objects.values_list("id", "key"))
    return [
        (
            c.zooniverse_id,
            c.subject.zooniverse_id,
            c.volunteer.zooniverse_user_id,
            sorted(keys[i] for i in c.concept_ids),
        )
        for c in Classification.objects.select_related("subject", "volunteer").order_by(
            "zooniverse_id"
        )
    ]


def pull_forget(env: Env) -> None:
    Classification.objects.all().delete()
    Volunteer.objects.all().delete()
    SyncCursor.objects.filter(workflow=env.workflow).update(last_id=0)


def sync_invariants(env: Env) -> None:
    ids = list(Classification.objects.values_list("zooniverse_id", flat=True))
    assert len(ids) == len(set(ids))
    cursor = SyncCursor.objects.get(workflow=env.workflow).last_id
    assert cursor <= max(ids, default=0)
