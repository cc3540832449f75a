"""Scenarios for the loop's simulations and the demo: the easy digit mosaics and a hard pool.

"easy" is ``ml.mosaics`` with the default crowd of ``ml.crowd``. "hard" keeps the ten digits as
the concepts but draws them Zipf-tailed (``HardScenario.prevalence``), at random places, scales
and angles, among clutter, occlusion and noise, with a noisier crowd (:data:`HARD_CROWD`: some
volunteers miss small objects, 15% spammers) giving one to three votes an item
(:data:`HARD_VOTES`). The law, the defaults and what they give are in bench/README.md, "The
hard scenario". Pure numpy and PIL; the same seed gives the same pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ml.crowd import CrowdProfile
from ml.mosaics import DIGIT_KEYS, make_mosaics

#: The scenarios by name; "easy" is the digit mosaics of ``ml.mosaics``.
SCENARIOS: tuple[str, ...] = ("easy", "hard")


@dataclass(frozen=True)
class HardScenario:
    """The hard scenario's parameters; the defaults are the scenario the benchmarks report."""

    size: int = 64  # side of the square image, pixels
    top: float = 0.40  # prevalence of the commonest concept
    rarest: float = 0.015  # prevalence of the rarest concept
    repeat_rate: float = 0.15  # chance that a present concept shows a second instance
    min_scale: float = 0.16  # smallest instance side, as a share of the image side
    max_scale: float = 0.45  # largest instance side
    max_rotation: float = 25.0  # degrees, either way
    clutter_mean: float = 4.0  # distractor shapes per image (Poisson mean)
    occlusion_rate: float = 0.3  # chance that an instance is partly hidden by a patch
    noise: float = 16.0  # standard deviation of the pixel noise

    @property
    def n_concepts(self) -> int:
        return len(DIGIT_KEYS)

    @property
    def zipf_exponent(self) -> float:
        """``s`` of ``p_k = top * k ** -s``, so that rank C has prevalence ``rarest``."""
        return math.log(self.top / self.rarest) / math.log(self.n_concepts)

    def prevalence(self) -> np.ndarray:
        """(C,) chance that each concept (digit 0 commonest, 9 rarest) is in an image."""
        ranks = np.arange(1, self.n_concepts + 1, dtype=np.float64)
        return self.top * ranks**-self.zipf_exponent


@dataclass(frozen=True)
class ScenarioPool:
    """A generated pool: images, true labels, and what makes each label easy or hard to see.

    Attributes:
        images: (n, size, size, 3) uint8.
        labels: (n, C) bool, concepts present.
        scale: (n, C) float, side of the concept's largest instance as a share of the image
            side; NaN where the concept is absent. None for the easy mosaics (one scale).
        occluded: (n, C) bool, every instance of the concept is partly hidden.
        clutter: (n,) int, distractor shapes drawn.
    """

    images: np.ndarray
    labels: np.ndarray
    scale: np.ndarray | None = None
    occluded: np.ndarray | None = None
    clutter: np.ndarray | None = None


#: The hard scenario's crowd: profile name -> (share, profile). Careless volunteers see half of
#: the objects at 18% of the image side (a 12-pixel digit at 64 px), nearly all big ones, and
#: few small ones; careful volunteers lose only the smallest; spammers tick every concept with
#: probability one half, whatever the image shows.
HARD_CROWD: dict[str, tuple[float, CrowdProfile]] = {
    "careful": (0.5, CrowdProfile(0.92, 0.02, half_seen_scale=0.08)),
    "careless": (0.35, CrowdProfile(0.85, 0.06, half_seen_scale=0.18)),
    "spammer": (0.15, CrowdProfile(0.5, 0.5)),
}

#: Votes per item in the hard scenario: one to three, uniformly.
HARD_VOTES: tuple[int, int] = (1, 3)


def make_hard_pool(n: int, *, seed: int = 0, config: HardScenario | None = None) -> ScenarioPool:
    """Generate ``n`` images of the hard scenario deterministically from ``seed``.

    Args:
        n: number of images.
        seed: random seed; the same seed (and config) gives the same pool.
        config: the scenario's parameters; :class:`HardScenario` defaults when None.
    """
    from sklearn.datasets import load_digits  # ships with scikit-learn, no download

    cfg = config or HardScenario()
    digits = load_digits()
    scans = (digits.images / 16.0 * 255).astype(np.uint8)  # (1797, 8, 8) ink in 0..255
    by_digit = [np.flatnonzero(digits.target == d) for d in range(cfg.n_concepts)]
    rng = np.random.default_rng(seed)
    labels = rng.random((n, cfg.n_concepts)) < cfg.prevalence()  # drawn first, for every size
    size = cfg.size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    scale = np.full((n, cfg.n_concepts), np.nan)
    occluded = np.zeros((n, cfg.n_concepts), dtype=bool)
    clutter = rng.poisson(cfg.clutter_mean, size=n)
    for i in range(n):
        canvas = _background(rng, size)
        layers: list[tuple[int, int]] = []  # (concept or -1 for clutter, instance no.)
        for present in np.flatnonzero(labels[i]):
            copies = 2 if rng.random() < cfg.repeat_rate else 1
            layers += [(int(present), k) for k in range(copies)]
        layers += [(-1, k) for k in range(int(clutter[i]))]
        hidden: dict[int, list[bool]] = {}
        for j in rng.permutation(len(layers)):
            concept, _ = layers[j]
            if concept < 0:
                _draw_clutter(canvas, rng, size)
                continue
            side = math.exp(rng.uniform(math.log(cfg.min_scale), math.log(cfg.max_scale)))
            scan = scans[rng.choice(by_digit[concept])]
            box = _draw_digit(canvas, rng, scan, side=side, config=cfg)
            is_hidden = bool(rng.random() < cfg.occlusion_rate)
            if is_hidden:
                _occlude(canvas, rng, box)
            hidden.setdefault(concept, []).append(is_hidden)
            scale[i, concept] = np.fmax(scale[i, concept], side)
        for concept, flags in hidden.items():
            occluded[i, concept] = all(flags)
        canvas += rng.normal(0, cfg.noise, size=canvas.shape)
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return ScenarioPool(images, labels, scale, occluded, clutter)


def scenario_pool(name: str, n: int, *, seed: int, size: int = 64) -> ScenarioPool:
    """``n`` images of the scenario ``name`` ("easy" or "hard") at ``size`` pixels."""
    if name == "easy":
        mosaics = make_mosaics(n, seed=seed, size=size)
        return ScenarioPool(mosaics.images, mosaics.labels)
    if name == "hard":
        return make_hard_pool(n, seed=seed, config=HardScenario(size=size))
    raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")


@dataclass(frozen=True)
class ScenarioCrowd:
    """How a scenario's volunteers behave, as ``ml.crowd.SimulatedCrowd`` takes it."""

    mix: dict[str, tuple[float, CrowdProfile]] | None = None  # None: ml.crowd.DEFAULT_CROWD
    votes: tuple[int, int] | None = None  # None: the campaign's fixed votes per item


def scenario_crowd(name: str) -> ScenarioCrowd:
    """The crowd of the scenario ``name``: the default one for "easy", the noisier for "hard"."""
    if name == "easy":
        return ScenarioCrowd()
    if name == "hard":
        return ScenarioCrowd(mix=dict(HARD_CROWD), votes=HARD_VOTES)
    raise ValueError(f"unknown scenario {name!r}: use one of {', '.join(SCENARIOS)}")


def _ink(rng: np.random.Generator) -> np.ndarray:
    # Digits and clutter share one ink distribution, so colour tells nothing.
    return rng.uniform(10, 120, size=3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float: a tinted base, a linear gradient and a coarse texture."""
    base = rng.uniform(150, 235) + rng.uniform(-15, 15, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, size)
    gradient = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    coarse = Image.fromarray(rng.normal(0, 1, size=(4, 4)).astype(np.float32), mode="F")
    texture = np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))
    shade = rng.uniform(10, 35) * gradient + rng.uniform(5, 15) * texture
    return base[None, None, :] + shade[..., None]


def _blend(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, top: int, left: int) -> None:
    h, w = alpha.shape
    region = canvas[top : top + h, left : left + w]
    a = alpha[..., None]
    region[...] = region * (1 - a) + colour * a


def _draw_digit(
    canvas: np.ndarray,
    rng: np.random.Generator,
    scan: np.ndarray,
    *,
    side: float,
    config: HardScenario,
) -> tuple[int, int, int, int]:
    """Paste one scan, scaled to ``side`` and turned; returns its box (top, left, h, w)."""
    size = canvas.shape[0]
    px = max(4, round(side * size))
    glyph = Image.fromarray(scan, mode="L").resize((px, px), Image.Resampling.BILINEAR)
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    glyph = glyph.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    alpha = np.asarray(glyph, dtype=np.float64)[:size, :size] / 255.0
    h, w = alpha.shape
    top = int(rng.integers(0, size - h + 1))
    left = int(rng.integers(0, size - w + 1))
    _blend(canvas, alpha * rng.uniform(0.75, 1.0), _ink(rng), top, left)
    return top, left, h, w


def _occlude(canvas: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    """Cover a third to a half of the box with a patch of flat colour, from one side."""
    top, left, h, w = box
    share = rng.uniform(0.33, 0.5)
    if rng.random() < 0.5:  # a band across the rows
        rows = max(1, round(h * share))
        start = top if rng.random() < 0.5 else top + h - rows
        patch = (slice(start, start + rows), slice(left, left + w))
    else:
        cols = max(1, round(w * share))
        start = left if rng.random() < 0.5 else left + w - cols
        patch = (slice(top, top + h), slice(start, start + cols))
    canvas[patch] = rng.uniform(60, 230, size=3)


def _draw_clutter(canvas: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """One distractor that is no concept: a stroke, a scribble, a ring, a blob or a box."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    kind = rng.integers(0, 5)
    width = int(rng.integers(1, 4))
    extent = rng.uniform(0.1, 0.45) * size
    cx, cy = rng.uniform(0, size, size=2)
    if kind == 0:  # a straight stroke
        angle = rng.uniform(0, math.pi)
        dx, dy = extent * math.cos(angle) / 2, extent * math.sin(angle) / 2
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width)
    elif kind == 1:  # a scribble, the nearest thing to a digit that is none
        points = [(cx, cy)]
        for _ in range(int(rng.integers(2, 5))):
            points.append(
                (
                    points[-1][0] + rng.normal(0, extent / 3),
                    points[-1][1] + rng.normal(0, extent / 3),
                )
            )
        draw.line(points, fill=255, width=width, joint="curve")
    else:
        half = extent / 2
        box = [cx - half, cy - half * rng.uniform(0.5, 1.5), cx + half, cy + half]
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        if kind == 2:  # a ring
            draw.ellipse(box, outline=255, width=width)
        elif kind == 3:  # a blob
            draw.ellipse(box, fill=255)
        else:  # a box outline
            draw.rectangle(box, outline=255, width=width)
    alpha = np.asarray(mask, dtype=np.float64) / 255.0 * rng.uniform(0.6, 1.0)
    _blend(canvas, alpha, _ink(rng), 0, 0)
