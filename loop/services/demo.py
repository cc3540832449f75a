"""The offline demo: a vocabulary, real images with known labels, and the people who use them.

Images are 2x2 mosaics of scikit-learn's handwritten digits (``ml.mosaics``): the concepts are the
ten digits, an image's true labels are the digits it shows. The manifest's prior labels are the
truth with noise added, as earlier enrichments are: some digits dropped, some invented.

``demo --scenario hard`` makes the items from ``ml.scenarios``' hard scenario instead: the same
ten digits, long-tailed (the commonest in 40% of the images, the rarest in 1.5%), at random
places and scales among clutter, partly hidden, on noisy backgrounds. Its volunteers are the
hard scenario's crowd too (``ml.scenarios.HARD_CROWD`` and ``HARD_VOTES``, the benches' own):
careful and careless volunteers who miss small digits, 15% spammers, one to three votes per
subject; the truth the stand-in's crowd reads carries each digit's size for them.
"""

from __future__ import annotations

import csv
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q
from PIL import Image

from annotate.roles import ADMIN, CURATOR, roles_setup
from annotate.zooniverse.sandbox import CrowdConfig
from ml.mosaics import DIGIT_KEYS, digit_vocabulary
from ml.scenarios import scenario_pool

DEMO_DIR_NAME = "demo"


@dataclass(frozen=True)
class DemoManifest:
    path: Path
    truth: dict[str, list[str]]  # external id -> true concept keys
    #: external id -> {concept key: side of its biggest instance, a share of the image side};
    #: the hard scenario's only (the mosaics have one scale), empty otherwise.
    scales: dict[str, dict[str, float]] = field(default_factory=dict)

    def crowd_truth(self) -> dict[str, list[str] | dict[str, float]]:
        """The truth as the stand-in's crowd reads it (``var/demo/truth.json``): the keys of each
        item, with their sizes where the scenario has them (``{key: size}``), so volunteers who
        miss small objects miss them."""
        return {ext: self.scales.get(ext, keys) if keys else [] for ext, keys in self.truth.items()}


def demo_dir() -> Path:
    path = Path(settings.VAR_DIR) / DEMO_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_vocabulary() -> list[dict[str, str]]:
    return digit_vocabulary()


#: Per scenario: the items' external id prefix and title.
_SCENARIO_ITEMS = {
    "easy": ("mosaic", "Mosaic of handwritten digits no. "),
    "hard": ("hard", "Handwritten digits among clutter no. "),
}


def demo_manifest_write(
    *,
    n: int = 400,
    seed: int = 7,
    drop_rate: float = 0.25,
    add_rate: float = 0.04,
    scenario: str = "easy",
) -> DemoManifest:
    """Write ``n`` PNGs of ``scenario`` ("easy": digit mosaics, "hard": ``ml.scenarios``' hard
    scenario) and a CSV manifest with noisy prior labels; the same each time."""
    root = demo_dir()
    images_dir = root / "images"
    images_dir.mkdir(exist_ok=True)
    prefix, title_text = _SCENARIO_ITEMS[scenario]
    mosaics = scenario_pool(scenario, n, seed=seed, size=64)
    rng = np.random.default_rng(seed + 1)
    noisy = mosaics.labels.copy()
    noisy[mosaics.labels & (rng.random(noisy.shape) < drop_rate)] = False
    noisy[~mosaics.labels & (rng.random(noisy.shape) < add_rate)] = True

    truth: dict[str, list[str]] = {}
    scales: dict[str, dict[str, float]] = {}
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["external_id", "image", "title", "prior_labels", "provider"])
        for i in range(n):
            external_id = f"{prefix}-{seed}-{i:05d}"
            image_path = images_dir / f"{external_id}.png"
            if not image_path.exists():
                Image.fromarray(mosaics.images[i]).save(image_path, optimize=True)
            keys = [DIGIT_KEYS[d] for d in np.flatnonzero(mosaics.labels[i])]
            truth[external_id] = keys
            if mosaics.scale is not None and keys:
                scales[external_id] = {
                    DIGIT_KEYS[d]: round(float(mosaics.scale[i, d]), 4)
                    for d in np.flatnonzero(mosaics.labels[i])
                }
            prior = ";".join(DIGIT_KEYS[d] for d in np.flatnonzero(noisy[i]))
            title = title_text + str(i + 1)
            writer.writerow(
                [external_id, f"images/{image_path.name}", title, prior, "scikit-learn"]
            )
    return DemoManifest(path=path, truth=truth, scales=scales)


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str


def demo_accounts() -> list[DemoAccount]:
    """A curator and an admin with fresh random passwords, each in its role's group
    (``annotate.roles``), written to var/demo/credentials.txt."""
    user_model = get_user_model()
    roles_setup()
    accounts = []
    for username, role in (("curator", CURATOR), ("admin", ADMIN)):
        password = secrets.token_urlsafe(9)
        user, _ = user_model.objects.get_or_create(username=username)
        user.is_staff = True  # both use the admin
        user.is_superuser = role == ADMIN
        user.set_password(password)
        user.save()
        user.groups.add(Group.objects.get(name=role))
        accounts.append(DemoAccount(username=username, password=password, role=role))
    lines = [f"{a.role}: {a.username} / {a.password}" for a in accounts]
    (demo_dir() / "credentials.txt").write_text("\n".join(lines) + "\n")
    return accounts


@dataclass
class DemoLoopConfig:
    items: int = 600
    seed: int = 7
    first_round: int = 150
    next_rounds: tuple[int, ...] = (120,)
    #: The workflow's retirement count: the easy crowd's votes per subject, and the most the
    #: hard crowd gives (one to three, ``ml.scenarios.HARD_VOTES``).
    votes_per_subject: int = 5
    volunteers: int = 40
    #: The items and the crowd: "easy" digit mosaics and the stand-in's default volunteers, or
    #: the "hard" scenario's images and crowd (``ml.scenarios``).
    scenario: str = "easy"
    curator_edits: int = 10
    train_params: dict | None = None
    #: How long the demo waits for the worker at each step before it gives up, in seconds.
    patience_s: float = 900.0


def demo_crowd_config(config: DemoLoopConfig) -> CrowdConfig:
    """The simulated volunteers of the demo's scenario (``CrowdConfig.for_scenario``): the
    stand-in's default crowd for "easy", ``ml.scenarios.HARD_CROWD`` with ``HARD_VOTES`` for
    "hard"."""
    return CrowdConfig.for_scenario(
        config.scenario,
        n_volunteers=config.volunteers,
        anonymous_share=0.2,
        repeat_rate=0.03,
        gold_share=0.02,
        seed=config.seed,
    )


def demo_crowd(config: DemoLoopConfig) -> dict[str, object]:
    """The simulated volunteers, as the sandbox's ``CrowdConfig`` fields (JSON)."""
    return demo_crowd_config(config).to_json()


_PROFILE_NAMES = {"careful": "careful", "careless": "careless", "spammer": "spammers"}


def demo_crowd_text(config: DemoLoopConfig) -> str:
    """One line on who the volunteers are, for the demo's narrative."""
    crowd = demo_crowd_config(config)
    total = sum(crowd.mix.values())
    kinds = []
    for name, weight in crowd.mix.items():
        profile = crowd.profiles[name]
        if profile.ignores_subject:
            how = f"tick any digit with {profile.false_positive:.0%}, whatever they see"
        else:
            how = (f"tick {profile.sensitivity:.0%} of the digits they see, "
                   f"{profile.false_positive:.0%} of the others")
            if profile.half_seen_scale > 0:
                how += (f"; miss half of those {profile.half_seen_scale:.0%} of the image side, "
                        "more of the smaller")
        kinds.append(f"{weight / total:.0%} {_PROFILE_NAMES.get(name, name)} ({how})")
    if crowd.votes_per_subject is None:
        votes = f"{config.votes_per_subject} votes per subject (the retirement count)"
    else:
        low, high = crowd.votes_per_subject
        votes = (f"{low} to {min(high, config.votes_per_subject)} votes per subject, drawn for "
                 "each")
    origin = {"easy": "the stand-in's default crowd",
              "hard": "the hard scenario's crowd (ml.scenarios.HARD_CROWD, HARD_VOTES)"}
    return (f"{origin.get(config.scenario, config.scenario)}: {crowd.n_volunteers} volunteers, "
            f"{', '.join(kinds)}; {votes}")


def demo_prepare(*, config: DemoLoopConfig, say: Callable[[str], None]) -> DemoManifest:
    """The digits as the vocabulary, the scenario's images as items, and the truth for the
    stand-in's volunteers (``var/demo/truth.json``, with the digits' sizes for the hard one)."""
    import json

    from annotate.services.items import items_import
    from annotate.services.vocabulary import vocabulary_load

    vocabulary_load(entries=demo_vocabulary())
    what = {"easy": "mosaics of handwritten digits",
            "hard": "images of the hard scenario (long-tailed digits among clutter)"}
    say(f"images: {config.items} {what[config.scenario]}, with noisy prior labels")
    manifest = demo_manifest_write(n=config.items, seed=config.seed, scenario=config.scenario)
    _, counts = items_import(path=manifest.path)
    say(f"  {counts.summary()}")
    (demo_dir() / "truth.json").write_text(json.dumps(manifest.crowd_truth()))
    return manifest


def _sandbox_post(endpoint: str, route: str, body: dict[str, object]) -> dict:
    import requests

    response = requests.post(f"{endpoint}/_sandbox/{route}", json=body, timeout=600)
    response.raise_for_status()
    return response.json()


def demo_wait(
    what: str, done: Callable[[], bool], *, patience_s: float, say: Callable[[str], None],
    poll_s: float = 1.0,
) -> None:
    """Wait for the worker to do ``what``; say so every half minute; fail after ``patience_s``."""
    started = time.monotonic()
    told = started
    while not done():
        now = time.monotonic()
        if now - started > patience_s:
            raise TimeoutError(
                f"waited {patience_s:.0f} s for {what}: is the Celery worker running?"
            )
        if now - told >= 30:
            say(f"  ... still waiting for {what} ({now - started:.0f} s)")
            told = now
        time.sleep(poll_s)


def _loop_idle(*names: str) -> Callable[[], bool]:
    from django.db.models import F

    from loop.models import LoopStep

    def idle() -> bool:
        busy = LoopStep.objects.filter(name__in=names).filter(
            Q(request_seq__gt=F("served_seq")) | Q(running_since__isnull=False)
        )
        return not busy.exists()

    return idle


def _last_summary(step: str) -> str:
    from loop.models import LoopEvent

    event = LoopEvent.objects.filter(step=step).first()
    return f"{event.status}: {event.summary}" if event else "never ran"


def demo_loop(
    *,
    config: DemoLoopConfig,
    manifest: DemoManifest,
    endpoint: str,
    say: Callable[[str], None],
) -> dict[str, object]:
    """The scripted rounds, against the Zooniverse stand-in at ``endpoint``, with a worker.

    round 1 (cold start) pushed -> volunteers classify -> pull -> the loop aggregates and retires
    -> a curator corrects a few labels -> a training run (the loop's own once enough labels are
    new, else one asked for) -> round 2 chosen by the model, pushed -> ... -> a dataset release.
    Aggregation, retirement, training and the release run in the worker, as in production: this
    process only asks and waits. Returns what it made, for the closing summary.
    """
    from annotate.models import Workflow
    from annotate.selectors import review_queue
    from annotate.services.releases import release_request
    from annotate.services.review import review_record
    from annotate.services.rounds import round_publish
    from annotate.services.zooniverse.pull import classifications_pull
    from annotate.services.zooniverse.workflows import workflow_versions_sync
    from annotate.zooniverse.client import connect
    from loop.models import StepName
    from training.models import ModelVersion, TrainingRun
    from training.selectors import model_version_active
    from training.services.runs import training_run_request
    from training.services.selection import round_select

    client = connect(endpoint=endpoint, client_id="crowdloop-demo", client_secret="demo")
    workflow, _ = Workflow.objects.update_or_create(
        zooniverse_id=DEMO_WORKFLOW_ID,
        defaults={"project_id": DEMO_PROJECT_ID, "display_name": "Which digits do you see?"},
    )
    versions = workflow_versions_sync(workflow=workflow, client=client)
    say(f"Zooniverse stand-in at {endpoint}: workflow {workflow.zooniverse_id}, "
        f"{versions.summary()}")
    say(f"crowd: {demo_crowd_text(config)}")
    made: dict[str, object] = {"sandbox": endpoint}
    crowd_truth = manifest.crowd_truth()
    patience = config.patience_s
    curator = get_user_model().objects.filter(username="curator").first()
    sizes = (config.first_round, *config.next_rounds)
    for number, size in enumerate(sizes, start=1):
        result = round_select(size=size, workflow=workflow, seed=config.seed + number)
        say(f"round {number}: {result.summary()}")
        say(f"  pushed: {round_publish(round=result.round, client=client)}")
        run = _sandbox_post(endpoint, "volunteers", {
            "workflow_id": workflow.zooniverse_id,
            "crowd": demo_crowd(config),
            "truth": crowd_truth,
        })
        profiles = ", ".join(f"{n} {k}" for k, n in sorted(run["by_profile"].items()))
        by_votes = ", ".join(f"{k} with {n}" for n, k in run["subjects_by_votes"].items())
        say(f"  volunteers: {run['classifications']} classifications ({profiles}); "
            f"subjects by votes: {by_votes}")
        pulled = classifications_pull(workflow=workflow, client=client)
        say(f"  pull: {pulled.summary()}")
        demo_wait("the loop to aggregate and retire",
                  _loop_idle(StepName.AGGREGATE, StepName.RETIRE), patience_s=patience, say=say)
        say(f"  loop, aggregate: {_last_summary(StepName.AGGREGATE)}")
        say(f"  loop, retire: {_last_summary(StepName.RETIRE)}")
        say(f"  crowd labels match the truth exactly on {_exact_match(manifest.truth):.1%} "
            "of the classified items")
        if curator is not None and config.curator_edits:
            fixed = 0
            for item in review_queue()[: config.curator_edits]:
                review_record(item=item, curator=curator, action="edit",
                              concepts=manifest.truth.get(item.external_id, []),
                              comment="checked against the scan")
                fixed += 1
            say(f"  curator: {fixed} contested items corrected (the audit keeps each decision)")
        demo_wait("the loop's retrain check", _loop_idle(StepName.TRAIN), patience_s=patience,
                  say=say)
        with transaction.atomic():
            train_run, created = training_run_request(
                trigger="command", params=config.train_params or DEMO_TRAIN_PARAMS
            )
        origin = (
            "asked for by the demo" if created else f"requested by the loop ({train_run.trigger})"
        )
        say(f"  train: run {train_run.pk} ({origin}), in the worker")

        def finished(run_id: int = train_run.pk) -> bool:
            return TrainingRun.objects.filter(pk=run_id, status__in=(
                TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED)).exists()

        demo_wait(f"training run {train_run.pk}", finished, patience_s=patience, say=say)
        train_run.refresh_from_db()
        version = model_version_active()
        say(
            f"  train: run {train_run.pk} {train_run.status}"
            + (f" ({train_run.error})" if train_run.error else "")
            + (
                f", active model v{version.pk} (validation mAP {version.val_map:.3f})"
                if version and version.val_map is not None
                else ""
            )
        )
        if version is not None:

            def scored(v: ModelVersion = version) -> bool:
                return type(v).objects.filter(pk=v.pk, scored_at__isnull=False).exists()

            demo_wait(f"model v{version.pk} to score the pool", scored, patience_s=patience,
                      say=say)
    release = release_request(user=curator, note="demo release")
    demo_wait(f"release v{release.version}",
              lambda: type(release).objects.filter(pk=release.pk).exclude(
                  status__in=("queued", "running")).exists(),
              patience_s=patience, say=say)
    release.refresh_from_db()
    say(
        f"release v{release.version}: {release.status}, {release.n_items} items "
        f"({release.split_counts}) in {', '.join(release.formats)}"
    )
    made["release"] = release.version
    return made


#: The stand-in's ids: a fresh sandbox's first project and workflow.
DEMO_PROJECT_ID = 1
DEMO_WORKFLOW_ID = 1


DEMO_TRAIN_PARAMS = {
    "backbone": "small_cnn",
    "mode": "finetune",
    "epochs": 8,
    "batch_size": 32,
    "lr": 3e-3,
    "hflip": False,
    "model_kwargs": {"widths": [16, 32, 64], "input_size": 64},
}


def _exact_match(truth: dict[str, list[str]]) -> float:
    """Share of classified items whose final label is exactly their true set of digits."""
    from annotate.models import Item
    from annotate.selectors import item_final_labels

    items = Item.objects.filter(n_classifications__gt=0)
    ids = dict(items.values_list("pk", "external_id"))
    final = item_final_labels(items)
    hits = [sorted(final.get(pk, [])) == sorted(truth.get(ext, [])) for pk, ext in ids.items()]
    return sum(hits) / len(hits) if hits else 0.0
