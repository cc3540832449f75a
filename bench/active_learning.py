"""Does active learning save volunteers' effort? A simulated campaign per strategy and seed.

The task is real images (2x2 mosaics of scikit-learn's handwritten digits; labels = the digits
shown) with simulated volunteers (careful, careless, 10% spammers, heavy-tailed activity). Each
campaign starts from a random seed round, then runs rounds of K items with V votes each, chosen by
the strategy (with the default 15% random control share); votes are aggregated with two-coin
Dawid-Skene and a head is retrained on the posteriors each round. The random strategy is the
anchor: the figures are how many classifications each strategy needs to reach random's final
mAP and 95% of the full-data mAP.

    .venv/bin/python bench/active_learning.py [--seeds 3] [--rounds 8] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.mosaics import make_mosaics  # noqa: E402
from ml.simulation import LoopConfig, budget_to_reach, full_data_map, run_loop  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def _one_thread() -> None:
    # Parallel campaigns each get one core; torch would otherwise oversubscribe them all.
    import torch

    torch.set_num_threads(1)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Grey 32x32 pixels, standardised: a weak, honest backbone where labels matter."""
    grey = images.astype(np.float32).mean(axis=3)
    n, h, w = grey.shape
    small = grey.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).reshape(n, -1)
    return (small - small.mean(axis=0)) / (small.std(axis=0) + 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--round-size", type=int, default=100)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--strategies", default="random,entropy,margin,bald,kcenter")
    parser.add_argument("--default", default="entropy", help="the strategy the goal is judged on")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 rounds: a smoke run")
    parser.add_argument(
        "--relabel", action="store_true",
        help="contested items compete for places (relabel-or-new), as in select_round",
    )
    parser.add_argument("--jobs", type=int, default=1, help="campaigns run in parallel processes")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.rounds = 1, 3

    train = make_mosaics(args.pool, seed=101)
    test = make_mosaics(1000, seed=202)
    pool_x, test_x = pixel_features(train.images), pixel_features(test.images)
    config = LoopConfig(
        rounds=args.rounds, round_size=args.round_size, votes_each=args.votes, relabel=args.relabel
    )
    strategies = args.strategies.split(",")

    ceiling = full_data_map(pool_x, train.labels, test_x, test.labels, seed=0, epochs=config.epochs)
    print(f"full-data mAP (whole pool, true labels): {ceiling:.3f}")
    curves: dict[str, list] = {s: [] for s in strategies}
    started = time.monotonic()
    jobs = [(strategy, seed) for seed in range(args.seeds) for strategy in strategies]
    common = dict(
        pool_features=pool_x,
        pool_truth=train.labels,
        test_features=test_x,
        test_truth=test.labels,
        config=config,
    )
    # spawn, not fork: the parent has already run autograd (the full-data ceiling).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_one_thread) as executor:
        futures = {
            executor.submit(run_loop, strategy=st, seed=sd, **common): (st, sd) for st, sd in jobs
        }
        for future in as_completed(futures):
            strategy, seed = futures[future]
            curve = future.result()
            curves[strategy].append(curve)
            print(
                f"  {strategy:>8} seed {seed}: final mAP {curve.test_map[-1]:.3f} "
                f"after {curve.classifications[-1]} classifications ({curve.seconds:.0f} s)",
                flush=True,
            )
    for runs in curves.values():
        runs.sort(key=lambda c: c.seed)

    spent = np.array(curves[strategies[0]][0].classifications)
    mean_map = {s: np.mean([c.test_map for c in cs], axis=0) for s, cs in curves.items()}
    random_final = mean_map["random"][-1]
    print()
    print(
        f"{'strategy':>10} {'final mAP':>10} {'vs random':>10} {'to random final':>16} "
        f"{'ratio':>6} {'to 95% full':>12} {'never below random':>19}"
    )
    for s in strategies:
        merged = type(curves[s][0])(
            strategy=s, seed=-1, classifications=list(spent), test_map=list(mean_map[s])
        )
        reach_random = budget_to_reach(merged, random_final)
        reach_95 = budget_to_reach(merged, 0.95 * ceiling)
        ratio = f"{reach_random / spent[-1]:.2f}" if reach_random else "n/a"
        never_below = bool((mean_map[s] >= mean_map["random"] - 1e-9).all())
        print(
            f"{s:>10} {mean_map[s][-1]:>10.3f} {mean_map[s][-1] - random_final:>+10.3f} "
            f"{reach_random if reach_random else 'never':>16} {ratio:>6} "
            f"{reach_95 if reach_95 else 'never':>12} {str(never_below):>19}"
        )
    print(
        f"\ngoal: '{args.default}' reaches random's final mAP with <= 70% of random's "
        f"{spent[-1]} classifications and never ends below random at equal budget"
    )
    print(
        f"({args.seeds} seeds, {args.rounds} rounds of {args.round_size} items "
        f"x {args.votes} votes, {time.monotonic() - started:.0f} s)"
    )

    OUT.mkdir(exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in strategies:
        runs = np.array([c.test_map for c in curves[s]])
        ax.plot(
            spent, runs.mean(axis=0), marker="o", ms=3, label=s, lw=2 if s == args.default else 1
        )
        if len(runs) > 1:
            ax.fill_between(spent, runs.min(axis=0), runs.max(axis=0), alpha=0.12)
    ax.axhline(ceiling, ls="--", c="grey", lw=1, label="full data, true labels")
    ax.set_xlabel("volunteer classifications")
    ax.set_ylabel("test mAP")
    ax.set_title("Active learning on digit mosaics (simulated crowd)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "active_learning.png", dpi=120)
    print(f"learning curves: {OUT / 'active_learning.png'}")


if __name__ == "__main__":
    main()
