from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ml.acquisition import list_strategies
from ml.scenarios import SCENARIOS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


class Command(BaseCommand):
    help = (
        "Simulate active learning through crowdloop's own services (import, classification "
        "ingest, aggregation, training, round_select) on digit mosaics with known truth and a "
        "simulated crowd: test mAP against classifications per strategy, a learning-curve PNG and "
        "a table of the classifications each strategy needs to reach 95%% of the full-data mAP. "
        "Needs an empty (scratch) database; every campaign is rolled back. --scenario hard: "
        "long-tailed concepts among clutter at 64 px, with a noisier crowd (ml.scenarios)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--strategies", default="",
                            help="comma-separated, of: "
                            f"{', '.join(list_strategies())} (default: random and the "
                            "configured ACQUISITION_STRATEGY)")
        parser.add_argument("--strategy", help="one strategy, compared with random")
        parser.add_argument("--seeds", type=_ints, default=(0, 1, 2), help="e.g. 0,1,2")
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--items-per-round", type=int, default=50)
        parser.add_argument("--votes", type=int, default=3)
        parser.add_argument("--seed-round", type=int, default=50)
        parser.add_argument("--pool", type=int, default=600)
        parser.add_argument("--test-items", type=int, default=300)
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument("--random-share", type=float, default=0.15)
        parser.add_argument("--scenario", choices=SCENARIOS, default="easy",
                            help="easy: digit mosaics, the default crowd; hard: ml.scenarios' "
                            "long-tailed, cluttered images and noisier crowd (1-3 votes an item)")
        parser.add_argument("--image-size", type=int, default=None,
                            help="image side in pixels (default: 32 easy, 64 hard)")
        relabel = parser.add_mutually_exclusive_group()
        relabel.add_argument("--relabel", dest="relabel", action="store_true", default=None,
                             help="let contested items compete for places")
        relabel.add_argument("--no-relabel", dest="relabel", action="store_false",
                             help="new items only (default: ACQUISITION_RELABEL)")
        parser.add_argument("--out", type=Path, default=Path("var/simulation"),
                            help="where the PNG and the table go")

    def handle(self, *args, **options) -> None:
        from tqdm import tqdm

        from training.services.simulation import (
            SimulationConfig,
            SimulationError,
            simulation_plot,
            simulation_run,
            simulation_write_table,
        )

        strategies = [s for s in options["strategies"].split(",") if s] or [
            "random", settings.ACQUISITION_STRATEGY
        ]
        if options["strategy"]:
            strategies = ["random", options["strategy"]]
        strategies = list(dict.fromkeys(strategies))
        unknown = [s for s in strategies if s not in list_strategies()]
        if unknown:
            raise CommandError(
                f"unknown strategy {unknown[0]!r}; use {', '.join(list_strategies())}"
            )
        for name in ("rounds", "items_per_round", "votes", "seed_round", "pool", "test_items",
                     "epochs"):
            if options[name] < (0 if name == "rounds" else 1):
                raise CommandError(f"--{name.replace('_', '-')} is too small")
        if not options["seeds"]:
            raise CommandError("--seeds needs at least one seed")
        config = SimulationConfig(
            strategies=tuple(strategies), seeds=options["seeds"], rounds=options["rounds"],
            items_per_round=options["items_per_round"], votes=options["votes"],
            seed_round=options["seed_round"], pool=options["pool"],
            test_items=options["test_items"], epochs=options["epochs"],
            random_share=options["random_share"], relabel=options["relabel"],
            scenario=options["scenario"],
            image_size=options["image_size"] or (64 if options["scenario"] == "hard" else 32),
        )
        bar = tqdm(total=config.steps, unit="training", file=self.stderr, dynamic_ncols=True)

        def step(line: str) -> None:
            bar.update(1)
            bar.write(line, file=self.stderr)

        try:
            with tempfile.TemporaryDirectory(prefix="crowdloop-sim-") as tmp:
                result = simulation_run(config=config, workdir=Path(tmp), step=step)
        except SimulationError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        out: Path = options["out"]
        png = simulation_plot(result, out / "active_learning.png")
        table = simulation_write_table(result, out / "active_learning.csv")
        votes = "1-3" if config.scenario == "hard" else config.votes
        self.stdout.write(result.table_text())
        self.stdout.write(
            f"simulate_active_learning: {len(config.seeds)} seeds x {len(strategies)} strategies, "
            f"{config.rounds} rounds of {config.items_per_round} items x {votes} votes, "
            f"scenario {config.scenario}; "
            f"curves {png}, table {table}"
        )
