"""Excluding a volunteer from aggregation: audited, idempotent, their votes gone from the next full
pass and back after they are taken back, and the loop asked for that full pass."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from annotate.models import (
    AggregatedLabel,
    AppendOnlyError,
    Item,
    Volunteer,
    VolunteerExclusion,
    VolunteerSkill,
)
from annotate.services.aggregation import labels_aggregate
from annotate.services.classifications.counters import counts_recompute
from annotate.services.volunteers import (
    VolunteerExclusionError,
    volunteers_exclude,
    volunteers_include,
)
from tests.factories import Crowd

pytestmark = pytest.mark.django_db


@pytest.fixture
def crowd(concepts):
    """``painting`` on item a by three careful volunteers; the spammer ticks ``map`` on a and on
    b, which nobody else classified. Counters recounted, labels aggregated."""
    crowd = Crowd(concepts)
    a, b = crowd.item("a"), crowd.item("b")
    for careful in ("c1", "c2", "c3"):
        crowd.vote(a, careful, ["painting"])
    crowd.vote(a, "spam", ["map"])
    crowd.vote(b, "spam", ["map", "painting"])
    everyone = set(Volunteer.objects.values_list("pk", flat=True))
    counts_recompute(items={a.pk, b.pk}, volunteers=everyone)
    labels_aggregate(method="majority")
    crowd.a, crowd.b = a, b
    crowd.spammer = Volunteer.objects.get(key="spam")
    return crowd


def votes(item: Item, key: str) -> tuple[int, int]:
    label = AggregatedLabel.objects.get(item=item, concept__key=key)
    return label.votes_for, label.votes_against


def test_excluding_records_who_why_and_when_and_recounts_the_items_votes_at_once(
    crowd, admin_user
):
    assert Item.objects.get(pk=crowd.a.pk).n_classifications == 4

    changed = volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="ticks all")

    assert changed == 1
    crowd.spammer.refresh_from_db()
    assert crowd.spammer.excluded
    record = VolunteerExclusion.objects.get()
    assert (record.volunteer, record.excluded, record.by, record.reason) == (
        crowd.spammer, True, admin_user, "ticks all"
    )
    counts = dict(Item.objects.values_list("external_id", "n_classifications"))
    assert counts == {"a": 3, "b": 0}
    # Their activity is still theirs: the volunteer's own count keeps every classification.
    assert crowd.spammer.n_classifications == 2


def test_excluding_an_excluded_volunteer_writes_nothing(crowd, admin_user):
    volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="ticks all")

    again = volunteers_exclude(
        volunteers=Volunteer.objects.filter(key="spam"), by=admin_user, reason="again"
    )
    never = volunteers_include(
        volunteers=Volunteer.objects.filter(key="c1"), by=admin_user, reason="never excluded"
    )

    assert (again, never) == (0, 0)
    assert VolunteerExclusion.objects.count() == 1


def test_a_reason_and_a_user_are_required(crowd, admin_user):
    with pytest.raises(VolunteerExclusionError, match="reason"):
        volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="   ")
    with pytest.raises(VolunteerExclusionError, match="user"):
        volunteers_exclude(volunteers=[crowd.spammer], by=None, reason="spam")
    assert not Volunteer.objects.get(key="spam").excluded
    assert not VolunteerExclusion.objects.exists()


def test_the_audit_is_append_only(crowd, admin_user):
    volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")
    record = VolunteerExclusion.objects.get()
    record.reason = "rewritten"
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()


def test_the_next_full_aggregation_drops_their_votes_and_taking_them_back_restores_them(
    crowd, admin_user
):
    assert votes(crowd.a, "map") == (1, 3)
    before = dict(
        AggregatedLabel.objects.filter(item=crowd.a).values_list("concept__key", "posterior")
    )

    volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")
    summary = labels_aggregate(method="majority")

    assert summary.n_volunteers == 3 and summary.n_classifications == 3
    assert votes(crowd.a, "map") == (0, 3)
    # b was voted on by the spammer alone: no labels left, no consensus, like an unvoted item.
    assert not AggregatedLabel.objects.filter(item=crowd.b).exists()
    assert Item.objects.get(pk=crowd.b.pk).consensus == Item.Consensus.NONE
    # Their skills stay as last estimated, so their page still shows why they were excluded.
    assert VolunteerSkill.objects.filter(volunteer=crowd.spammer).exists()

    volunteers_include(volunteers=[crowd.spammer], by=admin_user, reason="a mistake")
    summary = labels_aggregate(method="majority")

    assert summary.n_volunteers == 4 and summary.n_classifications == 5
    assert votes(crowd.a, "map") == (1, 3)
    after = dict(
        AggregatedLabel.objects.filter(item=crowd.a).values_list("concept__key", "posterior")
    )
    assert after == before
    assert AggregatedLabel.objects.filter(item=crowd.b).exists()
    assert dict(Item.objects.values_list("external_id", "n_classifications")) == {"a": 4, "b": 1}
    assert list(VolunteerExclusion.objects.order_by("pk").values_list("excluded", "reason")) == [
        (True, "spam"),
        (False, "a mistake"),
    ]


def test_an_incremental_pass_leaves_their_votes_out_too(crowd, admin_user):
    labels_aggregate(method="dawid_skene")  # the stored parameters an incremental pass needs
    volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")

    summary = labels_aggregate(item_ids=[crowd.a.pk, crowd.b.pk], method="dawid_skene")

    assert summary.incremental
    assert votes(crowd.a, "map") == (0, 3)
    assert not AggregatedLabel.objects.filter(item=crowd.b).exists()


def test_their_gold_standard_classifications_anchor_nothing(crowd, admin_user):
    crowd.vote(crowd.b, "gold-spam", ["sculpture"], gold_standard=True)
    counts_recompute(items={crowd.b.pk}, volunteers=set())
    labels_aggregate(method="majority")
    assert AggregatedLabel.objects.get(item=crowd.b, concept__key="sculpture").posterior == 1.0

    volunteers_exclude(
        volunteers=Volunteer.objects.filter(key__in=["spam", "gold-spam"]),
        by=admin_user,
        reason="test accounts",
    )
    labels_aggregate(method="majority")

    assert not AggregatedLabel.objects.filter(item=crowd.b).exists()
    assert VolunteerExclusion.objects.count() == 2


def test_the_signal_asks_the_loop_for_a_full_aggregation_which_drops_their_votes(
    crowd, admin_user, loop_on, settings, django_capture_on_commit_callbacks
):
    from loop.models import LoopStep, StepName

    settings.AGGREGATION_METHOD = "majority"
    with django_capture_on_commit_callbacks(execute=True):
        volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")

    step = LoopStep.objects.get(name=StepName.AGGREGATE)
    assert step.request_reason == "full pass: 1 volunteer excluded from aggregation"
    # Tasks run eagerly in tests: the step has run, as a full pass, with no new vote.
    assert step.served_seq == step.request_seq and step.last_status == "done"
    assert "full" in step.last_summary
    assert votes(crowd.a, "map") == (0, 3)

    with django_capture_on_commit_callbacks(execute=True):
        volunteers_include(volunteers=[crowd.spammer], by=admin_user, reason="a mistake")

    step.refresh_from_db()
    assert step.request_reason == "full pass: 1 volunteer taken back into aggregation"
    assert votes(crowd.a, "map") == (1, 3)


def test_nothing_is_sent_when_nothing_changed(
    crowd, admin_user, django_capture_on_commit_callbacks
):
    from annotate.signals import volunteers_excluded

    heard: list[dict] = []

    def listen(sender, **kwargs):
        heard.append(kwargs)

    volunteers_excluded.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")
        with django_capture_on_commit_callbacks(execute=True):
            volunteers_exclude(volunteers=[crowd.spammer], by=admin_user, reason="spam")
    finally:
        volunteers_excluded.disconnect(listen)
    assert heard == [{"signal": volunteers_excluded, "volunteer_ids": [crowd.spammer.pk],
                      "excluded": True}]


def test_the_command_excludes_by_user_name_and_takes_back_with_undo(crowd, admin_user, capsys):
    call_command("volunteer_exclude", "spam", "--reason", "ticks all", "--by", admin_user.username)
    assert "spam: excluded from aggregation" in capsys.readouterr().out
    assert Volunteer.objects.get(key="spam").excluded

    call_command("volunteer_exclude", "spam", "--reason", "ticks all", "--by", admin_user.username)
    assert "already excluded" in capsys.readouterr().out

    call_command(
        "volunteer_exclude", "spam", "--undo", "--reason", "mistake", "--by", admin_user.username
    )
    assert "taken back into aggregation" in capsys.readouterr().out
    assert not Volunteer.objects.get(key="spam").excluded
    assert VolunteerExclusion.objects.count() == 2


def test_the_command_refuses_an_unknown_volunteer_or_user(crowd, admin_user):
    with pytest.raises(CommandError, match="no volunteer"):
        call_command("volunteer_exclude", "nobody", "--reason", "x", "--by", admin_user.username)
    with pytest.raises(CommandError, match="no user"):
        call_command("volunteer_exclude", "spam", "--reason", "x", "--by", "ghost")
    assert not VolunteerExclusion.objects.exists()
