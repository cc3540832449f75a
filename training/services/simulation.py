"""The active-learning simulation through the product's own services.

``ml.simulation`` measures strategies on cached features with no database; this module runs a
campaign through what crowdloop runs in production (``items_import``, ``round_select``,
``classifications_ingest``, ``labels_aggregate``, the training service, ``items_score``) with
``ml.crowd.SimulatedCrowd`` voting, and records test mAP on held-out images against the
classifications spent. Only the Zooniverse push is stood in for: a round's picks become subjects
directly. Each campaign runs in one transaction, rolled back, with its files in a folder of its
own; it holds that transaction for its whole length, so run long simulations against a scratch
database. ``SimulationConfig.scenario`` picks the images and the crowd from ``ml.scenarios``:
"easy" (digit mosaics, the default crowd) or "hard" (long-tailed, cluttered, a noisier crowd).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
from django.db import transaction
from django.test.utils import override_settings
from PIL import Image

from ml.crowd import DEFAULT_CROWD, SimulatedCrowd
from ml.metrics import mean_average_precision
from ml.mosaics import DIGIT_KEYS, digit_vocabulary
from ml.scenarios import scenario_crowd, scenario_pool
from ml.simulation import Curve, budget_to_reach

#: The workflow version the simulated classifications claim; answers are concept keys, which the
#: wildcard answer map of ``workflow_configure`` resolves for any version.
WORKFLOW_ID = 1
WORKFLOW_VERSION = "1.1"

_T = TypeVar("_T")


class SimulationError(RuntimeError):
    """A campaign could not go on (no model could be trained, no item left to pick)."""


@dataclass(frozen=True)
class SimulationConfig:
    """One simulation: every strategy, each over every seed, on the same pool and test set.

    Attributes:
        strategies: ``ml.acquisition`` strategies; ``random`` is the anchor of the table.
        seeds: one campaign per strategy and seed (volunteers, random picks, training).
        rounds: rounds after the seed round.
        items_per_round: K, items per round (a random control share of them).
        votes: V, classifications per item and round.
        seed_round: items of the first round (a cold start: no model yet).
        pool: mosaics volunteers can be asked about.
        test_items: held-out mosaics the mAP is measured on.
        epochs, image_size, widths: the training run's small CNN.
        random_share: the random control share of every round.
        relabel: let contested items compete for places (ActiveLab's relabel-or-new); None:
            ACQUISITION_RELABEL.
        scenario: ``ml.scenarios`` scenario, "easy" (digit mosaics) or "hard"; the hard
            scenario's crowd gives one to three votes per item, whatever ``votes`` says.
    """

    strategies: tuple[str, ...] = ("random", "entropy")
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 5
    items_per_round: int = 50
    votes: int = 3
    seed_round: int = 50
    pool: int = 600
    test_items: int = 300
    epochs: int = 10
    image_size: int = 32
    widths: tuple[int, ...] = (16, 32, 64)
    random_share: float = 0.15
    relabel: bool | None = None
    scenario: str = "easy"

    def train_params(self, seed: int) -> dict:
        return {
            "backbone": "small_cnn",
            "mode": "finetune",
            "epochs": self.epochs,
            "batch_size": 32,
            "lr": 3e-3,
            "seed": seed,
            "hflip": False,
            "dropout": 0.2,
            "model_kwargs": {"widths": list(self.widths), "input_size": self.image_size},
        }

    @property
    def steps(self) -> int:
        """Trainings in the whole simulation: the ceiling, then each round of each campaign."""
        return 1 + len(self.strategies) * len(self.seeds) * (self.rounds + 1)


@dataclass(frozen=True)
class TableRow:
    strategy: str
    final_map: float
    to_95_full: int | None  # classifications to reach 95% of the full-data mAP
    to_random_final: int | None  # classifications to reach random's final mAP
    ratio_to_random: float | None  # to_random_final / random's classifications
    never_below_random: bool


@dataclass
class SimulationResult:
    config: SimulationConfig
    ceiling: float
    curves: dict[str, list[Curve]] = field(default_factory=dict)

    def mean_curve(self, strategy: str) -> Curve:
        runs = self.curves[strategy]
        return Curve(
            strategy=strategy,
            seed=-1,
            classifications=[int(x) for x in np.mean([c.classifications for c in runs], axis=0)],
            test_map=[float(x) for x in np.nanmean([c.test_map for c in runs], axis=0)],
        )

    def table(self) -> list[TableRow]:
        anchor = self.mean_curve("random") if "random" in self.curves else None
        rows = []
        for strategy in self.curves:
            mean = self.mean_curve(strategy)
            to_random = ratio = None
            never_below = True
            if anchor is not None:
                to_random = budget_to_reach(mean, anchor.test_map[-1])
                ratio = to_random / anchor.classifications[-1] if to_random else None
                never_below = all(
                    a >= b - 1e-9 for a, b in zip(mean.test_map, anchor.test_map, strict=True)
                )
            rows.append(
                TableRow(
                    strategy=strategy,
                    final_map=mean.test_map[-1],
                    to_95_full=budget_to_reach(mean, 0.95 * self.ceiling),
                    to_random_final=to_random,
                    ratio_to_random=ratio,
                    never_below_random=never_below,
                )
            )
        return rows

    def table_text(self) -> str:
        lines = [
            f"full-data mAP (whole pool, true labels): {self.ceiling:.3f}",
            f"{'strategy':>16} {'final mAP':>10} {'to 95% full':>12} {'to random final':>16} "
            f"{'ratio':>6} {'never below random':>19}",
        ]
        for row in self.table():
            lines.append(
                f"{row.strategy:>16} {row.final_map:>10.3f} {_budget(row.to_95_full):>12} "
                f"{_budget(row.to_random_final):>16} "
                f"{'n/a' if row.ratio_to_random is None else f'{row.ratio_to_random:.2f}':>6} "
                f"{str(row.never_below_random):>19}"
            )
        return "\n".join(lines)


def _budget(value: int | None) -> str:
    return "never" if value is None else str(value)


@dataclass(frozen=True)
class _Data:
    manifest: Path
    index: dict[str, int]  # external id -> row of ``truth``
    truth: np.ndarray  # (pool, 10) bool
    test_sources: list[str]
    test_truth: np.ndarray  # (test_items, 10) bool
    scale: np.ndarray | None = None  # (pool, 10) object sizes, for volunteers who miss small ones


def _write_data(config: SimulationConfig, root: Path) -> _Data:
    """The pool as PNGs and a manifest (as a collection would deliver it), and the test set."""
    pool_dir, test_dir = root / "pool", root / "test"
    pool_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    pool = scenario_pool(config.scenario, config.pool, seed=101, size=config.image_size)
    test = scenario_pool(config.scenario, config.test_items, seed=202, size=config.image_size)
    index: dict[str, int] = {}
    manifest = pool_dir / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["external_id", "image", "title"])
        for i, image in enumerate(pool.images):
            external_id = f"sim-{i:05d}"
            Image.fromarray(image).save(pool_dir / f"{external_id}.png")
            writer.writerow([external_id, f"{external_id}.png", f"{config.scenario} image {i}"])
            index[external_id] = i
    sources = []
    for i, image in enumerate(test.images):
        path = test_dir / f"test-{i:05d}.png"
        Image.fromarray(image).save(path)
        sources.append(str(path))
    return _Data(manifest, index, pool.labels, sources, test.labels, pool.scale)


def _setup(data: _Data) -> None:
    from annotate.services.items import items_import
    from annotate.services.vocabulary import vocabulary_load
    from annotate.services.zooniverse.workflows import workflow_configure

    vocabulary_load(entries=digit_vocabulary())
    items_import(path=data.manifest)
    workflow_configure(workflow_id=WORKFLOW_ID)


def _train(params: dict) -> tuple[object | None, str]:
    """Train a model version on the final labels now; (the version or None, what happened)."""
    from training.models import ModelVersion
    from training.services.dataset import TrainingDataError
    from training.services.execute import training_run_execute
    from training.services.runs import training_run_request
    from training.services.versions import model_version_promote

    try:
        run, _ = training_run_request(trigger="command", params=params)
    except TrainingDataError as exc:
        return None, str(exc)
    # The run's message would be sent on commit, which never comes: serve it here, as the
    # worker would.
    training_run_execute(run_id=run.pk, worker_id="simulation")
    version = ModelVersion.objects.filter(training_run_id=run.pk).first()
    if version is None:
        run.refresh_from_db()
        return None, f"training run {run.status}: {run.error}"
    if version.status != ModelVersion.Status.ACTIVE:
        # The simulation retrains every round, as ml.simulation does; a new validation split
        # must not keep an older model choosing the rounds.
        model_version_promote(version=version, confirm=True)
        version.refresh_from_db()
    return version, "trained"


def _score_pool(version) -> None:
    from training.services.scoring import items_score, pool_items

    items_score(version, list(pool_items().order_by("pk").values_list("pk", "image_file")))


def _test_map(version, data: _Data) -> float:
    from training.services.scoring import probabilities

    probs, ok, _ = probabilities(version, data.test_sources)
    return mean_average_precision(data.test_truth[ok], probs[ok].astype(np.float64))


class _Crowd:
    """Simulated volunteers whose votes arrive as classifications through the ingest service."""

    def __init__(self, data: _Data, *, seed: int, votes: int, scenario: str = "easy") -> None:
        from annotate.models import ImportReport, Workflow

        kind = scenario_crowd(scenario)
        self.data = data
        self.votes: int | tuple[int, int] = kind.votes or votes
        self.crowd = SimulatedCrowd(seed=seed, mix=dict(kind.mix or DEFAULT_CROWD))
        self.workflow = Workflow.objects.get(zooniverse_id=WORKFLOW_ID)
        self.report = ImportReport.objects.create(kind=ImportReport.Kind.CLASSIFICATIONS)
        self.next_id = 1
        self.start = datetime(2026, 1, 1, tzinfo=UTC)

    def classify(self, round_) -> int:
        """Volunteers classify a round's picks (new items get a subject first); returns the
        number of classifications stored."""
        from annotate.models import Subject
        from annotate.services.classifications import ClassificationRecord, classifications_ingest

        picks = list(round_.picks.select_related("item").order_by("rank"))
        subjects = dict(
            Subject.objects.filter(item__in=[p.item for p in picks]).values_list(
                "item_id", "zooniverse_id"
            )
        )
        # The stand-in for the push: one subject per new item, its id the item's.
        Subject.objects.bulk_create(
            Subject(zooniverse_id=p.item_id, item=p.item, round=round_, priority=p.rank)
            for p in picks
            if p.item_id not in subjects
        )
        subjects.update({p.item_id: p.item_id for p in picks if p.item_id not in subjects})
        rows = np.array([self.data.index[p.item.external_id] for p in picks])
        subject_of_row = {self.data.index[p.item.external_id]: subjects[p.item_id] for p in picks}
        item_rows, workers, ticks = self.crowd.classify(
            self.data.truth, rows, self.votes, scale=self.data.scale
        )
        records = []
        for row, worker, tick in zip(item_rows.tolist(), workers.tolist(), ticks, strict=True):
            records.append(
                ClassificationRecord(
                    zooniverse_id=self.next_id,
                    workflow_id=WORKFLOW_ID,
                    workflow_version=WORKFLOW_VERSION,
                    subject_ids=[subject_of_row[row]],
                    user_id=worker + 1,
                    user_name=f"volunteer-{worker + 1}",
                    created_at=self.start + timedelta(seconds=self.next_id),
                    answers=[DIGIT_KEYS[d] for d in np.flatnonzero(tick)],
                    source="export",
                )
            )
            self.next_id += 1
        counts = classifications_ingest(
            records=records, workflow=self.workflow, report=self.report
        )
        return counts.created


def _campaign(
    *,
    strategy: str,
    seed: int,
    config: SimulationConfig,
    data: _Data,
    step: Callable[[str], None],
) -> Curve:
    from annotate.models import Classification
    from annotate.services.aggregation import labels_aggregate
    from training.services.selection import SelectionError, round_select

    curve = Curve(strategy=strategy, seed=seed)
    _setup(data)
    crowd = _Crowd(data, seed=seed, votes=config.votes, scenario=config.scenario)
    size = config.seed_round
    for number in range(config.rounds + 1):
        try:
            result = round_select(
                size=size,
                strategy=strategy,
                random_share=config.random_share,
                relabel=config.relabel,
                seed=seed * 1000 + number,
            )
        except SelectionError as exc:
            raise SimulationError(f"{strategy} seed {seed} round {number}: {exc}") from exc
        crowd.classify(result.round)
        labels_aggregate()
        version, note = _train(config.train_params(seed))
        spent = Classification.objects.count()
        if version is None:
            score = curve.test_map[-1] if curve.test_map else math.nan
        else:
            _score_pool(version)
            score = _test_map(version, data)
        curve.classifications.append(spent)
        curve.test_map.append(score)
        step(
            f"{strategy} seed {seed} round {number}: {spent} classifications, "
            f"test mAP {score:.3f}" + ("" if version else f" ({note})")
        )
        size = config.items_per_round
    return curve


def _ceiling(config: SimulationConfig, data: _Data, step: Callable[[str], None]) -> float:
    """Test mAP of the same training on the whole pool with its true labels (curated)."""
    from annotate.models import Item

    _setup(data)
    items = list(Item.objects.all())
    for item in items:
        item.review_state = Item.ReviewState.ACCEPTED
        item.curated_concepts = [
            DIGIT_KEYS[d] for d in np.flatnonzero(data.truth[data.index[item.external_id]])
        ]
    Item.objects.bulk_update(items, ["review_state", "curated_concepts"], batch_size=500)
    version, note = _train(config.train_params(0))
    if version is None:
        raise SimulationError(f"the full-data model could not be trained: {note}")
    score = _test_map(version, data)
    step(f"full data: {len(items)} items with true labels, test mAP {score:.3f}")
    return score


def _isolated(root: Path):
    """Settings for one campaign: its own files, no automatic retrains, tasks in-process."""
    return override_settings(
        MEDIA_ROOT=root / "media",
        ARTIFACT_ROOT=root / "artifacts",
        TRAIN_AFTER_NEW_LABELS=0,
        CELERY_TASK_ALWAYS_EAGER=True,
    )


def _rolled_back(func: Callable[[], _T]) -> _T:
    with transaction.atomic():
        try:
            return func()
        finally:
            transaction.set_rollback(True)


def simulation_run(
    *, config: SimulationConfig, workdir: Path, step: Callable[[str], None] | None = None
) -> SimulationResult:
    """Run every campaign of ``config`` and the full-data ceiling; files go under ``workdir``.

    Args:
        config: what to simulate.
        workdir: a folder for the images, the campaigns' media and checkpoints.
        step: called once per training (``config.steps`` in all) with a line to show.

    Raises:
        SimulationError: a campaign could not go on.
    """
    from annotate.models import Item

    if Item.objects.exists():
        raise SimulationError(
            "the database already holds items: run the simulation against an empty (scratch) "
            "database, e.g. DATABASE_URL=sqlite:///var/simulation.sqlite3 after migrate"
        )
    say = step or (lambda text: None)
    data = _write_data(config, workdir / "data")
    with _isolated(workdir / "ceiling"):
        ceiling = float(_rolled_back(lambda: _ceiling(config, data, say)))
    result = SimulationResult(config=config, ceiling=ceiling)
    for seed in config.seeds:
        for strategy in config.strategies:
            with _isolated(workdir / f"{strategy}-{seed}"):
                curve = _rolled_back(
                    lambda s=strategy, sd=seed: _campaign(  # type: ignore[misc]  # mypy infers no lambda with default arguments; _campaign returns a Curve
                        strategy=s, seed=sd, config=config, data=data, step=say
                    )
                )
            result.curves.setdefault(strategy, []).append(curve)
    return result


def simulation_plot(result: SimulationResult, path: Path) -> Path:
    """The learning curves (mean over seeds, min-max band) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, runs in result.curves.items():
        mean = result.mean_curve(strategy)
        maps = np.array([c.test_map for c in runs])
        ax.plot(mean.classifications, mean.test_map, marker="o", ms=3, label=strategy)
        if len(runs) > 1:
            ax.fill_between(mean.classifications, maps.min(axis=0), maps.max(axis=0), alpha=0.12)
    ax.axhline(result.ceiling, ls="--", c="grey", lw=1, label="full data, true labels")
    ax.axhline(0.95 * result.ceiling, ls=":", c="grey", lw=1, label="95% of full data")
    ax.set_xlabel("volunteer classifications")
    ax.set_ylabel("test mAP")
    ax.set_title("Active learning through crowdloop's services (simulated crowd)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def simulation_write_table(result: SimulationResult, path: Path) -> Path:
    """The table as CSV: one row per strategy, and the mean curve of each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["strategy", "final_map", "classifications_to_95pct_full_map",
             "classifications_to_random_final_map", "ratio_to_random", "never_below_random",
             "full_data_map"]
        )
        for row in result.table():
            writer.writerow(
                [row.strategy, f"{row.final_map:.4f}", row.to_95_full or "",
                 row.to_random_final or "",
                 "" if row.ratio_to_random is None else f"{row.ratio_to_random:.3f}",
                 row.never_below_random, f"{result.ceiling:.4f}"]
            )
    return path
