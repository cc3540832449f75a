"""Is the data pipeline the bottleneck of GPU fine-tuning? ResNet-50 and ViT-B/16 at 224 px.

    python bench/gpu_train_speed.py                 # on a CUDA machine (about 2-4 minutes)
    python bench/gpu_train_speed.py --arch vit_b_16 # one of them
    python bench/gpu_train_speed.py --cpu-smoke     # tiny CPU run that checks the script works

Measures, for each architecture, on the same model and the same kind of batches:

- bare: forward + backward + optimizer step on batches already normalised and resident on the
  GPU (cycled), which is the fastest the model can train;
- loop: ``ml.train.train_one_epoch`` fed by the real pipeline: PNG bytes decoded by
  ``ml.images.load_image`` in DataLoader workers, resized from 64 to 224 px, flipped, collated as
  uint8, pinned, copied asynchronously and normalised on the GPU.

Images are digit mosaics (``ml.mosaics``) encoded as PNG: real decoding work, real shapes after
the resize. Random init (nothing is downloaded). bfloat16 autocast and channels_last on CUDA.
Prints images/s of each and the ratio loop/bare (goal: >= 85%). Only torch, torchvision, numpy,
Pillow and this repository's ``ml/`` are used; no input is read, nothing is written.

``--cpu-smoke`` runs the same code path for a few steps on the CPU at 64 px: ResNet-18 for the
CNN, and for the transformer torchvision's ``VisionTransformer`` at a reduced size (two blocks,
width 64, 64-px inputs) wrapped by ``ml.models.vision_transformer_net`` as ``vit_b_16`` is
(ViT-B/16 itself takes 224-px inputs only, minutes per step on a small CPU).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import AugConfig, LabelledImages, build_transform, collate_skip_broken, normalize  # noqa: E402,E501
from ml.models import (  # noqa: E402
    DataConfig,
    ModelSpec,
    VisionTransformerNet,
    create_model,
    vision_transformer_net,
)
from ml.mosaics import make_mosaics  # noqa: E402
from ml.train import WeightedBCE, get_lr, train_one_epoch  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def png_sources(n: int, *, seed: int) -> tuple[list[bytes], np.ndarray]:
    m = make_mosaics(n, seed=seed)
    sources = []
    for image in m.images:
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        sources.append(out.getvalue())
    return sources, m.labels.astype(np.float32)


def build_model(arch: str, num_concepts: int) -> torch.nn.Module:
    """A registered model, or ``vit_smoke``: the ViT wrapper around a reduced VisionTransformer."""
    if arch == "vit_smoke":
        import torchvision

        net = torchvision.models.VisionTransformer(
            image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128
        )
        return vision_transformer_net(net, ModelSpec("vit_b_16", num_concepts))
    return create_model(arch, num_concepts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny run on the CPU (resnet18 and a reduced ViT) to check the script")
    parser.add_argument("--arch", default="resnet50,vit_b_16",
                        help="comma-separated registered models, measured one after the other")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=300, help="measured steps of each")
    parser.add_argument("--workers", type=int, default=-1,
                        help="DataLoader workers (-1: CPUs - 2, at most 14)")
    parser.add_argument("--distinct-images", type=int, default=4096)
    parser.add_argument("--no-amp", action="store_true", help="float32 instead of bfloat16")
    parser.add_argument("--no-channels-last", action="store_true")
    args = parser.parse_args()

    if args.cpu_smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # small shared CPUs: spinning OpenMP threads only slow it down
        args.size, args.batch_size, args.warmup_steps, args.steps = 64, 8, 2, 4
        args.distinct_images, args.arch = 64, "resnet18,vit_smoke"
        if args.workers < 0:
            args.workers = 1
    elif not torch.cuda.is_available():
        log("no CUDA device: run with --cpu-smoke to check the script on a CPU")
        return 2
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick kernels
    on_cuda = device.type == "cuda"
    amp = on_cuda and not args.no_amp
    channels_last = on_cuda and not args.no_channels_last
    workers = args.workers if args.workers >= 0 else max(1, min(14, (os.cpu_count() or 2) - 2))
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    started = time.perf_counter()
    log(f"torch {torch.__version__}; device: "
        f"{torch.cuda.get_device_name(0) if on_cuda else 'cpu'}; {os.cpu_count()} CPUs; "
        f"{', '.join(archs)} at {args.size} px, batch {args.batch_size}, "
        f"{'bfloat16 autocast' if amp else 'float32'}"
        f"{', channels_last' if channels_last else ''}; {workers} DataLoader workers")

    # The data: PNG bytes through the real pipeline. Sources repeat so the loader never ends.
    sources, labels = png_sources(args.distinct_images, seed=0)
    n_steps = args.warmup_steps + args.steps
    repeat = -(-n_steps * args.batch_size // len(sources)) + 1
    data_config = DataConfig(input_size=args.size, train_size=args.size)
    dataset = LabelledImages(
        sources * repeat, np.tile(labels, (repeat, 1)),
        transform=build_transform(data_config, train=True, aug=AugConfig(hflip=True)))
    log(f"data: {len(sources)} distinct 64-px mosaics as PNG ({sum(map(len, sources)) / 1e6:.1f}"
        f" MB), resized to {args.size} px ({time.perf_counter() - started:.1f} s)")
    results = []
    for arch in archs:
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                            num_workers=workers, pin_memory=on_cuda,
                            collate_fn=collate_skip_broken, persistent_workers=workers > 0,
                            prefetch_factor=2 if workers else None)
        results.append((arch, *measure(arch, args, loader, labels.shape[1], data_config, device,
                                       amp=amp, channels_last=channels_last)))
    if len(results) > 1:
        log("summary:")
        for arch, bare_ips, loop_ips in results:
            log(f"  {arch:<18} bare {bare_ips:8.0f} images/s, loop {loop_ips:8.0f} images/s, "
                f"ratio {loop_ips / bare_ips:.1%}")
    if on_cuda:
        log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    log(f"total {time.perf_counter() - started:.0f} s")
    return 0


def measure(arch: str, args: argparse.Namespace, loader: DataLoader, num_concepts: int,
            data_config: DataConfig, device: torch.device, *, amp: bool, channels_last: bool
            ) -> tuple[float, float]:
    """Bare and loop images/s of one architecture; prints them and their ratio."""
    on_cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(arch, num_concepts).to(device)
    if isinstance(model, VisionTransformerNet) and model.data_config.input_size != args.size:
        raise SystemExit(f"{arch} takes {model.data_config.input_size}-px inputs only, "
                         f"not --size {args.size}")
    model.data_config = data_config
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = WeightedBCE().to(device)
    autocast_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else None

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, data_config)  # (B, 3, S, S) uint8 -> float, on the device
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    # Bare: a handful of real batches, prepared once and kept on the device, cycled.
    it = iter(loader)
    ready = []
    for x, y, _, _ in itertools.islice(it, 8):
        ready.append((prepare(x.to(device)), y.to(device)))

    def bare(steps: int) -> float:
        sync()
        t0 = time.perf_counter()
        for x, y in itertools.islice(itertools.cycle(ready), steps):
            if autocast_ctx is not None:
                with autocast_ctx():
                    logits = model(x)
            else:
                logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync()
        return steps * args.batch_size / (time.perf_counter() - t0)

    def loop(steps: int) -> float:
        sync()
        t0 = time.perf_counter()
        _, _, seen = train_one_epoch(
            model, itertools.islice(it, steps), optimizer, loss_fn, device=device,
            prepare=prepare, amp=amp, start_step=0,
            lr_at=lambda s: get_lr(s, lr=1e-4, min_lr=1e-6, warmup_steps=0, total_steps=10**6))
        sync()  # train_one_epoch already synced on its loss; this is belt and braces
        return seen / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    bare(args.warmup_steps)
    loop(args.warmup_steps)  # also lets the workers fill their queues and settle
    log(f"{arch}: warm-up: {args.warmup_steps} steps of each ({time.perf_counter() - t0:.1f} s)")
    # Measured window is much longer than the prefetch queue (workers x 2 batches), so queued
    # batches cannot hide a slow pipeline.
    bare_ips = bare(args.steps)
    loop_ips = loop(args.steps)
    ratio = loop_ips / bare_ips
    log(f"{arch}: bare forward+backward+step: {bare_ips:8.0f} images/s ({args.steps} steps)")
    log(f"{arch}: training loop (real data):  {loop_ips:8.0f} images/s ({args.steps} steps)")
    log(f"{arch}: ratio loop/bare: {ratio:.1%} "
        f"(goal >= 85%: {'ok' if ratio >= 0.85 else 'MISSED'})")
    return bare_ips, loop_ips


if __name__ == "__main__":
    sys.exit(main())
