"""Vote aggregation benchmarks: crowdloop (ml/aggregation.py) side by side with crowd-kit 1.4.2.

Usage, from the repository root::

    .venv/bin/python bench/aggregation.py accuracy   # four real datasets, MV and DS
    .venv/bin/python bench/aggregation.py simulate   # simulated multi-label crowd, 10k x 20
    .venv/bin/python bench/aggregation.py speed      # 1,000,000 classifications x 20 concepts
    .venv/bin/python bench/aggregation.py all

crowd-kit is never imported into the project's environment: on first use this script creates
``bench/.venv-crowdkit`` (git-ignored), installs crowd-kit there, and runs crowd-kit's side in that
interpreter as a subprocess (this same file, subcommand ``crowdkit-worker``), passing data
through ``.npz`` files in a temporary folder. crowdloop's side runs in the calling interpreter.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CROWD_VENV = REPO / "bench" / ".venv-crowdkit"
CROWD_PACKAGES = ["crowd-kit==1.4.2", "scikit-learn<1.6", "pandas<3", "numpy"]
REFERENCE = Path(
    os.environ.get("CROWDLOOP_CROWD_REFERENCE", REPO.parent / "shared" / "reference" / "crowd")
)
DATASETS = {
    # display name: folder under zheng2017_truth_inference
    "D_Product": "d_jn-product",
    "bluebirds": "d_Duck_Identification",
    "Dog": "s4_Dog_data",
    "Face": "s4_Face_Sentiment_Identification",
}


# --------------------------------------------------------------------------------------------
# crowd-kit side (runs inside bench/.venv-crowdkit; imports nothing from crowdloop)
# --------------------------------------------------------------------------------------------


def crowdkit_worker(job_path: str) -> None:
    """Run one crowd-kit job described by a JSON file; write predictions to an .npz."""
    import pandas as pd
    from crowdkit.aggregation import BinaryRelevance, DawidSkene, MajorityVote

    job = json.loads(Path(job_path).read_text())
    data = np.load(job["input"])
    item, worker = data["item"], data["worker"]
    n_items = int(data["n_items"])
    out: dict[str, Any] = {}
    for method in job["methods"]:
        if method in ("mv", "ds", "ds-converged"):
            frame = pd.DataFrame({"task": item, "worker": worker, "label": data["label"]})
            if method == "mv":
                model = MajorityVote()
            elif method == "ds":
                model = DawidSkene(n_iter=100)
            else:  # "ds-converged": never stop on a falling ELBO, run all 100 iterations
                model = DawidSkene(n_iter=100, tol=-np.inf)
            start, cpu = time.perf_counter(), time.process_time()
            labels = model.fit_predict(frame)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            pred = np.full(n_items, -1, dtype=np.int64)
            pred[labels.index.to_numpy(dtype=np.int64)] = labels.to_numpy(dtype=np.int64)
        else:
            ticks = data["labels"]
            n_concepts = ticks.shape[1]
            # BinaryRelevance takes one list of ticked concepts per classification.
            rows, cols = np.nonzero(ticks)
            per_row: list[list[int]] = [[] for _ in range(len(ticks))]
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                per_row[r].append(c)
            frame = pd.DataFrame({"task": item, "worker": worker, "label": per_row})
            base = MajorityVote() if method == "br-mv" else DawidSkene(n_iter=100)
            start, cpu = time.perf_counter(), time.process_time()
            labels = BinaryRelevance(base).fit_predict(frame)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            pred = np.zeros((n_items, n_concepts), dtype=bool)
            for task, concepts in labels.items():
                pred[int(task), list(concepts)] = True
        out[f"{method}_pred"] = pred
        out[f"{method}_seconds"] = np.float64(seconds)
        out[f"{method}_cpu_seconds"] = np.float64(cpu)
    np.savez(job["output"], **out)


def ensure_crowdkit_venv() -> Path:
    """Create bench/.venv-crowdkit with crowd-kit installed, once; return its python."""
    python = CROWD_VENV / "bin" / "python"
    probe = [str(python), "-c", "import crowdkit, sklearn, pandas"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    packages = " ".join(CROWD_PACKAGES)
    print(f"creating {CROWD_VENV.relative_to(REPO)} with {packages} ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(CROWD_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *CROWD_PACKAGES], check=True)
    return python


def run_crowdkit(
    arrays: dict[str, np.ndarray], methods: list[str], *, timeout: float | None = None
) -> dict[str, np.ndarray]:
    """Run crowd-kit methods in the benchmark venv on arrays; return its .npz contents.

    Raises:
        subprocess.TimeoutExpired: when crowd-kit takes longer than ``timeout`` seconds.
    """
    python = ensure_crowdkit_venv()
    with tempfile.TemporaryDirectory(prefix="crowdloop-bench-") as tmp:
        job = {
            "input": str(Path(tmp) / "input.npz"),
            "output": str(Path(tmp) / "output.npz"),
            "methods": methods,
        }
        np.savez(job["input"], **arrays)
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        subprocess.run(
            [str(python), __file__, "crowdkit-worker", str(job_path)],
            check=True,
            timeout=timeout,
        )
        with np.load(job["output"]) as result:
            return {key: result[key] for key in result.files}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_zheng(folder: str) -> dict[str, Any]:
    """Read a zheng2017 answer.csv / truth.csv pair into index arrays."""
    base = REFERENCE / "zheng2017_truth_inference" / folder
    items: dict[str, int] = {}
    workers: dict[str, int] = {}
    item, worker, label = [], [], []
    with open(base / "answer.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            item.append(items.setdefault(row["question"], len(items)))
            worker.append(workers.setdefault(row["worker"], len(workers)))
            label.append(int(row["answer"]))
    truth = np.full(len(items), -1, dtype=np.int64)
    with open(base / "truth.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            # Truth may name questions nobody answered; accuracy is over answered ones with truth.
            if row["question"] in items:
                truth[items[row["question"]]] = int(row["truth"])
    return {
        "item": np.array(item, dtype=np.int64),
        "worker": np.array(worker, dtype=np.int64),
        "label": np.array(label, dtype=np.int64),
        "n_items": len(items),
        "n_workers": len(workers),
        "truth": truth,
    }


def simulate_crowd(
    *,
    n_items: int = 10_000,
    n_concepts: int = 20,
    votes_per_item: int = 5,
    n_workers: int = 1_500,
    spammer_share: float = 0.10,
    careless_share: float = 0.30,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate a multi-label crowd with careful, careless and spamming volunteers.

    Careful volunteers: sensitivity ~ Beta(8, 2), false-positive rate ~ Beta(1, 12) per concept
    (the aggregation.md setting); careless: Beta(4, 3) and Beta(1, 6); spammers tick every concept
    with one fixed probability U(0.05, 0.5) whatever the image shows. Concept priors ~
    U(0.05, 0.35). Volunteer activity is lognormal(0, 1.5) (heavy-tailed: a few volunteers do
    much of the work, most do a handful), and each item gets ``votes_per_item`` distinct volunteers.
    """
    rng = np.random.default_rng(seed)
    prior = rng.uniform(0.05, 0.35, n_concepts)
    truth = rng.random((n_items, n_concepts)) < prior
    kind = rng.choice(3, n_workers, p=[1 - careless_share - spammer_share, careless_share,
                                       spammer_share])  # fmt: skip
    careful = kind[:, None] == 0
    shape = (n_workers, n_concepts)
    sensitivity = np.where(careful, rng.beta(8, 2, shape), rng.beta(4, 3, shape))
    false_pos = np.where(careful, rng.beta(1, 12, shape), rng.beta(1, 6, shape))
    spam_rate = rng.uniform(0.05, 0.5, n_workers)
    spammer = kind == 2
    sensitivity[spammer] = spam_rate[spammer, None]
    false_pos[spammer] = spam_rate[spammer, None]
    activity = rng.lognormal(0.0, 1.5, n_workers)
    p = activity / activity.sum()
    chosen = rng.choice(n_workers, (n_items, votes_per_item), p=p)
    # Redraw the rows where one volunteer would see the same item twice (rare; a few rounds).
    for _ in range(1000):
        ordered = np.sort(chosen, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            break
        chosen[repeated] = rng.choice(n_workers, (int(repeated.sum()), votes_per_item), p=p)
    item = np.repeat(np.arange(n_items), votes_per_item)
    worker = chosen.ravel()
    p_tick = np.where(truth[item], sensitivity[worker], false_pos[worker])
    labels = rng.random(p_tick.shape) < p_tick
    return {
        "item": item,
        "worker": worker,
        "labels": labels,
        "n_items": n_items,
        "n_workers": n_workers,
        "truth": truth,
    }


def micro_f1_exact(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return f1, float((pred == truth).all(axis=1).mean())


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


def bench_accuracy() -> None:
    from bench.aggregation_categorical import (
        CategoricalVotes,
        dawid_skene_categorical,
        majority_vote_categorical,
    )
    from ml.aggregation import dawid_skene_binary

    print("## Accuracy on real datasets (zheng2017), accuracy over questions with truth")
    print("crowd-kit 1.4.2: MajorityVote(), DawidSkene(n_iter=100); diff = crowdloop - crowd-kit")
    header = (
        f"{'dataset':<10} {'tasks':>5} {'wkrs':>4} {'answers':>7} {'K':>1} | "
        f"{'MV cl':>5} {'MV ck':>5} {'diff':>6} {'same':>5} | "
        f"{'DS cl':>5} {'DS ck':>5} {'diff':>6} {'ck-conv':>7} | {'2coin':>5} | "
        f"{'DS s cl':>7} {'DS s ck':>7} {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for name, folder in DATASETS.items():
        data = load_zheng(folder)
        votes = CategoricalVotes.from_arrays(
            data["item"], data["worker"], data["label"], n_items=data["n_items"]
        )
        has_truth = data["truth"] >= 0
        truth = data["truth"][has_truth]

        def acc(pred: np.ndarray, *, mask: np.ndarray = has_truth, t: np.ndarray = truth) -> float:
            return float((pred[mask] == t).mean())

        mv = majority_vote_categorical(votes)
        start = time.perf_counter()
        ds = dawid_skene_categorical(votes)
        ds_seconds = time.perf_counter() - start
        two_coin = "n/a"
        if votes.n_classes == 2:
            binary = dawid_skene_binary(votes.to_vote_matrix())
            two_coin = f"{acc((binary.posteriors[:, 0] > 0.5).astype(np.int64)):.3f}"
        arrays = {k: data[k] for k in ("item", "worker", "label", "n_items")}
        ck = run_crowdkit(arrays, ["mv", "ds", "ds-converged"])
        mv_cl, mv_ck = acc(mv.labels), acc(ck["mv_pred"])
        ds_cl, ds_ck = acc(ds.labels), acc(ck["ds_pred"])
        same = float((mv.labels == ck["mv_pred"]).mean())
        ck_seconds = float(ck["ds_seconds"])
        print(
            f"{name:<10} {votes.n_items:>5} {votes.n_workers:>4} {votes.n_votes:>7} "
            f"{votes.n_classes:>1} | {mv_cl:>5.3f} {mv_ck:>5.3f} {mv_cl - mv_ck:>+6.3f} "
            f"{same:>5.3f} | {ds_cl:>5.3f} {ds_ck:>5.3f} {ds_cl - ds_ck:>+6.3f} "
            f"{acc(ck['ds-converged_pred']):>7.3f} | {two_coin:>5} | "
            f"{ds_seconds:>7.3f} {ck_seconds:>7.3f} {ck_seconds / ds_seconds:>4.0f}x"
        )
    print(
        "cl = crowdloop, ck = crowd-kit; same = share of items with identical MV labels;\n"
        "ck-conv = crowd-kit DawidSkene(n_iter=100, tol=-inf): crowd-kit stops as soon as its\n"
        "ELBO change is < tol, including when the ELBO goes down (bluebirds: after 2 iterations);\n"
        "2coin = crowdloop's two-coin dawid_skene_binary (defaults) on the binary datasets;\n"
        "DS s = categorical DS fit seconds (crowd-kit's includes pandas overhead); ratio = ck / cl."
    )
    print()


def bench_simulate(votes_per_item: tuple[int, ...], seeds: tuple[int, ...]) -> None:
    from ml.aggregation import VoteMatrix, dawid_skene_binary, majority_vote

    print("## Simulated multi-label crowd: 10,000 items x 20 concepts, 1,500 volunteers")
    print("60% careful, 30% careless, 10% spammers; lognormal(0, 1.5) activity")
    header = f"{'votes':>5} {'seed':>4} | {'method':<32} {'micro-F1':>8} {'exact-set':>9} {'s':>7}"
    print(header)
    print("-" * len(header))
    for n_votes in votes_per_item:
        for seed in seeds:
            data = simulate_crowd(votes_per_item=n_votes, seed=seed)
            truth = data["truth"]
            rows: list[tuple[str, np.ndarray, float]] = []
            start = time.perf_counter()
            votes = VoteMatrix.from_arrays(
                data["item"], data["worker"], data["labels"],
                n_items=data["n_items"], n_workers=data["n_workers"],
            )  # fmt: skip
            mv = majority_vote(votes)
            rows.append(("crowdloop MV", mv.labels, time.perf_counter() - start))
            start = time.perf_counter()
            ds = dawid_skene_binary(votes)
            rows.append(("crowdloop two-coin DS", ds.labels, time.perf_counter() - start))
            ck = run_crowdkit(
                {k: data[k] for k in ("item", "worker", "labels", "n_items")}, ["br-mv", "br-ds"]
            )
            for method, name in (("br-mv", "BR(MajorityVote)"), ("br-ds", "BR(DawidSkene(100))")):
                seconds = float(ck[f"{method}_seconds"])
                rows.append((f"crowd-kit {name}", ck[f"{method}_pred"], seconds))
            scores = {}
            for label, pred, seconds in rows:
                f1, exact = micro_f1_exact(pred, truth)
                scores[label] = (f1, exact)
                print(
                    f"{n_votes:>5} {seed:>4} | {label:<32} {f1:>8.4f} {exact:>9.4f} {seconds:>7.2f}"
                )
            ours, theirs = scores["crowdloop two-coin DS"], scores["crowd-kit BR(DawidSkene(100))"]
            mv_f1 = scores["crowdloop MV"][0]
            print(
                f"{'':>5} {'':>4} | crowdloop DS - MV: F1 {ours[0] - mv_f1:+.4f}; "
                f"crowdloop DS - BR(DS): F1 {ours[0] - theirs[0]:+.4f}, "
                f"exact {ours[1] - theirs[1]:+.4f}"
            )
    print()


def bench_speed(repeats: int, crowdkit_timeout: float, fraction: float) -> None:
    from ml.aggregation import VoteMatrix, dawid_skene_binary

    n_items, n_votes = 200_000, 5
    data = simulate_crowd(
        n_items=n_items, n_concepts=20, votes_per_item=n_votes, n_workers=5_000, seed=1
    )
    total = n_items * n_votes
    print(f"## Speed: {total:,} classifications x 20 concepts")
    print(f"{n_items:,} items x {n_votes} votes, 5,000 volunteers, simulated as above")
    print(f"machine: {os.cpu_count()} CPUs visible; shared with other work, so timings are noisy")
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        votes = VoteMatrix.from_arrays(
            data["item"], data["worker"], data["labels"],
            n_items=data["n_items"], n_workers=data["n_workers"],
        )  # fmt: skip
        result = dawid_skene_binary(votes)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    ours, ours_cpu = min(times), min(cpu_times)
    f1, exact = micro_f1_exact(result.labels, data["truth"])
    print(
        f"crowdloop two-coin DS: best {ours:.2f} s of {repeats} "
        f"({', '.join(f'{t:.2f}' for t in times)}), {result.iterations} EM iterations, "
        f"micro-F1 {f1:.4f}, exact-set {exact:.4f}; best CPU time {ours_cpu:.2f} s"
    )

    def subset(share: float) -> dict[str, Any]:
        keep_items = int(n_items * share)
        keep = data["item"] < keep_items
        return {
            "item": data["item"][keep],
            "worker": data["worker"][keep],
            "labels": data["labels"][keep],
            "n_items": keep_items,
        }

    label = "crowd-kit BR(DawidSkene(n_iter=100))"
    try:
        if fraction < 1.0:
            raise subprocess.TimeoutExpired("crowd-kit", 0)
        ck = run_crowdkit(subset(1.0), ["br-ds"], timeout=crowdkit_timeout)
        theirs, theirs_cpu = float(ck["br-ds_seconds"]), float(ck["br-ds_cpu_seconds"])
        f1_ck, exact_ck = micro_f1_exact(ck["br-ds_pred"], data["truth"])
        quality = f"micro-F1 {f1_ck:.4f}, exact-set {exact_ck:.4f}"
        print(f"{label}: {theirs:.2f} s on the full data, {quality}; CPU time {theirs_cpu:.2f} s")
        print(
            f"ratio crowd-kit / crowdloop: {theirs / ours:.1f}x wall, "
            f"{theirs_cpu / ours_cpu:.1f}x CPU (measured, both on full data)"
        )
    except subprocess.TimeoutExpired:
        share = fraction if fraction < 1.0 else 0.1
        why = (
            "as asked (--crowdkit-fraction)"
            if fraction < 1.0
            else f"because the full data took over {crowdkit_timeout:.0f} s"
        )
        print(f"{label}: measuring {share:.0%} of the items {why}")
        ck = run_crowdkit(subset(share), ["br-ds"])
        part, part_cpu = float(ck["br-ds_seconds"]), float(ck["br-ds_cpu_seconds"])
        estimate, estimate_cpu = part / share, part_cpu / share
        rows = f"{int(total * share):,} rows"
        print(f"{label}: {part:.2f} s ({part_cpu:.2f} s CPU) on {share:.0%} of the items ({rows})")
        print(
            f"EXTRAPOLATED (linear in rows, not measured) full-data time: {estimate:.0f} s wall, "
            f"{estimate_cpu:.0f} s CPU; ratio ~{estimate / ours:.0f}x wall, "
            f"~{estimate_cpu / ours_cpu:.0f}x CPU"
        )
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("accuracy", help="four real datasets, MV and DS vs crowd-kit")
    sim = sub.add_parser("simulate", help="simulated multi-label crowd vs BinaryRelevance")
    sim.add_argument("--votes", type=int, nargs="+", default=[5, 10])
    sim.add_argument("--seeds", type=int, nargs="+", default=[0])
    speed = sub.add_parser("speed", help="1M classifications x 20 concepts")
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--crowdkit-timeout", type=float, default=600.0)
    speed.add_argument(
        "--crowdkit-fraction", type=float, default=1.0,
        help="run crowd-kit on this share of the items and extrapolate (labelled as such)",
    )  # fmt: skip
    sub.add_parser("all", help="accuracy, simulate and speed with defaults")
    worker = sub.add_parser("crowdkit-worker", help=argparse.SUPPRESS)
    worker.add_argument("job")
    args = parser.parse_args(argv)

    if args.command == "crowdkit-worker":
        crowdkit_worker(args.job)
        return
    sys.path.insert(0, str(REPO))
    if args.command in ("accuracy", "all", None):
        if not (REFERENCE / "zheng2017_truth_inference").is_dir():
            print(f"reference data not found at {REFERENCE}; skipping the accuracy benchmark")
        else:
            bench_accuracy()
    if args.command in ("simulate", "all", None):
        votes = tuple(getattr(args, "votes", [5, 10]))
        bench_simulate(votes, tuple(getattr(args, "seeds", [0])))
    if args.command in ("speed", "all", None):
        bench_speed(
            getattr(args, "repeats", 3),
            getattr(args, "crowdkit_timeout", 600.0),
            getattr(args, "crowdkit_fraction", 1.0),
        )


if __name__ == "__main__":
    main()
