from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.services.datasets.export import dataset_export
from annotate.services.datasets.writers import FILE_NAMES, FORMATS


def _out_path(out: Path, fmt: str) -> Path:
    """Where the export goes: a folder given for a one-file format receives the file under the
    name a release gives it; missing parent folders are created by the export. A path that runs
    through a file, or a file given for an imagefolder, is refused before anything is written."""
    if fmt == "imagefolder":
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out {out} is a file: imagefolder writes a folder")
    elif out.is_dir():
        out = out / FILE_NAMES[fmt]
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(f"--out {out}: {parent} is a file, not a folder")
            break
    return out


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0.5 <= value <= 1.0:
        raise ValueError("between 0.5 and 1")
    return value


class Command(BaseCommand):
    help = (
        "Export the final labels (curator's where reviewed, else the crowd's) as CSV, JSONL, "
        "W3C Web Annotation JSON-LD or a Hugging Face image folder, with a manifest of counts "
        "and sha256 hashes. With --release, make a versioned, immutable release in all formats "
        "(or those given with --format) as a background job instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            dest="formats",
            action="append",
            choices=FORMATS,
            help="csv, jsonl, webannotation or imagefolder (repeat it with --release)",
        )
        parser.add_argument(
            "--out", type=Path, help="file to write (a folder for imagefolder); not with --release"
        )
        parser.add_argument(
            "--reviewed-only", action="store_true", help="only items a curator accepted or edited"
        )
        parser.add_argument(
            "--min-confidence",
            type=_confidence,
            metavar="P",
            help="keep crowd items whose every posterior is >= P or <= 1-P (0.5 to 1)",
        )
        parser.add_argument(
            "--concepts", help="comma-separated concept keys to keep (default: all active)"
        )
        parser.add_argument(
            "--release", action="store_true", help="make a versioned release under ARTIFACT_ROOT"
        )
        parser.add_argument("--note", default="", help="a note stored with the release")
        parser.add_argument(
            "--proposals",
            action="store_true",
            help="export the active model's enrichment proposals for items with no final label "
            "(machine-generated) instead of the final labels",
        )

    def handle(self, *args, **options) -> None:
        formats: list[str] = options["formats"] or []
        concepts = [k.strip() for k in (options["concepts"] or "").split(",") if k.strip()]
        try:
            if options["release"]:
                self._release(formats, concepts, options)
                return
            if len(formats) != 1 or options["out"] is None:
                raise CommandError("give exactly one --format and --out (or use --release)")
            out = _out_path(options["out"], formats[0])
            result = dataset_export(
                fmt=formats[0],
                out=out,
                reviewed_only=options["reviewed_only"],
                min_confidence=options["min_confidence"],
                concepts=concepts or None,
                kind="proposals" if options["proposals"] else "labels",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            # A folder that cannot be written, a full disk: say where and why, not a traceback.
            where = exc.filename or options["out"]
            raise CommandError(
                f"cannot write the export to {where}: {exc.strerror or exc}"
            ) from exc
        self.stdout.write(f"export_dataset {result.summary()}")

    def _release(self, formats: list[str], concepts: list[str], options: dict) -> None:
        from annotate.models import DatasetRelease
        from annotate.services.releases import release_dir, release_request

        if options["out"] is not None:
            raise CommandError("--out is not used with --release: releases live in ARTIFACT_ROOT")
        release = release_request(
            user=None,
            reviewed_only=options["reviewed_only"],
            min_confidence=options["min_confidence"],
            concepts=concepts or None,
            formats=formats or None,
            note=options["note"],
            kind="proposals" if options["proposals"] else "labels",
        )
        release.refresh_from_db()  # eager mode (no Redis) has built it by now
        if release.status == DatasetRelease.Status.FAILED:
            raise CommandError(f"release {release.version} failed: {release.error}")
        if release.status == DatasetRelease.Status.SUCCEEDED:
            self.stdout.write(
                f"export_dataset release {release.version}: {release.n_items} items, "
                f"{'+'.join(release.formats)}, content {release.content_hash[:12]}, "
                f"in {release_dir(release)}"
            )
        else:
            self.stdout.write(
                f"export_dataset release {release.version} {release.status}: "
                "a worker is building it"
            )
