"""Counting: what one ingest did, row by row and batch by batch, and its summary line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

#: How many answer texts an import's summary names when answers map to no concept.
UNMAPPED_NAMED = 10


@dataclass(slots=True)
class IngestCounts:
    """What an ingest did. ``read`` counts every record and refused row handed in.

    ``repeats_flagged`` counts rows marked as repeats, new or stored; ``reflagged`` counts stored
    rows whose repeat flag changed because an earlier classification arrived late.
    ``task_not_shown`` counts stored rows without the workflow's task (no vote);
    ``skipped`` counts stored rows of a single-answer task answered with nothing (no vote);
    ``unmapped_answers`` counts stored rows per answer text that maps to no concept;
    ``other_workflows`` counts rows of other workflows per workflow id, skipped (a project-wide
    export holds every workflow's rows).
    """

    read: int = 0
    created: int = 0
    unchanged: int = 0
    repeats_flagged: int = 0
    repeats_cleared: int = 0
    reflagged: int = 0
    quarantined: int = 0
    #: Of ``quarantined``, the rows an earlier run of the same input stored already.
    quarantined_before: int = 0
    invalid_answers: int = 0
    unknown_versions: dict[str, int] = field(default_factory=dict)
    task_not_shown: int = 0
    skipped: int = 0
    unmapped_answers: dict[str, int] = field(default_factory=dict)
    other_workflows: dict[int, int] = field(default_factory=dict)
    #: Subjects of this ingest that match no item (their votes wait for it), the first few named.
    unmatched_subjects: int = 0
    unmatched_examples: list[int] = field(default_factory=list)
    #: Warnings about the input as a whole (the task in none of the first rows), in the summary.
    warnings: list[str] = field(default_factory=list)

    def add(self, other: IngestCounts) -> None:
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, dict):
                for key, n in getattr(other, f.name).items():
                    mine[key] = mine.get(key, 0) + n
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return (
            (
                f"read {self.read}, created {self.created}, unchanged {self.unchanged}, "
                f"repeats flagged {self.repeats_flagged}, invalid answers {self.invalid_answers}, "
                f"quarantined {self.quarantined}"
            )
            + (
                f" ({self.quarantined_before} rows quarantined before, not stored again)"
                if self.quarantined_before
                else ""
            )
            + self._votes_note()
            + (
                f", subjects matching no item {self.unmatched_subjects} "
                f"(e.g. {', '.join(map(str, self.unmatched_examples))})"
                if self.unmatched_subjects
                else ""
            )
            + "".join(f"; {warning}" for warning in self.warnings)
        )

    def _votes_note(self) -> str:
        """What was read but gave no vote: tasks not shown, unmapped answers, other workflows."""
        parts = []
        if self.task_not_shown:
            parts.append(f"task not shown {self.task_not_shown} (no vote)")
        if self.skipped:
            parts.append(f"task skipped {self.skipped} (no vote)")
        if self.unmapped_answers:
            ranked = sorted(self.unmapped_answers.items(), key=lambda pair: (-pair[1], pair[0]))
            named = ", ".join(f"{text!r} ({n})" for text, n in ranked[:UNMAPPED_NAMED])
            more = len(ranked) - UNMAPPED_NAMED
            named += f" and {more} more" if more > 0 else ""
            parts.append(f"answers mapping to no concept: {named}")
        if self.other_workflows:
            total = sum(self.other_workflows.values())
            named = ", ".join(f"{w} ({n})" for w, n in sorted(self.other_workflows.items()))
            parts.append(f"skipped {total} rows of workflows {named}")
        return "".join(f", {part}" for part in parts)
