"""Benchmark of the ml/ training paths on digit mosaics (CPU).

    .venv/bin/python bench/ml_train.py            # the full run (several minutes on 2 cores)
    .venv/bin/python bench/ml_train.py --quick    # a smoke run with small sets

Prints, for 5,000 training and 2,000 test mosaics (different seeds):

(a) a head on cached embeddings: the backbone is a small CNN fine-tuned on a *separate* set of
    5,000 mosaics (seed 4), standing in for an ImageNet-pretrained trunk (nothing may be
    downloaded here); also, for honesty, a head on features of a randomly initialised ResNet-18;
(b) full fine-tuning of the small CNN from scratch;
(c) a head retrain on 10,000 cached items (read back from the memory-mapped cache), in seconds;
(d) the fine-tuning loop's images/s against the bare forward+backward+step on the same batches.

mAP and micro-F1 are on the test set, at thresholds tuned on a validation set (seed 2).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import LabelledImages, build_transform, collate_skip_broken, normalize  # noqa: E402
from ml.embeddings import EmbeddingCache, compute_embeddings, model_key  # noqa: E402
from ml.losses import WeightedBCE  # noqa: E402
from ml.metrics import f1_scores, mean_average_precision  # noqa: E402
from ml.models import MultiLabelNet, create_model  # noqa: E402
from ml.mosaics import make_mosaics  # noqa: E402
from ml.train import (  # noqa: E402
    FeatureSet,
    TrainConfig,
    evaluate,
    fit,
    get_lr,
    train_one_epoch,
)

CPU = torch.device("cpu")


def log(msg: str) -> None:
    print(msg, flush=True)


def test_scores(model: torch.nn.Module, test: LabelledImages | FeatureSet, thresholds: np.ndarray
                ) -> tuple[float, float]:
    """Test mAP and micro-F1 at the tuned thresholds."""
    if isinstance(test, FeatureSet):
        batches = [(test.features, test.targets, test.weights, torch.arange(len(test)))]

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x
    else:
        assert isinstance(model, MultiLabelNet)
        test.transform = build_transform(model.data_config, train=False)
        batches = DataLoader(test, batch_size=256, collate_fn=collate_skip_broken)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return normalize(x, model.data_config)
    out = evaluate(model, batches, device=CPU, prepare=prepare)
    y = out.targets >= 0.5
    micro_f1 = float(f1_scores(y, out.probs, thresholds)["micro_f1"])
    return mean_average_precision(y, out.probs), micro_f1


def epoch_printer(name: str):
    def show(row: dict) -> None:
        log(f"  [{name}] epoch {row['epoch']:2d} loss {row['train_loss']:.4f} "
            f"val mAP {row['val_map']:.4f} {row['images_per_s']:.0f} img/s {row['seconds']:.1f} s")
    return show


def finetune(train, val, *, epochs: int, seed: int, name: str) -> tuple[object, float]:
    cfg = TrainConfig(mode="finetune", backbone="small_cnn", epochs=epochs, batch_size=64,
                      lr=3e-3, hflip=False, patience=4, device="cpu", seed=seed)
    t0 = time.perf_counter()
    result = fit(cfg, LabelledImages(train.images, train.labels),
                 LabelledImages(val.images, val.labels), progress=epoch_printer(name))
    return result, time.perf_counter() - t0


def head_on(model: MultiLabelNet, cache_root: Path, sets: dict, *, name: str,
            batch_size: int = 128) -> dict[str, float]:
    cache = EmbeddingCache(cache_root, model_key(model), model.num_features)
    t0 = time.perf_counter()
    feats = {k: compute_embeddings(model, v.images, cache=cache, batch_size=batch_size).features
             for k, v in sets.items()}
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for v in sets.values():  # a second pass reads everything back from the cache
        result = compute_embeddings(model, v.images, cache=cache)
        assert result.n_cached == len(v.images)
    reread_s = time.perf_counter() - t0
    cfg = TrainConfig(mode="head", head="linear", epochs=30, batch_size=128, lr=1e-2,
                      device="cpu", patience=5)
    t0 = time.perf_counter()
    res = fit(cfg, FeatureSet(feats["train"], sets["train"].labels),
              FeatureSet(feats["val"], sets["val"].labels))
    fit_s = time.perf_counter() - t0
    m, f1 = test_scores(res.model, FeatureSet(feats["test"], sets["test"].labels), res.thresholds)
    log(f"  [{name}] embed {sum(len(v.images) for v in sets.values())} images {embed_s:.1f} s "
        f"(re-read from cache {reread_s:.2f} s), head fit {fit_s:.2f} s "
        f"({len(res.history)} epochs)")
    return {"map": m, "micro_f1": f1, "embed_s": embed_s, "fit_s": fit_s}


def loop_vs_bare(model: MultiLabelNet, data, *, batch_size: int, steps: int, repeats: int
                 ) -> tuple[float, float]:
    """Images/s of train_one_epoch over the real DataLoader vs a bare step on the same batches."""
    dataset = LabelledImages(data.images, data.labels,
                             transform=build_transform(model.data_config, train=False))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_skip_broken, drop_last=True)
    batches = list(itertools.islice(loader, steps))  # the exact batches the loop will see
    ready = [(normalize(x, model.data_config), y) for x, y, _, _ in batches]
    n_images = steps * batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = WeightedBCE()
    model.train()

    def bare() -> float:
        t0 = time.perf_counter()
        for x, y in ready:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return n_images / (time.perf_counter() - t0)

    def loop() -> float:
        t0 = time.perf_counter()
        train_one_epoch(
            model, itertools.islice(loader, steps), optimizer, loss_fn, device=CPU,
            prepare=lambda x: normalize(x, model.data_config),
            lr_at=lambda s: get_lr(s, lr=1e-3, min_lr=1e-5, warmup_steps=0, total_steps=10**6),
            start_step=0)
        return n_images / (time.perf_counter() - t0)

    bare()  # warm-up (allocator, oneDNN kernels)
    b, lp = [], []
    for _ in range(repeats):  # interleaved, so that contention from other processes hits both
        b.append(bare())
        lp.append(loop())
    log(f"  bare runs img/s: {', '.join(f'{v:.0f}' for v in b)}")
    log(f"  loop runs img/s: {', '.join(f'{v:.0f}' for v in lp)}")
    return statistics.median(lp), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets, for a smoke run")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (max)")
    # One thread by default: on a shared 2-core box, two OpenMP threads spinning against other
    # processes were up to 25x slower than one (see bench/README.md). 0 keeps torch's default.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--parts", default="abcd",
                        help="which parts to run, e.g. 'cd' (c without a: random small_cnn trunk)")
    parser.add_argument("--skip-resnet", action="store_true",
                        help="skip the random-ResNet-18 embedding baseline")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_train, n_val, n_test, n_big = (5000, 1000, 2000, 10_000)
    epochs = args.epochs
    if args.quick:
        n_train, n_val, n_test, n_big, epochs = 600, 200, 300, 2000, 2
    started = time.perf_counter()
    load = os.getloadavg()
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared machine)")
    t0 = time.perf_counter()
    train = make_mosaics(n_train, seed=1)
    val = make_mosaics(n_val, seed=2)
    test = make_mosaics(n_test, seed=3)
    pretrain = make_mosaics(n_train, seed=4)
    log(f"mosaics: {n_train} train, {n_val} val, {n_test} test, {n_train} backbone-pretraining "
        f"({time.perf_counter() - t0:.1f} s)")
    cache_root = Path(tempfile.mkdtemp(prefix="crowdloop-emb-"))
    sets = {"train": train, "val": val, "test": test}
    results: dict[str, dict[str, float]] = {}

    secs_pre = float("nan")
    if "b" in args.parts:
        log("(b) full fine-tuning of small_cnn from random init")
        res_b, secs_b = finetune(train, val, epochs=epochs, seed=0, name="finetune")
        m, f1 = test_scores(res_b.model, LabelledImages(test.images, test.labels),
                            res_b.thresholds)
        results["(b) fine-tune small_cnn"] = {"map": m, "micro_f1": f1, "wall_s": secs_b}

    torch.manual_seed(0)
    backbone = create_model("small_cnn", 10)  # replaced by the pre-trained one when (a) runs
    if "a" in args.parts:
        log("(a) head on cached embeddings of a small_cnn pre-trained on a separate mosaic set")
        res_pre, secs_pre = finetune(pretrain, val, epochs=epochs, seed=1, name="pretrain")
        backbone = res_pre.model
        h = head_on(backbone, cache_root, sets, name="head/small_cnn")
        results["(a) head on small_cnn embeddings"] = {
            "map": h["map"], "micro_f1": h["micro_f1"], "wall_s": h["embed_s"] + h["fit_s"],
            "head_fit_s": h["fit_s"], "pretrain_s": secs_pre}
    if "a" in args.parts and not args.skip_resnet:
        log("(a') head on cached embeddings of a randomly initialised resnet18 (64 px, D=512)")
        torch.manual_seed(0)
        rn = create_model("resnet18", 10)
        # Mosaics are 64 px; ResNet's default 224 px input would only cost 12x more compute.
        rn.data_config = type(rn.data_config)(input_size=64, train_size=64)
        h = head_on(rn, cache_root, sets, name="head/resnet18-random", batch_size=64)
        results["(a') head on random resnet18 embeddings"] = {
            "map": h["map"], "micro_f1": h["micro_f1"], "wall_s": h["embed_s"] + h["fit_s"],
            "head_fit_s": h["fit_s"]}

    if "c" in args.parts:
        head_s, head2_s = part_c(backbone, cache_root, n_big, pretrained="a" in args.parts)
    if "d" in args.parts:
        log("(d) fine-tuning loop vs bare forward+backward+step, small_cnn, batch 64, 40 steps")
        torch.manual_seed(0)
        loop_ips, bare_ips = loop_vs_bare(create_model("small_cnn", 10), train, batch_size=64,
                                          steps=8 if args.quick else 40, repeats=3)

    log("")
    if results:
        log("results (test set; thresholds tuned on validation)")
        log(f"{'method':44s} {'mAP':>7s} {'micro-F1':>9s} {'wall s':>8s}")
    for name, r in results.items():
        log(f"{name:44s} {r['map']:7.4f} {r['micro_f1']:9.4f} {r['wall_s']:8.1f}")
    if "a" in args.parts:
        log(f"  (a) excludes the one-off backbone pre-training: {secs_pre:.1f} s; head fit "
            "alone: " + ", ".join(f"{k.split()[0]} {r['head_fit_s']:.2f} s"
                                  for k, r in results.items() if "head_fit_s" in r))
    if "c" in args.parts:
        log(f"(c) head retrain on {n_big} cached items, 30 epochs: MLP {head_s:.2f} s "
            f"(goal <= 10 s) [{'ok' if head_s <= 10 else 'MISSED'}]; linear D=2048: "
            f"{head2_s:.2f} s")
    if "d" in args.parts:
        ratio = loop_ips / bare_ips
        log(f"(d) loop {loop_ips:.0f} img/s, bare {bare_ips:.0f} img/s, ratio {ratio:.1%} "
            f"(goal >= 85%) [{'ok' if ratio >= 0.85 else 'MISSED'}]")
    load = os.getloadavg()
    log(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"total {time.perf_counter() - started:.0f} s")


def part_c(backbone: MultiLabelNet, cache_root: Path, n_big: int, *, pretrained: bool
           ) -> tuple[float, float]:
    """Head retrains on ``n_big`` cached items: an MLP on the cached trunk, a wide linear head."""
    trunk = "pre-trained (a)" if pretrained else "randomly initialised"
    log(f"(c) head retrain on {n_big} cached items ({trunk} small_cnn trunk)")
    big = make_mosaics(n_big, seed=5)
    cache = EmbeddingCache(cache_root, model_key(backbone), backbone.num_features)
    t0 = time.perf_counter()
    compute_embeddings(backbone, big.images, cache=cache, batch_size=256)
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = compute_embeddings(backbone, big.images, cache=cache)  # all hits: memmap reads
    read_s = time.perf_counter() - t0
    n_tr = int(0.9 * n_big)
    # patience = epochs: time all 30 epochs, not an early stop on an easy task.
    cfg = TrainConfig(mode="head", head="mlp", hidden=256, dropout=0.1, epochs=30,
                      batch_size=128, lr=3e-3, device="cpu", patience=30)
    t0 = time.perf_counter()
    res_c = fit(cfg, FeatureSet(emb.features[:n_tr], big.labels[:n_tr]),
                FeatureSet(emb.features[n_tr:], big.labels[n_tr:]))
    head_s = time.perf_counter() - t0
    log(f"  cache fill {fill_s:.1f} s (once), read back {read_s:.2f} s, MLP head fit "
        f"{head_s:.2f} s for {len(res_c.history)} epochs, val mAP {res_c.val_metrics['map']:.4f}")
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n_big, 2048)).astype(np.float32)  # ResNet-50 width, synthetic
    labels = rng.random((n_big, 20)) < 0.1
    t0 = time.perf_counter()
    res_c2 = fit(TrainConfig(mode="head", epochs=30, batch_size=128, device="cpu", patience=30),
                 FeatureSet(feats[:n_tr], labels[:n_tr]), FeatureSet(feats[n_tr:], labels[n_tr:]))
    head2_s = time.perf_counter() - t0
    log(f"  linear head, D=2048 x 20 concepts (synthetic features), 30 epochs: {head2_s:.2f} s "
        f"({len(res_c2.history)} epochs)")
    return head_s, head2_s


if __name__ == "__main__":
    main()
