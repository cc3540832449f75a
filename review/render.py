"""HTML fragments the workbench builds in Python: lists long enough that the template engine's
per-node cost shows (an item with 10 voters on 20 concepts has 200 vote entries, 70 ms of template
rendering against 3 ms here). Everything interpolated is escaped by ``format_html``."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from annotate.selectors import VoterVote


class VoterLinks:
    """Each volunteer's admin page and queue of items, reversed once per volunteer."""

    def __init__(self) -> None:
        self._links: dict[int, tuple[str, str]] = {}
        self._queue = reverse("review:queue")

    def __call__(self, volunteer_id: int) -> tuple[str, str]:
        if volunteer_id not in self._links:
            self._links[volunteer_id] = (
                reverse("admin:annotate_volunteer_change", args=[volunteer_id]),
                f"{self._queue}?volunteer={volunteer_id}&state=all",
            )
        return self._links[volunteer_id]


def _skill(vote: VoterVote) -> str:
    if vote.sensitivity is None:
        return "skill not estimated yet"
    return f"se {vote.sensitivity:.2f} · sp {vote.specificity:.2f}"


def votes_html(votes: list[VoterVote], links: VoterLinks) -> SafeString:
    """One concept's votes as list items: ✓/✗, the volunteer linked to their page, their
    sensitivity and specificity on the concept, and a link to every item they classified."""
    return format_html_join(
        "",
        '<li class="{}">{} <a href="{}">{}</a> <span class="cl-skill" title="this volunteer\'s '
        "sensitivity (ticks it when present) and specificity (leaves it when absent) on this "
        'concept">{}</span>{} <a class="cl-voter-items" href="{}" title="every item this '
        'volunteer classified">items</a></li>',
        (
            (
                ("cl-vote-for" if vote.ticked else "cl-vote-against")
                + (" cl-vote-excluded" if vote.excluded else ""),
                "✓" if vote.ticked else "✗",
                links(vote.volunteer_id)[0],
                vote.name,
                _skill(vote),
                format_html(" <em>{}</em>", "excluded") if vote.excluded else "",
                links(vote.volunteer_id)[1],
            )
            for vote in votes
        ),
    )
