"""How hard is the hard scenario? Full fine-tuning of small_cnn and a head, per seed (CPU).

    nice -n 15 .venv/bin/python bench/scenario_difficulty.py [--train 5000] [--seeds 0,1,2]

For each seed: a training set of ``--train`` images of ``ml.scenarios``' hard scenario (its own
seed), fine-tuned from random init with ``ml.train.fit`` (small_cnn, the project's default
widths, as ``bench/ml_train.py`` (b) does), then test mAP on 2,000 held-out images (seed 3) at
thresholds tuned on 1,000 validation images (seed 2). The head: a linear head on the cached
embeddings of the *next* seed's fine-tuned network (trained on a separate set of the same size,
standing in for a pre-trained trunk, as ``bench/ml_train.py`` (a) does), fitted on this seed's
training set. Prints each run and the median with its range.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_train import finetune, head_on, log, test_scores  # noqa: E402

from ml.data import LabelledImages  # noqa: E402
from ml.scenarios import HardScenario, make_hard_pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000, help="training images per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (max)")
    parser.add_argument("--size", type=int, default=64, help="image side, pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a HardScenario field, e.g. --set min_scale=0.25 (repeatable)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in HardScenario.__dataclass_fields__ or name == "size":
            parser.error(f"--set {item}: not a HardScenario field (use --size for the size)")
        overrides[name] = float(value)
    config = HardScenario(size=args.size, **overrides)
    t0 = time.perf_counter()
    val = make_hard_pool(1000, seed=2, config=config)
    test = make_hard_pool(2000, seed=3, config=config)
    trains = {s: make_hard_pool(args.train, seed=100 + s, config=config) for s in seeds}
    log(
        f"hard scenario {config}: {args.train} train x {len(seeds)} seeds, 1000 val, 2000 test "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    models, finetuned = {}, {}
    for seed in seeds:
        result, secs = finetune(
            trains[seed], val, epochs=args.epochs, seed=seed, name=f"finetune seed {seed}"
        )
        m, f1 = test_scores(
            result.model, LabelledImages(test.images, test.labels), result.thresholds
        )
        models[seed], finetuned[seed] = result.model, m
        log(f"fine-tune seed {seed}: test mAP {m:.4f}, micro-F1 {f1:.4f}, {secs:.0f} s")
    heads = {}
    if len(seeds) > 1:
        cache_root = Path(tempfile.mkdtemp(prefix="crowdloop-emb-"))
        for i, seed in enumerate(seeds):
            trunk_seed = seeds[(i + 1) % len(seeds)]
            sets = {"train": trains[seed], "val": val, "test": test}
            h = head_on(models[trunk_seed], cache_root, sets, name=f"head seed {seed}")
            heads[seed] = h["map"]
            log(f"head seed {seed} (trunk of seed {trunk_seed}): test mAP {h['map']:.4f}")

    def summary(values: dict[int, float]) -> str:
        v = list(values.values())
        return f"median {statistics.median(v):.4f} (range {min(v):.4f}-{max(v):.4f}, n={len(v)})"

    log(f"full fine-tuning, test mAP: {summary(finetuned)}")
    if heads:
        log(f"linear head on another seed's trunk, test mAP: {summary(heads)}")


if __name__ == "__main__":
    main()
