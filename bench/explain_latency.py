"""How long a curator waits for a Grad-CAM map on the item page, before and after the map cache.

Usage, from the repository root::

    .venv/bin/python bench/explain_latency.py              # 5 runs of each row
    .venv/bin/python bench/explain_latency.py --runs 3 --epochs 1

Setup, in a scratch ``CROWDLOOP_VAR_DIR`` under /tmp (its own SQLite database; ``DATABASE_URL``
is dropped): the demo's vocabulary and 60 of its 64-pixel digit mosaics as items, curated, and
one model trained on them with the demo's parameters (``small_cnn``, widths 16/32/64, input 64,
``--epochs`` epochs; tasks run eagerly, in this process), active. A staff curator fetches the
maps through the Django test client.

Rows, each the median of ``--runs`` runs with their range:

- **first view, fresh process**: a new Python process with Django set up (as a web worker is
  before its first map), then one map of an item never drawn: PyTorch's import, the checkpoint's
  verification and load, the model run, the PNG. One process per run.
- **first view, model loaded**: in one process whose model is already loaded, the first map of
  another item (each run a new item).
- **another concept of a viewed item**: the map of a second concept of an item already viewed
  (the model is not run again: every concept's map was kept at the first view).
- **cached view**: the same URL again (a file read).

Columns:

- **old, 64 px**: the code before the map cache, copied below (:func:`old_explain_png`): the
  torchvision transform, a hooked Grad-CAM with a backward through the whole network, a 64-pixel
  overlay, nothing kept but the loaded model (as scoring's private cache did).
- **old code, 512 px**: the same, its overlay drawn over the image at the display size (the old
  ``overlay_png`` resized the map to whatever image it was given): the same picture as the new
  overlay, the old way.
- **overlay** and **bare map**: ``GET /training/items/<id>/explain/<concept>.png?size=512`` and
  ``.../<concept>.map.png?size=512`` through the Django test client (the review page asks for
  the bare map).

The old paths are timed as function calls, without a view around them, so their figures are if
anything too kind. Ratios: old 64 px / bare map (what the page waited for before and now), and
old code at 512 px / overlay (the same picture).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONCEPTS = ("seven", "three")
#: The old 64 px map, the old code's map at the display size, the new overlay and bare map.
PATHS = ("old", "old-sized", "new", "new-map")


def django_setup(var: str) -> None:
    os.environ["CROWDLOOP_VAR_DIR"] = var
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def prepare(var: str, *, epochs: int) -> None:
    """Items, a curator and an active model trained with the demo's parameters."""
    django_setup(var)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from annotate.models import Item
    from annotate.services.items import items_import
    from annotate.services.vocabulary import vocabulary_load
    from config.celery import app
    from loop.services.demo import DEMO_TRAIN_PARAMS, demo_manifest_write, demo_vocabulary
    from training.selectors import model_version_active
    from training.services.runs import training_run_request

    call_command("migrate", verbosity=0)
    app.conf.task_always_eager = True
    vocabulary_load(entries=demo_vocabulary())
    manifest = demo_manifest_write(n=60, seed=3)
    items_import(path=manifest.path)
    for item in Item.objects.all():
        item.review_state = "edited"
        item.curated_concepts = manifest.truth[item.external_id]
        item.save(update_fields=["review_state", "curated_concepts"])
    run, _ = training_run_request(trigger="command",
                                  params={**DEMO_TRAIN_PARAMS, "epochs": epochs})
    run.refresh_from_db()
    version = model_version_active()
    if version is None:
        raise SystemExit(f"no model: run {run.pk} {run.status} {run.error}")
    curator = get_user_model().objects.create_user("bench-curator", is_staff=True)
    curator.user_permissions.add(Permission.objects.get(codename="view_item",
                                                        content_type__app_label="annotate"))


# ---------------------------------------------------------------------------- the old path
# training.services.explain.prediction_explain_png and ml.explain as they were before the map cache.

_OLD_MODELS: dict = {}


def old_grad_cam(model, x, concept: int):
    import numpy as np
    import torch
    import torch.nn.functional as F

    if x.ndim == 3:
        x = x.unsqueeze(0)
    saved = {}

    def keep(_module, _inputs, output):
        saved["act"] = output

    was_training = model.training
    model.eval()
    handle = model.gradcam_layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logit = model(x)[0, concept]
            (grad,) = torch.autograd.grad(logit, saved["act"])
    finally:
        handle.remove()
        model.train(was_training)
    act = saved["act"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.clamp(0, 1).numpy().astype(np.float32)


def old_overlay_png(image, cam, *, alpha: float = 0.45, cmap: str = "jet") -> bytes:
    import io

    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    base = np.asarray(image)
    h, w = base.shape[:2]
    cam = np.clip(np.asarray(cam, dtype=np.float32), 0, 1)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam).resize((w, h), Image.Resampling.BILINEAR))
    heat = colormaps[cmap](cam)[..., :3] * 255.0
    blended = (1 - alpha) * base.astype(np.float32) + alpha * heat
    out = io.BytesIO()
    Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def old_explain_png(item, concept_key: str, size: int | None = None) -> bytes:
    """The old map of 64 px, or (``size``) the old code's map over the image at the display size,
    as the old ``overlay_png`` resized a map to the image it was given."""
    from PIL import Image

    from annotate.services.media import image_path
    from ml.data import build_transform, normalize, to_image
    from training.selectors import model_version_active
    from training.services.versions import model_version_load

    version = model_version_active()
    key = (version.pk, version.checkpoint_sha256)
    if key not in _OLD_MODELS:  # the old per-process cache (scoring's _loaded)
        _OLD_MODELS[key] = model_version_load(version)
    model = _OLD_MODELS[key].model
    source = str(image_path(item.image_file))
    image = build_transform(model.data_config, train=False)(to_image(source))
    cam = old_grad_cam(model, normalize(image.unsqueeze(0), model.data_config),
                       version.concepts.index(concept_key))
    if size is None:
        return old_overlay_png(image.permute(1, 2, 0).numpy(), cam)
    picture = to_image(source)
    scale = size / max(picture.size)
    display = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                             Image.Resampling.LANCZOS)
    return old_overlay_png(display, cam)


# ---------------------------------------------------------------------------- timing


def client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    c = Client()
    c.force_login(get_user_model().objects.get(username="bench-curator"))
    return c


def view(c, item_id: int, concept: str, size: int, *, layer: str = "overlay") -> float:
    from django.urls import reverse

    name = "training:item-explain-map-png" if layer == "map" else "training:item-explain-png"
    url = reverse(name, args=[item_id, concept]) + f"?size={size}"
    started = time.perf_counter()
    response = c.get(url)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.content[:200]!r}")
    return elapsed


def old(item_id: int, concept: str, size: int | None = None) -> float:
    from annotate.models import Item

    item = Item.objects.get(pk=item_id)
    started = time.perf_counter()
    old_explain_png(item, concept, size)
    return time.perf_counter() - started


def cold_once(var: str, path: str, item_id: int, size: int) -> float:
    """One first view in a fresh process (this script's ``cold`` subcommand)."""
    out = subprocess.run(
        [sys.executable, __file__, "cold", "--var", var, "--path", path, "--item", str(item_id),
         "--size", str(size)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def timed(c, path: str, item: int, concept: str, size: int) -> float:
    """One map view by one of :data:`PATHS`."""
    if path.startswith("new"):
        return view(c, item, concept, size, layer="map" if path == "new-map" else "overlay")
    return old(item, concept, size if path == "old-sized" else None)


def cold_main(args: argparse.Namespace) -> None:
    django_setup(args.var)
    c = client()  # a web worker has its session and user before the request
    seconds = timed(c, args.path, args.item, CONCEPTS[0], args.size)
    assert "torch" in sys.modules
    print(json.dumps({"seconds": seconds}))


def fmt(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):8.1f} ms ({min(ms):.1f}–{max(ms):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    cold = sub.add_parser("cold")
    cold.add_argument("--var", required=True)
    cold.add_argument("--path", choices=PATHS, required=True)
    cold.add_argument("--item", type=int, required=True)
    cold.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if args.command == "cold":
        cold_main(args)
        return
    if args.runs < 3:
        parser.error("--runs must be at least 3 (a median and a range)")

    var = tempfile.mkdtemp(prefix="crowdloop-explain-bench-")
    started = time.perf_counter()
    prepare(var, epochs=args.epochs)
    from annotate.models import Item
    from training.selectors import model_version_active

    version = model_version_active()
    ids = list(Item.objects.order_by("pk").values_list("pk", flat=True))
    runs = args.runs
    if len(ids) < 6 * runs + 1:
        parser.error(f"--runs {runs} needs {6 * runs + 1} items; there are {len(ids)}")
    print(f"setup: {len(ids)} items, model v{version.pk} ({version.backbone}, input 64 px, val "
          f"mAP {version.val_map:.3f}) in {time.perf_counter() - started:.1f} s; "
          f"{os.cpu_count()} CPUs")

    # Fresh processes, taking turns; each run a map never drawn.
    cold = {path: [] for path in PATHS}
    for i in range(runs):
        for j, path in enumerate(PATHS):
            cold[path].append(cold_once(var, path, ids[j * runs + i], args.size))

    # This process: load the model on one item first, then time new items.
    c = client()
    timed(c, "new", ids[-1], CONCEPTS[0], args.size)
    timed(c, "old", ids[-1], CONCEPTS[0], args.size)
    rows = {row: {path: [] for path in PATHS} for row in ("warm", "other", "cached")}
    for i in range(runs):
        for path in PATHS:
            # The new layers share an item's computed maps: each its own items.
            item = ids[(5 if path == "new-map" else 4) * runs + i]
            rows["warm"][path].append(timed(c, path, item, CONCEPTS[0], args.size))
            rows["other"][path].append(timed(c, path, item, CONCEPTS[1], args.size))
            rows["cached"][path].append(timed(c, path, item, CONCEPTS[1], args.size))

    size = args.size
    print(f"\n{'median of ' + str(runs) + ' runs (range)':36} {'old, 64 px':>25} "
          f"{f'old code, {size} px':>25} {f'overlay, {size} px':>25} "
          f"{f'bare map, {size} px':>25}  old/map  old {size}/overlay")
    for label, times in [
        ("first view, fresh process", cold),
        ("first view, model loaded (new item)", rows["warm"]),
        ("another concept of a viewed item", rows["other"]),
        ("cached view (same URL again)", rows["cached"]),
    ]:
        m = {path: statistics.median(times[path]) for path in PATHS}
        print(f"{label:36} " + " ".join(f"{fmt(times[path]):>25}" for path in PATHS)
              + f"  {m['old'] / m['new-map']:6.1f}x  {m['old-sized'] / m['new']:6.1f}x")
    first = max(statistics.median(rows["warm"][p]) for p in ("new", "new-map"))
    print(f"\nFirst view with the model loaded: {first * 1000:.0f} ms at most, goal under 1 s "
          f"{'met' if first < 1 else 'NOT met'}; in a fresh process "
          f"{statistics.median(cold['new-map']):.2f} s (PyTorch's import and the model's load).")
    print(f"scratch folder: {var}")


if __name__ == "__main__":
    main()
