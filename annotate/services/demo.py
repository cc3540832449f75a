"""The offline demo: a vocabulary, real images with known labels, and the people who use them.

Images are 2x2 mosaics of scikit-learn's handwritten digits (``ml.mosaics``): the concepts are the
ten digits, an image's true labels are the digits it shows. The manifest's prior labels are the
truth with noise added, as earlier enrichments are: some digits dropped, some invented.
"""

from __future__ import annotations

import csv
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from PIL import Image

from ml.mosaics import DIGIT_KEYS, digit_vocabulary, make_mosaics

DEMO_DIR_NAME = "demo"


@dataclass(frozen=True)
class DemoManifest:
    path: Path
    truth: dict[str, list[str]]  # external id -> true concept keys


def demo_dir() -> Path:
    path = Path(settings.VAR_DIR) / DEMO_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_vocabulary() -> list[dict[str, str]]:
    return digit_vocabulary()


def demo_manifest_write(
    *, n: int = 400, seed: int = 7, drop_rate: float = 0.25, add_rate: float = 0.04
) -> DemoManifest:
    """Write ``n`` mosaic PNGs and a CSV manifest with noisy prior labels; the same each time."""
    root = demo_dir()
    images_dir = root / "images"
    images_dir.mkdir(exist_ok=True)
    mosaics = make_mosaics(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    noisy = mosaics.labels.copy()
    noisy[mosaics.labels & (rng.random(noisy.shape) < drop_rate)] = False
    noisy[~mosaics.labels & (rng.random(noisy.shape) < add_rate)] = True

    truth: dict[str, list[str]] = {}
    path = root / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["external_id", "image", "title", "prior_labels", "provider"])
        for i in range(n):
            external_id = f"mosaic-{seed}-{i:05d}"
            image_path = images_dir / f"{external_id}.png"
            if not image_path.exists():
                Image.fromarray(mosaics.images[i]).save(image_path, optimize=True)
            keys = [DIGIT_KEYS[d] for d in np.flatnonzero(mosaics.labels[i])]
            truth[external_id] = keys
            prior = ";".join(DIGIT_KEYS[d] for d in np.flatnonzero(noisy[i]))
            title = "Mosaic of handwritten digits no. " + str(i + 1)
            writer.writerow(
                [external_id, f"images/{image_path.name}", title, prior, "scikit-learn"]
            )
    return DemoManifest(path=path, truth=truth)


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str


CURATOR_PERMISSIONS = (
    "view_item",
    "change_item",
    "view_concept",
    "view_aggregatedlabel",
    "view_classification",
    "view_volunteer",
    "view_volunteerskill",
    "view_review",
    "add_review",
    "view_round",
    "view_subject",
    "view_importreport",
    "view_quarantinedrow",
    "view_priorlabel",
    "view_workflow",
)


def demo_accounts() -> list[DemoAccount]:
    """A curator and an admin with fresh random passwords, written to var/demo/credentials.txt."""
    user_model = get_user_model()
    curators, _ = Group.objects.get_or_create(name="curator")
    curators.permissions.set(
        Permission.objects.filter(
            codename__in=CURATOR_PERMISSIONS, content_type__app_label="annotate"
        )
    )
    accounts = []
    for username, role in (("curator", "curator"), ("admin", "admin")):
        password = secrets.token_urlsafe(9)
        user, _ = user_model.objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = role == "admin"
        user.set_password(password)
        user.save()
        if role == "curator":
            user.groups.add(curators)
        accounts.append(DemoAccount(username=username, password=password, role=role))
    lines = [f"{a.role}: {a.username} / {a.password}" for a in accounts]
    (demo_dir() / "credentials.txt").write_text("\n".join(lines) + "\n")
    return accounts
