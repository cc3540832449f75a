from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.services.zooniverse.workflows import (
    WorkflowConfigError,
    workflow_configure,
    workflow_subject_match_set,
)


class Command(BaseCommand):
    help = (
        "Map a Zooniverse workflow's answers to concepts, by concept key or label, "
        "case-insensitively. With --workflow-export, one answer map per workflow version "
        "(version.minor_version); without, a wildcard map of the active concepts that export "
        "labels of any version resolve through. Unmapped answers are kept and reported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow-id", type=int, required=True)
        parser.add_argument(
            "--task", default=None, help="task key (default: the export's first task, else T0)"
        )
        parser.add_argument(
            "--workflow-export", type=Path, default=None, help="workflow export CSV"
        )
        parser.add_argument(
            "--match-key",
            default=None,
            help=(
                "how subjects find their items: 'subject_id' (subjects brought in by "
                "import_subjects), a subject metadata key holding the item's external id "
                "('!europeana_id', 'Filename'), or '' for the built-in keys (external_id, "
                "europeana_id, crowdloop_id)"
            ),
        )

    def handle(
        self,
        *args,
        workflow_id: int,
        task: str | None,
        workflow_export: Path | None,
        match_key: str | None,
        **options,
    ) -> None:
        try:
            result = workflow_configure(
                workflow_id=workflow_id, task_key=task, export_path=workflow_export
            )
        except WorkflowConfigError as exc:
            raise CommandError(str(exc)) from exc
        for row in result.refused_rows[:20]:
            self.stderr.write(f"{workflow_export}:{row.line}: {row.field}: {row.reason}")
        self.stdout.write(f"configure_workflow: {result.summary()}")
        if match_key is not None:
            try:
                workflow, linked = workflow_subject_match_set(
                    workflow_id=workflow_id, match=match_key
                )
            except WorkflowConfigError as exc:
                raise CommandError(str(exc)) from exc
            shown = workflow.subject_match or "the built-in keys"
            self.stdout.write(
                f"configure_workflow: subjects find their items by {shown}; "
                f"{linked} items got votes that were waiting"
            )
