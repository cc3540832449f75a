"""Does active learning save volunteers' effort? A simulated campaign per strategy and seed.

The task is real images (2x2 mosaics of scikit-learn's handwritten digits; labels = the digits
shown) with simulated volunteers (``ml.crowd``'s default crowd: careful, careless, 10% spammers,
heavy-tailed activity). Each campaign starts from a random seed round, then runs rounds of K
items with V votes each, chosen by the strategy (with the default 15% random control share);
votes are aggregated with two-coin Dawid-Skene and a head is retrained on the posteriors each
round. The random strategy is the anchor: the figures are how many classifications each
strategy needs to reach random's final mAP and 95% of the full-data mAP.

    .venv/bin/python bench/active_learning.py [--seeds 3] [--rounds 8] [--quick]
        [--scenario easy|hard]

``--scenario hard`` runs the same campaigns on ``ml.scenarios``' hard scenario instead
(Zipf-tailed concepts, objects at random places and scales among clutter, occlusion, noise) with
its noisier crowd (careless volunteers miss small objects, 15% spammers, one to three votes per
item). Raw pixels carry next to nothing there, so the features are the embeddings of a small_cnn
fine-tuned on a separate hard set (``--trunk-images``, its own seed), standing in for a
pre-trained backbone as ``bench/ml_train.py`` (a) does; they are cached under bench/out/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.scenarios import SCENARIOS, scenario_crowd, scenario_pool  # noqa: E402
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


def trunk_features(
    pool_images: np.ndarray,
    test_images: np.ndarray,
    *,
    trunk_images: int,
    epochs: int,
    prevalence: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small_cnn fine-tuned on a separate hard set (seed 303): its embeddings and its scores.

    Returns the pool's and the test set's embeddings (standardised on the pool) and the trunk's
    own concept probabilities for the pool, the zero-shot stand-in: scores from a model that
    has seen none of the campaign's labels. ``prevalence`` makes every concept equally common
    in the trunk's set (a pre-trained backbone has seen plenty of every concept); None keeps
    the scenario's long tail.
    """
    import torch

    from ml.data import LabelledImages
    from ml.embeddings import compute_embeddings
    from ml.scenarios import HardScenario, make_hard_pool
    from ml.train import TrainConfig, fit

    flat = f"-flat{prevalence:g}" if prevalence else ""
    cached = OUT / f"hard-trunk-{len(pool_images)}-{trunk_images}-{epochs}{flat}.npz"
    if cached.exists():
        data = np.load(cached)
        return data["pool"], data["test"], data["pool_scores"]
    torch.manual_seed(0)
    config_set = HardScenario(top=prevalence, rarest=prevalence) if prevalence else HardScenario()
    train = make_hard_pool(trunk_images, seed=303, config=config_set)
    val = make_hard_pool(max(200, trunk_images // 5), seed=304, config=config_set)
    config = TrainConfig(
        mode="finetune", backbone="small_cnn", epochs=epochs, batch_size=64, lr=3e-3,
        hflip=False, patience=4, device="cpu", seed=0,
    )  # fmt: skip
    started = time.monotonic()
    result = fit(
        config, LabelledImages(train.images, train.labels), LabelledImages(val.images, val.labels)
    )
    print(
        f"trunk: small_cnn fine-tuned on {trunk_images} hard images"
        f"{f' (every concept at {prevalence:g})' if prevalence else ''}, val mAP "
        f"{result.val_metrics['map']:.3f} ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    pool = compute_embeddings(result.model, pool_images, batch_size=256).features
    test = compute_embeddings(result.model, test_images, batch_size=256).features
    model = result.model.eval()
    with torch.inference_mode():
        pool_scores = torch.sigmoid(model.head(torch.as_tensor(pool))).numpy()
    mean, std = pool.mean(axis=0), pool.std(axis=0) + 1e-6
    pool, test = (pool - mean) / std, (test - mean) / std
    OUT.mkdir(exist_ok=True)
    np.savez(cached, pool=pool, test=test, pool_scores=pool_scores)
    return pool, test, pool_scores


def run_campaign(*, spec: str, config: LoopConfig, **kwargs):  # noqa: ANN003, ANN201
    """``run_loop`` for a strategy spec: ``NAME`` or ``NAME+zs`` (zero-shot cold start)."""
    strategy, _, cold = spec.partition("+")
    if cold:
        config = dataclasses.replace(config, cold_start="zero_shot")
    curve = run_loop(strategy=strategy, config=config, **kwargs)
    curve.strategy = spec
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--round-size", type=int, default=100)
    parser.add_argument("--votes", type=int, default=3)
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument(
        "--strategies",
        default="random,entropy,margin,bald,kcenter",
        help="comma-separated; NAME+zs starts NAME's campaign with the zero-shot cold start "
        "(hard scenario: the trunk's own scores stand in for a zero-shot model)",
    )
    parser.add_argument("--default", default="entropy", help="the strategy the goal is judged on")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 rounds: a smoke run")
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="contested items compete for places (relabel-or-new), as in select_round",
    )
    parser.add_argument("--jobs", type=int, default=1, help="campaigns run in parallel processes")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="easy",
        help="easy: digit mosaics; hard: ml.scenarios' hard scenario and crowd",
    )
    parser.add_argument(
        "--trunk-images",
        type=int,
        default=3000,
        help="hard scenario: images the feature trunk is fine-tuned on",
    )
    parser.add_argument("--trunk-epochs", type=int, default=12)
    parser.add_argument(
        "--trunk-prevalence",
        type=float,
        default=0.3,
        help="hard scenario: every concept's prevalence in the trunk's images (0: the "
        "scenario's long tail)",
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.rounds = 1, 3

    train = scenario_pool(args.scenario, args.pool, seed=101)
    test = scenario_pool(args.scenario, 1000, seed=202)
    crowd = scenario_crowd(args.scenario)
    if args.scenario == "easy":
        pool_x, test_x = pixel_features(train.images), pixel_features(test.images)
        zero_shot = None
    else:
        pool_x, test_x, zero_shot = trunk_features(
            train.images,
            test.images,
            trunk_images=args.trunk_images,
            epochs=args.trunk_epochs,
            prevalence=args.trunk_prevalence or None,
        )
    config = LoopConfig(
        rounds=args.rounds,
        round_size=args.round_size,
        votes_each=crowd.votes or args.votes,
        relabel=args.relabel,
    )
    strategies = args.strategies.split(",")
    if "random" not in strategies:
        raise SystemExit("--strategies must include random, the anchor")
    if zero_shot is None and any(s.endswith("+zs") for s in strategies):
        raise SystemExit("the zero-shot cold start (+zs) needs --scenario hard")

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
        crowd_mix=crowd.mix,
        pool_scale=train.scale,
        zero_shot_scores=zero_shot,
    )
    # spawn, not fork: the parent has already run autograd (the full-data ceiling).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_one_thread) as executor:
        futures = {
            executor.submit(run_campaign, spec=st, seed=sd, **common): (st, sd) for st, sd in jobs
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

    # Votes per item may vary (the hard crowd gives one to three): the mean budget per round.
    budgets = [c.classifications for cs in curves.values() for c in cs]
    spent = np.mean(budgets, axis=0).round().astype(int)
    mean_map = {s: np.mean([c.test_map for c in cs], axis=0) for s, cs in curves.items()}
    random_final = mean_map["random"][-1]
    # The five rarest concepts of the pool; their mean test AP after the last round.
    rarest = np.argsort(train.labels.mean(axis=0), kind="stable")[:5]
    rare_ap = {
        s: float(np.mean([np.nanmean(c.test_ap[-1][rarest]) for c in cs]))
        for s, cs in curves.items()
    }
    print()
    print(
        f"{'strategy':>14} {'final mAP':>10} {'vs random':>10} {'to random final':>16} "
        f"{'ratio':>6} {'to 95% full':>12} {'never below':>12} {'rare-5 AP':>10} {'goal':>5}"
    )
    for s in strategies:
        merged = type(curves[s][0])(
            strategy=s, seed=-1, classifications=list(spent), test_map=list(mean_map[s])
        )
        reach_random = budget_to_reach(merged, random_final)
        reach_95 = budget_to_reach(merged, 0.95 * ceiling)
        ratio = reach_random / spent[-1] if reach_random else None
        never_below = bool((mean_map[s] >= mean_map["random"] - 1e-9).all())
        goal = (
            s != "random"
            and ratio is not None
            and ratio <= 0.70
            and never_below
            and rare_ap[s] > rare_ap["random"]
        )
        print(
            f"{s:>14} {mean_map[s][-1]:>10.3f} {mean_map[s][-1] - random_final:>+10.3f} "
            f"{reach_random if reach_random else 'never':>16} "
            f"{f'{ratio:.2f}' if ratio else 'n/a':>6} "
            f"{reach_95 if reach_95 else 'never':>12} {str(never_below):>12} "
            f"{rare_ap[s]:>10.3f} {'met' if goal else '-':>5}"
        )
    print(
        "\nper seed: classifications to random's mean final mAP, as a share of random's "
        "(median, range; 'never' counts the seeds that did not get there)"
    )
    for s in strategies:
        shares = []
        for c in curves[s]:
            reach = budget_to_reach(c, random_final)
            shares.append(reach / c.classifications[-1] if reach else None)
        got = sorted(x for x in shares if x is not None)
        never = len(shares) - len(got)
        summary = (
            f"median {np.median(got):.2f} ({got[0]:.2f}-{got[-1]:.2f}, n={len(got)})"
            if got
            else "no seed got there"
        )
        print(f"{s:>14} {summary}{f', never {never}' if never else ''}")
    print(
        f"rare-5: concepts {', '.join(map(str, rarest))} (pool prevalence "
        f"{', '.join(f'{v:.3f}' for v in train.labels.mean(axis=0)[rarest])})"
    )
    print("\nmean test mAP per round; worst gap to random at equal budget (round, budget)")
    print(f"{'budget':>14} " + " ".join(f"{b:>6d}" for b in spent))
    for s in strategies:
        gap = mean_map[s] - mean_map["random"]
        worst = int(np.argmin(gap))
        print(
            f"{s:>14} "
            + " ".join(f"{m:6.3f}" for m in mean_map[s])
            + f"   worst {gap[worst]:+.3f} (round {worst}, {spent[worst]})"
        )
    print(
        f"\ngoal: reach random's final mAP with <= 70% of random's {spent[-1]} classifications, "
        "never below random at any round (mean over seeds), a higher AP than random on the "
        f"five rarest concepts; the product's default is '{args.default}'"
    )
    votes = "-".join(map(str, crowd.votes)) if crowd.votes else args.votes
    print(
        f"({args.seeds} seeds, {args.rounds} rounds of {args.round_size} items "
        f"x {votes} votes, scenario "
        f"{args.scenario}, {time.monotonic() - started:.0f} s)"
    )

    OUT.mkdir(exist_ok=True)
    stem = "active_learning" if args.scenario == "easy" else f"active_learning_{args.scenario}"
    (OUT / f"{stem}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "full_data_map": ceiling,
                "rarest": rarest.tolist(),
                "curves": [
                    {
                        "strategy": c.strategy,
                        "seed": c.seed,
                        "classifications": c.classifications,
                        "test_map": c.test_map,
                        "test_ap": [ap.tolist() for ap in c.test_ap],
                    }
                    for cs in curves.values()
                    for c in cs
                ],
            }
        )
    )
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
    ax.set_title(f"Active learning, {args.scenario} scenario (simulated crowd)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png = OUT / f"{stem}.png"
    fig.savefig(png, dpi=120)
    print(f"learning curves: {png}")


if __name__ == "__main__":
    main()
