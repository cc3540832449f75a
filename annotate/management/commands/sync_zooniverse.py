"""sync_zooniverse: pull new classifications from Zooniverse and push rounds, from the shell."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotate.models import Item, Round, Workflow
from annotate.services.zooniverse.operation import SyncConfigError
from annotate.services.zooniverse.pull import PageCommitted, classifications_pull, workflows_active
from annotate.services.zooniverse.push import round_items, round_push
from annotate.zooniverse.client import ZooniverseClient, ZooniverseError, connect


class Command(BaseCommand):
    help = (
        "Pull new Zooniverse classifications (all active workflows, or --workflow-id) from the "
        "stored cursor, and/or push a round as a subject set (--push-round). Safe to re-run: "
        "pages already stored and subjects already created are skipped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow-id", type=int, help="Zooniverse workflow id to pull")
        parser.add_argument("--push-round", type=int, metavar="R", help="round number to push")
        parser.add_argument(
            "--items",
            type=Path,
            help="with --push-round: file of item external ids, one a line, best first "
            "(default: the round's picks from select_round, else the items already pushed)",
        )
        parser.add_argument("--no-pull", action="store_true", help="only push")
        parser.add_argument("--max-pages", type=int, help="stop each pull after N pages")

    def handle(self, *args, **options) -> None:
        if not settings.PANOPTES_ENDPOINT and not (
            settings.PANOPTES_CLIENT_SECRET or settings.PANOPTES_USERNAME
        ):
            raise CommandError(
                "No Zooniverse configured: set PANOPTES_ENDPOINT (the local sandbox's address) "
                "or Zooniverse credentials."
            )
        quiet = options["verbosity"] < 1
        try:
            client = connect()
        except ZooniverseError as exc:
            raise CommandError(f"cannot connect to Zooniverse: {exc}") from exc
        parts: list[str] = []
        failures: list[str] = []

        if options["push_round"] is not None:
            try:
                parts.append(self._push(options["push_round"], options["items"], client, quiet))
            except (ZooniverseError, SyncConfigError) as exc:
                failures.append(f"push round {options['push_round']}: {exc}")

        if not options["no_pull"]:
            if options["workflow_id"] is not None:
                workflow = Workflow.objects.filter(zooniverse_id=options["workflow_id"]).first()
                if workflow is None:
                    raise CommandError(
                        f"workflow {options['workflow_id']} is not configured: run "
                        f"configure_workflow --workflow-id {options['workflow_id']} first"
                    )
                workflows = [workflow]
            else:
                workflows = workflows_active()
            for workflow in workflows:
                bar = tqdm(
                    desc=f"workflow {workflow.zooniverse_id}",
                    unit=" classifications",
                    disable=quiet,
                    leave=False,
                )

                def committed(done: PageCommitted, bar: tqdm = bar) -> None:
                    bar.update(done.counts.read)

                try:
                    result = classifications_pull(
                        workflow=workflow,
                        client=client,
                        max_pages=options["max_pages"],
                        on_batch_committed=committed,
                    )
                except (ZooniverseError, SyncConfigError) as exc:
                    failures.append(f"workflow {workflow.zooniverse_id}: {exc}")
                    continue
                finally:
                    bar.close()
                parts.append(result.summary())

        for failure in failures:
            self.stderr.write(f"sync_zooniverse: {failure}")
        summary = "; ".join(parts) or "nothing to do"
        if failures:
            raise CommandError(f"{len(failures)} failed; {summary}")
        self.stdout.write(f"sync_zooniverse: {summary}")

    def _push(
        self, number: int, items_path: Path | None, client: ZooniverseClient, quiet: bool
    ) -> str:
        round = Round.objects.select_related("workflow").filter(number=number).first()
        if round is None:
            raise CommandError(f"round {number} does not exist")
        if items_path is not None:
            try:
                wanted = [
                    line.strip() for line in items_path.read_text().splitlines() if line.strip()
                ]
            except OSError as exc:
                raise CommandError(f"{items_path}: {exc}") from exc
            found = Item.objects.in_bulk(wanted, field_name="external_id")
            missing = [w for w in wanted if w not in found]
            if missing:
                raise CommandError(
                    f"{items_path}: {len(missing)} unknown external ids, e.g. {missing[:3]}"
                )
            items = [found[w] for w in wanted]
        elif round.picks.exists():
            # A round chosen by select_round: its picks carry the ranks and the relabel choices.
            from annotate.services.rounds import round_publish

            return round_publish(round=round, client=client)
        else:
            items = round_items(round=round)
            if not items:
                self.stderr.write(
                    f"round {number} has no items recorded yet: pass --items FILE to choose them"
                )
        with tqdm(total=len(items), desc=f"round {number}", unit=" items", disable=quiet,
                  leave=False) as bar:
            result = round_push(round=round, items=items, client=client, progress=bar.update)
        for external_id, reason in result.skipped[:20]:
            self.stderr.write(f"round {number}: skipped {external_id}: {reason}")
        return result.summary()
