"""Pushing rounds and pulling classifications: the real panoptes-client against the sandbox.

Covers reliability.md F8-F13 for the sync: every fault run must end with exactly the rows of an
undisturbed run, and the cursor never ahead of what is stored.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from annotate.models import (
    Classification,
    Concept,
    ImportReport,
    Item,
    Round,
    Subject,
    SyncCursor,
    WorkflowVersion,
)
from annotate.services.zooniverse import pull as zooniverse_pull
from annotate.services.zooniverse.operation import SyncConfigError
from annotate.services.zooniverse.pull import classifications_export_pull, classifications_pull
from annotate.services.zooniverse.push import round_push
from annotate.services.zooniverse.retirement import (
    subject_statuses_sync,
    subjects_retire,
    subjects_unretire,
)
from annotate.services.zooniverse.workflows import workflow_versions_sync
from annotate.zooniverse.client import (
    ExportIncomplete,
    ExportNotReady,
    ExportStale,
    TransientError,
)
from annotate.zooniverse.sandbox import Sandbox
from tests.annotate.sync_env import (
    LABELS,
    PAGE,
    Env,
    items_truth,
    pull_forget,
    pushed_and_classified,
    sandbox_classifications,
    served,
    stored_classifications,
    stored_snapshot,
    sync_invariants,
    sync_items,
    sync_round,
)

# -- push --------------------------------------------------------------------------------------


def test_a_round_becomes_a_subject_set_of_prioritised_subjects_linked_to_the_workflow(env):
    items = sync_items(5)
    round = sync_round(env)
    result = round_push(round=round, items=items, client=env.client())

    (subject_set,) = env.sandbox.subject_sets()
    assert subject_set.display_name == "round-1"
    assert subject_set.id in env.sandbox.workflow().subject_set_ids
    members = env.sandbox.set_members(subject_set.id)
    subjects = {s.id: s for s in env.sandbox.subjects()}
    by_external = {subjects[m.subject_id].metadata["external_id"]: m for m in members}
    assert [by_external[i.external_id].priority for i in items] == [1, 2, 3, 4, 5]
    for item in items:
        metadata = subjects[by_external[item.external_id].subject_id].metadata
        assert metadata["crowdloop_id"] == str(item.pk)
        assert subjects[by_external[item.external_id].subject_id].locations == [
            {"image/jpeg": item.image_url}
        ]
    round.refresh_from_db()
    assert (round.status, round.subject_set_id) == (Round.Status.PUSHED, subject_set.id)
    assert round.pushed_at is not None
    assert sorted(Subject.objects.filter(round=round).values_list("item_id", "priority")) == [
        (item.pk, float(rank)) for rank, item in enumerate(items, start=1)
    ]
    assert (result.created, result.existing, result.skipped) == (5, 0, [])


def test_pushing_a_round_again_creates_nothing_new(env):
    items = sync_items(4)
    round = sync_round(env)
    round_push(round=round, items=items, client=env.client())
    posts = env.posts("/api/subjects"), env.posts("/api/subject_sets")

    result = round_push(round=round, items=items, client=env.client())

    assert (env.posts("/api/subjects"), env.posts("/api/subject_sets")) == posts
    assert len(env.sandbox.subjects()) == 4 and len(env.sandbox.subject_sets()) == 1
    assert Subject.objects.count() == 4
    assert (result.created, result.existing) == (0, 4)


def test_a_subject_create_that_fails_after_the_server_stored_it_leaves_no_duplicate(env):
    items = sync_items(4)
    env.sandbox.faults.fail_after_commit(r"/api/subjects$", 502, skip=1)
    round_push(round=sync_round(env), items=items, client=env.client())
    external_ids = sorted(s.metadata["external_id"] for s in env.sandbox.subjects())
    assert external_ids == sorted(i.external_id for i in items)
    assert env.posts("/api/subjects") == 4
    assert Subject.objects.count() == 4


def test_a_push_that_lost_its_local_records_recovers_them_from_zooniverse(env):
    items = sync_items(3)
    round = sync_round(env)
    round_push(round=round, items=items, client=env.client())
    # A crash after the creates but before anything was recorded here.
    Subject.objects.all().delete()
    Round.objects.filter(pk=round.pk).update(subject_set_id=None)
    round.refresh_from_db()

    result = round_push(round=round, items=items, client=env.client())

    assert len(env.sandbox.subjects()) == 3 and len(env.sandbox.subject_sets()) == 1
    assert (result.created, result.recovered) == (0, 3)
    assert Subject.objects.filter(round=round).count() == 3


def test_a_subject_deleted_on_zooniverse_is_tombstoned_and_its_item_pushed_again(env):
    items = sync_items(2)
    round = sync_round(env)
    round_push(round=round, items=items, client=env.client())
    gone = Subject.objects.get(item=items[0])
    env.sandbox.delete_subject(gone.zooniverse_id)  # a project owner deletes it upstream

    result = round_push(round=round, items=items, client=env.client())

    gone.refresh_from_db()
    assert gone.upstream_state == Subject.Upstream.DELETED
    assert (result.created, result.existing) == (1, 1)
    assert len(env.sandbox.subjects()) == 2
    assert Subject.objects.filter(item=items[0], upstream_state="active").count() == 1


def test_items_without_an_image_are_skipped_and_local_files_use_the_public_media_url_when_set(
    env, settings
):
    corrupt = Item.objects.create(
        external_id="bad", image_url="https://x.org/b.jpg", image_state=Item.ImageState.CORRUPT
    )
    local = Item.objects.create(external_id="local", image_file="items/ab/abc.png")
    settings.PUBLIC_MEDIA_BASE_URL = ""
    round = sync_round(env)
    result = round_push(round=round, items=[corrupt, local], client=env.client())
    # No file behind ``image_file``: nothing to upload either.
    assert [external_id for external_id, _ in result.skipped] == ["bad", "local"]

    settings.PUBLIC_MEDIA_BASE_URL = "http://127.0.0.1:8000/media/"
    result = round_push(round=round, items=[corrupt, local], client=env.client())
    assert result.created == 1
    (subject,) = env.sandbox.subjects()
    assert subject.locations == [{"image/png": "http://127.0.0.1:8000/media/items/ab/abc.png"}]


def _stored_images(n: int) -> list[tuple[Item, bytes]]:
    """Items whose only image is a file under MEDIA_ROOT, each with different bytes."""
    out = []
    for i in range(n):
        relative = f"items/{i:02d}/image-{i}.png"
        path = Path(settings.MEDIA_ROOT) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"\x89PNG\r\n\x1a\n" + bytes([i]) * (100 + i)
        path.write_bytes(data)
        out.append((Item.objects.create(external_id=f"stored/{i}", image_file=relative), data))
    return out


def _uploaded_bytes(env: Env, external_id: str) -> tuple[str, bytes] | None:
    (subject,) = env.sandbox.find_subjects(external_id=external_id)
    ((content_type, url),) = subject.locations[0].items()
    upload = env.sandbox.uploaded(url)
    assert upload is None or upload[0] == content_type
    return upload


def test_a_local_image_is_uploaded_to_the_signed_url_the_create_returns(env, settings):
    settings.PUBLIC_MEDIA_BASE_URL = ""
    stored = _stored_images(3)
    result = round_push(
        round=sync_round(env), items=[item for item, _ in stored], client=env.client()
    )
    assert (result.created, result.skipped) == (3, [])
    for item, data in stored:
        assert _uploaded_bytes(env, item.external_id) == ("image/png", data)
    assert Subject.objects.count() == 3


def test_a_create_whose_answer_was_lost_asks_for_a_new_upload_url_and_uploads(env, settings):
    settings.PUBLIC_MEDIA_BASE_URL = ""
    (item, data), *_ = _stored_images(1)
    env.sandbox.faults.fail_after_commit(r"/api/subjects$", 502)
    round_push(round=sync_round(env), items=[item], client=env.client())
    assert env.posts("/api/subjects") == 1  # found, not created again
    assert _uploaded_bytes(env, item.external_id) == ("image/png", data)


def test_a_re_push_uploads_the_image_of_a_subject_found_upstream_but_not_recorded(env, settings):
    settings.PUBLIC_MEDIA_BASE_URL = ""
    (item, data), *_ = _stored_images(1)
    round = sync_round(env)
    # The create lands, then the process dies before the upload and the local record.
    env.sandbox.faults.fail(r"/media/uploads/", 500, 500, 500, 500, 500, 500, 500, 500)
    with pytest.raises(TransientError):
        round_push(round=round, items=[item], client=env.client(max_attempts=2))
    assert Subject.objects.count() == 0 and _uploaded_bytes(env, item.external_id) is None
    env.sandbox.faults.clear()

    result = round_push(round=round, items=[item], client=env.client())
    assert (result.created, result.recovered) == (0, 1)
    assert _uploaded_bytes(env, item.external_id) == ("image/png", data)


def test_an_upload_answered_with_a_5xx_is_sent_again(env, settings):
    settings.PUBLIC_MEDIA_BASE_URL = ""
    (item, data), *_ = _stored_images(1)
    env.sandbox.faults.fail(r"/media/uploads/", 503, method="PUT")
    result = round_push(round=sync_round(env), items=[item], client=env.client())
    assert result.created == 1
    assert _uploaded_bytes(env, item.external_id) == ("image/png", data)


def test_a_round_without_a_workflow_is_refused(env):
    round = Round.objects.create(number=9, name="round-9")
    with pytest.raises(SyncConfigError):
        round_push(round=round, items=sync_items(1), client=env.client())


# -- workflow versions -----------------------------------------------------------------------


def test_workflow_versions_map_answer_indices_to_concepts_by_label(env):
    env.sandbox.set_vocabulary(env.sandbox.workflow_id, ["Painting", "map", "unicorn"])
    result = workflow_versions_sync(workflow=env.workflow, client=env.client())
    assert len(result.created) == 2 and result.unmapped == [f"{result.created[1]}:unicorn"]
    latest = WorkflowVersion.objects.get(workflow=env.workflow, version=result.created[1])
    assert [a["concept"] for a in latest.answers] == ["painting", "map", None]
    again = workflow_versions_sync(workflow=env.workflow, client=env.client())
    assert again.created == [] and len(again.unchanged) == 2


# -- pull ----------------------------------------------------------------------------------------


def test_a_pull_brings_exactly_the_sandboxs_classifications(env):
    pushed_and_classified(env)
    result = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)

    assert stored_classifications() == sandbox_classifications(env)
    assert result.complete and result.pages == 5
    assert result.last_id == env.sandbox.classifications()[-1].id
    assert SyncCursor.objects.get(workflow=env.workflow).last_id == result.last_id
    # Items are matched through the subjects the push recorded; repeats are flagged, not dropped.
    assert not Classification.objects.filter(item__isnull=True).exists()
    repeats = sum(1 for c in env.sandbox.classifications() if c.metadata.get("seen_before"))
    assert Classification.objects.filter(is_duplicate=True).count() >= repeats > 0
    report = ImportReport.objects.get(pk=result.report_id)
    assert (report.kind, report.status, report.created) == ("sync", "succeeded", 45)
    sync_invariants(env)


def test_a_second_pull_finds_nothing_new_and_then_only_the_new_classifications(env):
    pushed_and_classified(env, n_classifications=15)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    reports = ImportReport.objects.count()
    again = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert (again.pages, again.counts.created, again.report_id) == (0, 0, None)
    assert ImportReport.objects.count() == reports  # an empty periodic pull leaves no report

    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=7)
    more = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert more.counts.created == 7
    assert stored_classifications() == sandbox_classifications(env)


def test_f8_two_500s_on_page_three_are_retried_and_the_rows_equal_a_fault_free_run(env):
    pushed_and_classified(env)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    undisturbed = stored_snapshot()
    pull_forget(env)

    env.sandbox.faults.fail(r"/classifications/project", 500, 500, skip=2)
    result = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)

    assert stored_snapshot() == undisturbed
    assert result.complete and len(env.clock.sleeps) == 2
    sync_invariants(env)


def test_f9_a_429_with_retry_after_seven_waits_at_least_seven_seconds_and_is_no_failure(env):
    pushed_and_classified(env, n_classifications=25)
    env.sandbox.faults.throttle(r"/classifications/project", retry_after=7, skip=1)
    result = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert max(env.clock.sleeps) >= 7
    assert result.complete and stored_classifications() == sandbox_classifications(env)
    assert ImportReport.objects.get(pk=result.report_id).status == "succeeded"


def test_f10_a_hanging_page_times_out_and_is_retried_within_the_budget(env):
    pushed_and_classified(env, n_classifications=25)
    env.sandbox.faults.hang(r"/classifications/project", seconds=5, skip=1)
    result = classifications_pull(
        workflow=env.workflow, client=env.client(read_timeout_s=0.3), page_size=PAGE
    )
    assert result.complete and stored_classifications() == sandbox_classifications(env)
    hung = [e for e in env.sandbox.request_log if e.fault == "hang"]
    assert len(hung) == 1


def test_f11_a_crash_after_page_k_commits_resumes_at_its_last_id_without_gaps_or_duplicates(env):
    pushed_and_classified(env)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    undisturbed = stored_snapshot()
    pull_forget(env)
    committed: list[int] = []

    def crash_after_second_page(done) -> None:
        committed.append(done.last_id)
        if len(committed) == 2:
            raise RuntimeError("worker killed")

    with pytest.raises(RuntimeError):
        classifications_pull(
            workflow=env.workflow,
            client=env.client(),
            page_size=PAGE,
            on_batch_committed=crash_after_second_page,
        )
    assert SyncCursor.objects.get(workflow=env.workflow).last_id == committed[1]
    assert Classification.objects.count() == 2 * PAGE
    assert ImportReport.objects.filter(status="failed").count() == 1

    env.sandbox.request_log.clear()
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    first = next(e for e in env.sandbox.request_log if e.path == "/api/classifications/project")
    assert int(first.query["last_id"]) == committed[1]
    assert stored_snapshot() == undisturbed
    sync_invariants(env)


def test_a_sync_killed_midway_and_rerun_yields_exactly_the_classifications_of_an_undisturbed_run(
    env, monkeypatch
):
    pushed_and_classified(env)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    undisturbed = stored_snapshot()
    pull_forget(env)

    # Killed inside the third page's transaction, before its commit: that page rolls back.
    real_ingest = zooniverse_pull.classifications_ingest
    calls = {"n": 0}

    def dying_ingest(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            real_ingest(**kwargs)
            raise KeyboardInterrupt("SIGTERM mid-transaction")
        return real_ingest(**kwargs)

    monkeypatch.setattr(zooniverse_pull, "classifications_ingest", dying_ingest)
    with pytest.raises(KeyboardInterrupt):
        classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert Classification.objects.count() == 2 * PAGE
    sync_invariants(env)
    monkeypatch.undo()

    # Then the network gives out on page four for longer than the retries last.
    env.sandbox.faults.reset(r"/classifications/project", times=10, skip=1)
    with pytest.raises(TransientError):
        classifications_pull(
            workflow=env.workflow, client=env.client(max_attempts=3), page_size=PAGE
        )
    assert Classification.objects.count() == 3 * PAGE
    env.sandbox.faults.clear()

    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert stored_snapshot() == undisturbed
    sync_invariants(env)


def test_a_page_repeating_an_id_stores_it_once(env):
    pushed_and_classified(env, n_classifications=25)
    env.sandbox.faults.repeat_id(r"/classifications/project", skip=1)
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert stored_classifications() == sandbox_classifications(env)
    sync_invariants(env)


def test_an_empty_page_ends_a_pull_and_the_next_pull_carries_on(env):
    pushed_and_classified(env, n_classifications=25)
    env.sandbox.faults.empty_page(r"/classifications/project", skip=1)
    first = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert first.counts.created == PAGE
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert stored_classifications() == sandbox_classifications(env)


def test_two_pulls_at_once_store_each_classification_once(env):
    pushed_and_classified(env)
    # The second pull runs to the end while the first sits between two pages: the first then
    # finds the cursor moved and continues from there instead of writing stale pages.
    started = []

    def other_pull_in_between(done) -> None:
        if not started:
            started.append(
                classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
            )

    first = classifications_pull(
        workflow=env.workflow,
        client=env.client(),
        page_size=PAGE,
        on_batch_committed=other_pull_in_between,
    )
    assert first.stale_pages == 1 and first.complete
    assert stored_classifications() == sandbox_classifications(env)
    sync_invariants(env)


@pytest.mark.postgres
def test_two_pulls_in_two_threads_store_each_classification_once(transactional_db, env):
    """Real concurrency needs row locks: PostgreSQL only (SQLite has no SELECT ... FOR UPDATE)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL)")
    pushed_and_classified(env)
    # The first page request waits half a second, so the other thread pulls everything first and
    # the waiting one comes back with a page from a cursor that has moved on.
    env.sandbox.faults.hang(r"/classifications/project", seconds=0.5)
    results: list = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(
                classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
            )
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(r.counts.created for r in results) == 45
    assert sum(r.stale_pages for r in results) >= 1
    assert stored_classifications() == sandbox_classifications(env)
    sync_invariants(env)


def test_classifications_of_subjects_pushed_elsewhere_get_their_items_from_subject_metadata(env):
    items = sync_items(2)
    set_id = env.sandbox.create_subject_set("made-by-hand")
    for item in items:
        env.sandbox.create_subject(
            {"image/jpeg": item.image_url},
            metadata={"external_id": item.external_id},
            subject_set_id=set_id,
        )
    env.sandbox.link_subject_set(env.sandbox.workflow_id, set_id)
    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=6, truth=items_truth(items))
    classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
    assert Classification.objects.count() == 6
    assert not Classification.objects.filter(item__isnull=True).exists()


# -- exports -------------------------------------------------------------------------------------


def test_an_export_pull_imports_the_sandbox_export_and_deletes_the_file(env, tmp_path: Path):
    pushed_and_classified(env, n_classifications=20)
    workflow_versions_sync(workflow=env.workflow, client=env.client())
    report, counts = classifications_export_pull(
        workflow=env.workflow, client=env.client(), directory=tmp_path
    )
    assert counts.created == 20 and report.status == "succeeded"
    assert stored_classifications() == sandbox_classifications(env)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("export_stuck", ExportNotReady),
        ("export_stale", ExportStale),
        ("cut_download", ExportIncomplete),
    ],
)
def test_f12_f13_an_unusable_export_is_refused_and_nothing_is_ingested(
    env, tmp_path: Path, fault, error
):
    pushed_and_classified(env, n_classifications=20)
    workflow_versions_sync(workflow=env.workflow, client=env.client())
    getattr(env.sandbox.faults, fault)()
    with pytest.raises(error):
        classifications_export_pull(
            workflow=env.workflow, client=env.client(), directory=tmp_path, deadline_s=60, poll_s=10
        )
    assert Classification.objects.count() == 0
    assert list(tmp_path.iterdir()) == []
    assert sum(env.clock.sleeps) <= 70  # our own deadline, not Panoptes'
    if fault == "cut_download":  # the next attempt is clean
        classifications_export_pull(workflow=env.workflow, client=env.client(), directory=tmp_path)
        assert Classification.objects.count() == 20


# -- retirement ----------------------------------------------------------------------------------


def test_retiring_and_unretiring_subjects_reaches_zooniverse_and_is_mirrored_here(env):
    round_push(round=sync_round(env), items=sync_items(3), client=env.client())
    subjects = list(Subject.objects.order_by("pk"))
    assert subjects_retire(workflow=env.workflow, subjects=subjects[:2], client=env.client()) == 2
    assert [env.sandbox.status(s.zooniverse_id).retirement_reason for s in subjects[:2]] == [
        "consensus",
        "consensus",
    ]
    assert Subject.objects.filter(retirement_reason="consensus").count() == 2

    subjects_unretire(workflow=env.workflow, subjects=subjects[:1], client=env.client())
    assert env.sandbox.status(subjects[0].zooniverse_id).retired_at is None
    assert Subject.objects.filter(retired_at__isnull=False).count() == 1


def test_retirement_by_classification_count_upstream_is_copied_here(env):
    env.sandbox.set_retirement(env.sandbox.workflow_id, 4)
    items = sync_items(2)
    round_push(round=sync_round(env), items=items, client=env.client())
    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=8, truth=items_truth(items))
    changed = subject_statuses_sync(
        workflow=env.workflow, subjects=Subject.objects.all(), client=env.client()
    )
    assert changed == 2
    assert set(Subject.objects.values_list("retirement_reason", flat=True)) == {
        "classification_count"
    }


# -- command and tasks ---------------------------------------------------------------------------


@pytest.fixture
def configured(env, settings):
    settings.PANOPTES_ENDPOINT = env.server.endpoint
    settings.PANOPTES_USERNAME = "crowdloop-bot"
    settings.PANOPTES_PASSWORD = "a-test-password"
    settings.PANOPTES_CLIENT_SECRET = ""
    settings.PANOPTES_PROJECT_ID = str(env.sandbox.project_id)
    return env


def test_the_command_pushes_a_round_then_pulls_with_a_one_line_summary(
    configured, tmp_path, capsys
):
    env = configured
    items = sync_items(3)
    sync_round(env, number=4)
    listing = tmp_path / "round.txt"
    listing.write_text("\n".join(i.external_id for i in items))
    call_command("sync_zooniverse", "--push-round", "4", "--items", str(listing), "--no-pull")
    assert len(env.sandbox.subjects()) == 3
    assert capsys.readouterr().out.startswith("sync_zooniverse: round 4 -> subject set")
    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=9, truth=items_truth(items))

    call_command("sync_zooniverse", "--workflow-id", str(env.workflow.zooniverse_id))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("sync_zooniverse: workflow 1:")
    assert Classification.objects.count() == 9


def test_the_command_fails_with_a_non_zero_exit_when_zooniverse_fails(configured):
    configured.sandbox.faults.fail(r"/classifications/project", *([404] * 3))
    with pytest.raises(CommandError):
        call_command("sync_zooniverse")
    with pytest.raises(CommandError):
        call_command("sync_zooniverse", "--workflow-id", "999")


def test_the_tasks_pull_every_active_workflow_and_push_a_round(configured):
    from annotate.tasks import push_round, sync_all_workflows, sync_workflow

    env = configured
    items = sync_items(3)
    round = sync_round(env, number=2)
    pushed = push_round.delay(round_id=round.pk, item_ids=[i.pk for i in items]).get()
    assert pushed["created"] == 3
    again = push_round.delay(round_id=round.pk).get()  # re-push from the recorded subjects
    assert (again["created"], again["existing"]) == (0, 3)

    env.sandbox.run_volunteers(env.sandbox.workflow_id, classifications=5, truth=items_truth(items))
    assert sync_all_workflows.delay().get() == 1
    assert Classification.objects.count() == 5
    result = sync_workflow.delay(workflow_id=env.workflow.zooniverse_id).get()
    assert (result["created"], result["complete"]) == (0, True)
    assert sync_workflow.delay(workflow_id=424242).get()["skipped"]


def test_pushing_a_round_chosen_by_select_round_uses_its_picks_and_ranks(configured):
    from annotate.models import RoundPick
    from annotate.tasks import push_round

    env = configured
    items = sync_items(3)
    round = sync_round(env, number=3)
    for rank, item in zip((2, 1, 3), items, strict=True):
        RoundPick.objects.create(round=round, item=item, rank=rank, reason="uncertain")
    push_round.delay(round_id=round.pk).get()
    priorities = dict(Subject.objects.values_list("item__external_id", "priority"))
    assert priorities == {
        items[0].external_id: 2.0,
        items[1].external_id: 1.0,
        items[2].external_id: 3.0,
    }


def test_a_chosen_round_without_a_workflow_cannot_be_published(db):
    from annotate.services.rounds import RoundPublishError, round_publish

    round = Round.objects.create(number=4, name="round-4")
    with pytest.raises(RoundPublishError, match="round-4 has no workflow to push to"):
        round_publish(round=round)


def test_a_long_lived_client_gets_a_fresh_budget_for_each_sync_call(env):
    pushed_and_classified(env, n_classifications=5)
    client = env.client(budget_s=100)
    env.clock.sleep(500)  # the demo trained a model in between
    assert client.time_left() < 0
    result = classifications_pull(workflow=env.workflow, client=client, page_size=PAGE)
    assert result.counts.created == 5


def test_the_tasks_retry_only_transient_errors_within_the_visibility_timeout(settings):
    from annotate.tasks import push_round, sync_workflow

    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    for task in (sync_workflow, push_round):
        assert task.acks_late and task.max_retries == 5
        assert task.autoretry_for == (TransientError,)
        assert task.retry_backoff_max < visibility and task.time_limit < visibility
    assert push_round.reject_on_worker_lost and not sync_workflow.reject_on_worker_lost


# -- a real worker on a real broker ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_a_worker_killed_mid_sync_is_redelivered_and_ends_with_exactly_the_undisturbed_rows(
    transactional_db, env, tmp_path
):
    """F2/F11 with Redis and a worker process: kill -9 while page 3 is in flight; the unacked
    message comes back after the visibility timeout and a new worker resumes at the cursor."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from celery import Celery

    redis_url = os.environ.get("CROWDLOOP_TEST_REDIS_URL", "")
    if not redis_url or connection.vendor != "postgresql":
        pytest.skip("needs CROWDLOOP_TEST_REDIS_URL and PostgreSQL (DATABASE_URL)")
    pushed_and_classified(env, n_items=30, n_classifications=250)  # the task pages by 100
    expected = sandbox_classifications(env)
    db = connection.settings_dict
    worker_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/"
        f"{db['NAME']}",
        "CELERY_VISIBILITY_TIMEOUT": "16",  # the client budget is half of it
        "PANOPTES_ENDPOINT": env.server.endpoint,
        "PANOPTES_USERNAME": "crowdloop-bot",
        "PANOPTES_PASSWORD": "a-test-password",
        "PANOPTES_CLIENT_SECRET": "",
        "PANOPTES_PROJECT_ID": str(env.sandbox.project_id),
        "PANOPTES_TIMEOUT": "60",
    }
    # Not the current app: shared tasks of later tests would follow it to Redis instead of
    # running in-process.
    app = Celery("producer", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
        # Unacked messages left by an earlier run of this test would be redelivered into this one.
        conn.default_channel.client.delete("unacked", "unacked_index")

    def start_worker(name: str) -> subprocess.Popen:
        log = (tmp_path / f"{name}.log").open("w")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default",
                "--pool",
                "solo",
                "-n",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
            ],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_for(condition, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("*.log"))
                pytest.fail(f"timed out; worker logs:\n{logs}")
            time.sleep(0.2)

    # Page 3 hangs far longer than the test waits: the worker is killed while it is in flight.
    env.sandbox.faults.hang(r"/classifications/project", seconds=120, skip=2)
    first = start_worker("first")
    try:
        app.send_task("annotate.tasks.sync_workflow", kwargs={"workflow_id": 1}, queue="default")
        wait_for(lambda: any(e.fault == "hang" for e in env.sandbox.request_log), 60)
        assert Classification.objects.count() == 200
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
    finally:
        if first.poll() is None:
            first.kill()
    env.sandbox.faults.clear()

    # The worker comes back after the visibility timeout; on start it restores the unacked
    # message (kombu only rescans every few polls after that, which would make this test slow).
    time.sleep(max(0.0, killed_at + 16.5 - time.monotonic()))
    second = start_worker("second")
    try:
        wait_for(lambda: Classification.objects.count() == len(expected), 90)
        time.sleep(1)  # a stray duplicate delivery would land now
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            second.kill()
    assert stored_classifications() == expected
    sync_invariants(env)


def test_a_pulled_classification_without_the_task_is_kept_as_not_asked_not_quarantined():
    from annotate.zooniverse.classification_records import ClassificationRecord

    row = {
        "id": "9000042",
        "created_at": "2026-11-02T10:00:00.000Z",
        "links": {"workflow": "1", "subjects": ["100001"], "user": "5001"},
        "metadata": {"workflow_version": "3.1", "session": "s"},
        "annotations": [{"task": "T1", "value": 0}],  # the other branch of the tree
    }
    record = zooniverse_pull.classification_record(row, task_key="T0")
    assert isinstance(record, ClassificationRecord)
    assert record.task_shown is False and record.answers is None
    asked = zooniverse_pull.classification_record(
        {**row, "annotations": [{"task": "T0", "value": [1, 2]}]}, task_key="T0"
    )
    assert asked.task_shown is True and asked.answers == [1, 2]


# -- single-answer and survey workflows ------------------------------------------------------------


@pytest.fixture
def typed_env(db, concepts, request):
    """A sandbox whose workflow's task is of the type the test is parametrized with."""
    yield from served(Sandbox(LABELS, keys=LABELS, task_type=request.param))


def _expected_votes(env: Env) -> list[tuple[int, list[str]]]:
    """Each sandbox classification's labels marked, read from its API annotation."""
    codes = env.sandbox.workflow().tasks["T0"].get("choicesOrder")
    expected = []
    for c in env.sandbox.classifications(env.sandbox.workflow_id):
        value = c.annotations[0]["value"]
        if isinstance(value, int):
            ticked = [LABELS[value]]
        else:
            ticked = [LABELS[codes.index(v["choice"])] for v in value]
        expected.append((c.id, sorted(ticked)))
    return expected


@pytest.mark.parametrize("typed_env", ["single", "survey"], indirect=True)
@pytest.mark.parametrize("source", ["api", "export"])
def test_single_answer_and_survey_classifications_arrive_as_the_concepts_marked(
    typed_env, source, tmp_path: Path
):
    env = typed_env
    pushed_and_classified(env, n_classifications=30)
    task_type = env.sandbox.workflow().tasks["T0"]["type"]
    values = [c.annotations[0]["value"] for c in env.sandbox.classifications()]
    if task_type == "single":
        assert all(isinstance(v, int) for v in values)
    else:
        assert all(isinstance(v, list) and all("choice" in x for x in v) for v in values)
    synced = workflow_versions_sync(workflow=env.workflow, client=env.client())
    version = WorkflowVersion.objects.get(version=synced.created[0])
    assert version.task_type == task_type
    assert [a["concept"] for a in version.answers] == LABELS
    if source == "api":
        result = classifications_pull(workflow=env.workflow, client=env.client(), page_size=PAGE)
        counts = result.counts
    else:
        _, counts = classifications_export_pull(
            workflow=env.workflow, client=env.client(), directory=tmp_path
        )
    assert (counts.created, counts.quarantined, counts.invalid_answers) == (30, 0, 0)
    keys = dict(Concept.objects.values_list("id", "key"))
    stored = [
        (zid, sorted(keys[i] for i in ids))
        for zid, ids in Classification.objects.order_by("zooniverse_id").values_list(
            "zooniverse_id", "concept_ids"
        )
    ]
    assert stored == _expected_votes(env)
    if task_type == "single":
        assert all(len(ids) == 1 for _, ids in stored)
