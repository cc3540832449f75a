"""The job rules of annotate.jobs, said once: claim, attempts, lease, finish."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import DatasetRelease
from training.models import RoundRequest, TrainingRun


def test_a_queued_job_is_claimed_once_and_its_start_is_stamped(db):
    release = DatasetRelease.objects.create(version=1)
    assert DatasetRelease.objects.filter(pk=release.pk).claim() == 1
    assert DatasetRelease.objects.filter(pk=release.pk).claim() == 0
    release.refresh_from_db()
    assert release.status == "running" and release.started_at is not None


def test_a_claim_counts_an_attempt_and_none_is_won_once_they_are_spent(db):
    request = RoundRequest.objects.create(max_attempts=1)
    assert RoundRequest.objects.filter(pk=request.pk).claim() == 1
    RoundRequest.objects.filter(pk=request.pk).requeue()
    request.refresh_from_db()
    assert request.status == "queued" and request.attempts == 1 and request.attempts_spent
    assert RoundRequest.objects.filter(pk=request.pk).claim() == 0


def test_a_running_job_without_a_lease_is_claimed_again_only_once_it_is_stale(db):
    request = RoundRequest.objects.create()
    RoundRequest.objects.filter(pk=request.pk).claim()
    assert RoundRequest.objects.filter(pk=request.pk).claim() == 0
    later = timezone.now() + RoundRequest.stale_after + timedelta(seconds=1)
    assert RoundRequest.objects.filter(pk=request.pk).claim(now=later) == 1
    assert RoundRequest.objects.get(pk=request.pk).attempts == 2


def test_a_leased_job_is_taken_over_only_after_its_lease_expires(db):
    run = TrainingRun.objects.create(trigger="api")
    now = timezone.now()
    assert TrainingRun.objects.filter(pk=run.pk).claim(now=now, lease_s=60) == 1
    run.refresh_from_db()
    assert run.lease_live(now) and not run.lease_expired(now)
    assert TrainingRun.objects.filter(pk=run.pk).claim(now=now, lease_s=60) == 0
    later = now + timedelta(seconds=61)
    assert run.lease_expired(later)
    assert TrainingRun.objects.filter(pk=run.pk).claim(now=later, lease_s=60) == 1
    assert TrainingRun.objects.get(pk=run.pk).attempts == 2


def test_a_leased_job_cannot_be_claimed_without_a_lease(db):
    run = TrainingRun.objects.create(trigger="api")
    with pytest.raises(TypeError):
        TrainingRun.objects.filter(pk=run.pk).claim()


def test_the_fence_renews_only_the_attempt_that_holds_the_job(db):
    run = TrainingRun.objects.create(trigger="api")
    TrainingRun.objects.filter(pk=run.pk).claim(lease_s=60)
    assert TrainingRun.objects.filter(pk=run.pk).held_by(2).renew(lease_s=60) == 0
    assert TrainingRun.objects.filter(pk=run.pk).held_by(1).renew(lease_s=60) == 1


def test_a_finished_job_is_never_finished_again_and_drops_its_lease(db):
    run = TrainingRun.objects.create(trigger="api")
    TrainingRun.objects.filter(pk=run.pk).claim(lease_s=60)
    assert TrainingRun.objects.filter(pk=run.pk).finish(status="failed", error="x" * 20_000) == 1
    assert TrainingRun.objects.filter(pk=run.pk).finish(status="succeeded") == 0
    run.refresh_from_db()
    assert run.is_finished and run.status == "failed" and run.lease_until is None
    assert len(run.error) == TrainingRun.error_max_length


def test_a_job_finishes_succeeded_or_failed_only(db):
    with pytest.raises(ValueError):
        RoundRequest.objects.all().finish(status="running")
