"""The forms of the staff actions page. They check the shape of the input (numbers, bounds, a
known strategy); the services they feed check the rest (the workflow is active, the round is a
draft with picks) and name the field at fault, which the view puts on the form."""

from __future__ import annotations

from typing import cast

from django import forms
from django.conf import settings
from django.db.models import Count

from ml.acquisition import list_strategies

#: The largest round the page asks for: the API's bound (``training.api``, ``size``).
MAX_ROUND_SIZE = 10_000
#: Rounds offered for a push, newest first.
PUSH_CHOICES = 50


class ListedIdField(forms.TypedChoiceField):
    """A choice among the listed ids that lets an id not listed through to the service, so the
    error says why it is not offered ("not active", "on Zooniverse already") instead of "not a
    valid choice"; a value that is not a number is still refused here."""

    def valid_value(self, value: object) -> bool:
        return True


class SyncForm(forms.Form):
    """Sync now: the pipeline's pull step, now."""

    workflow = ListedIdField(
        coerce=int,
        empty_value=None,
        required=False,
        help_text="The loop's pull step pulls every active workflow from its stored cursor; "
        "naming one checks that it is configured and active.",
    )

    def __init__(self, *args, **kwargs) -> None:
        from annotate.models import Workflow

        super().__init__(*args, **kwargs)
        # Declared above as a ListedIdField: a ChoiceField, whose choices the stubs know.
        workflow = cast(forms.ChoiceField, self.fields["workflow"])
        workflow.choices = [("", "every active workflow")] + [
            (
                str(w.zooniverse_id),
                f"{w.zooniverse_id}: {w.display_name}" if w.display_name else str(w.zooniverse_id),
            )
            for w in Workflow.objects.filter(active=True).order_by("zooniverse_id")
        ]


class RoundRequestForm(forms.Form):
    """Request the next round: ``round_request_create``, as ``POST /api/v1/round-requests/``."""

    size = forms.IntegerField(
        min_value=1,
        max_value=MAX_ROUND_SIZE,
        help_text=f"Items in the round (1 to {MAX_ROUND_SIZE:,}).",
    )
    strategy = forms.ChoiceField(
        required=False,
        help_text="How the model picks the items; a cold start (no scored model yet) picks "
        "typical and varied images whatever is chosen.",
    )
    push = forms.BooleanField(
        required=False,
        help_text="Push the round to Zooniverse once chosen (the request succeeds only once "
        "Zooniverse has it).",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["size"].initial = settings.ROUND_NEXT_SIZE
        default = getattr(settings, "ACQUISITION_STRATEGY", "entropy")
        strategy = cast(forms.ChoiceField, self.fields["strategy"])
        strategy.choices = [("", f"default ({default})")] + [
            (name, name) for name in list_strategies()
        ]

    def clean_strategy(self) -> str | None:
        return self.cleaned_data.get("strategy") or None


class RoundPushForm(forms.Form):
    """Push a round: a draft round with picks, pushed by the round request push task."""

    round = ListedIdField(
        coerce=int,
        help_text="Draft rounds with picks and a workflow, newest first.",
    )

    def __init__(self, *args, **kwargs) -> None:
        from annotate.models import Round
        from training.models import RoundRequest

        super().__init__(*args, **kwargs)
        busy = (RoundRequest.Status.QUEUED, RoundRequest.Status.RUNNING)
        rounds = (
            Round.objects.filter(status=Round.Status.DRAFT, workflow__isnull=False)
            .exclude(request__status__in=busy)
            .annotate(n_picks=Count("picks"))
            .filter(n_picks__gt=0)
            .order_by("-number")[:PUSH_CHOICES]
        )
        cast(forms.ChoiceField, self.fields["round"]).choices = [("", "choose a round")] + [
            (str(r.pk), f"{r.name} ({r.n_picks} picks, {r.strategy})") for r in rounds
        ]

    @property
    def has_choices(self) -> bool:
        field = cast(forms.ChoiceField, self.fields["round"])
        # __init__ set a list, which the field keeps (normalized) as a list.
        return len(cast(list[tuple[str, str]], field.choices)) > 1
