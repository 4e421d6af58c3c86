"""Procedural dSprites (Matthey et al., 2017) and the two VTAB-1k tasks built on it.

dSprites is fully determined by its latent factors, so autopetl renders it instead of downloading
it. The geometry below was measured on real frames (shared/reference/DSPRITES.md) and is checked
against them by ``tests/test_dsprites_real_frames.py`` (mean best IoU, target >= 0.9).

VTAB splits the shuffled 737,280 images 80/10/10 into train/val/test. TFDS's exact shuffle
cannot be reproduced without TFDS, so we use our own seeded permutation; the VTAB-1k subsets are
then taken exactly as VTAB does (train800 = first 800 of train, val200 = first 200 of val).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# The generative grid. Index order is (shape, scale, orientation, posX, posY), posY fastest, as in
# the original npz (color has one value and is left out).
N_SHAPES, N_SCALES, N_ORIENT, N_POS = 3, 6, 40, 32
GRID = (N_SHAPES, N_SCALES, N_ORIENT, N_POS, N_POS)
N_IMAGES = N_SHAPES * N_SCALES * N_ORIENT * N_POS * N_POS  # 737,280
SIZE = 64
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, N_SCALES)
ORIENTATIONS = np.linspace(0.0, 2 * math.pi, N_ORIENT)  # 0 and 2*pi are both present
POSITIONS = np.linspace(0.0, 1.0, N_POS)


@dataclass(frozen=True)
class Geometry:
    """Sprite sizes in pixels at scale 1 (fitted on the real frames, see DSPRITES.md)."""

    square_half: float = 9.6  # side 19.2 * scale
    ellipse_a: float = 12.7  # semi-major axis, horizontal at orientation 0
    ellipse_b: float = 7.2
    heart_lobe_r: float = 5.4  # radius of the two upper lobes
    heart_half_width: float = 9.6
    heart_tip: float = 8.5  # tip below the centre
    heart_height: float = 17.0  # bounding-box height


GEOMETRY = Geometry()


def latents_of(index: np.ndarray) -> np.ndarray:
    """Latent indices (shape, scale, orientation, posX, posY) of flat image indices, shape [N, 5]."""
    return np.stack(np.unravel_index(np.asarray(index), GRID), axis=1)


def _hull_of_disc_and_point(
    u: torch.Tensor,
    v: torch.Tensor,
    cu: torch.Tensor,
    cv: torch.Tensor,
    r: torch.Tensor,
    tu: torch.Tensor,
    tv: torch.Tensor,
) -> torch.Tensor:
    """Whether (u, v) lies in the convex hull of a disc (centre c, radius r) and a point t."""
    in_disc = (u - cu) ** 2 + (v - cv) ** 2 <= r**2
    # The hull is the disc plus the triangle t, p1, p2, where p1 and p2 are the tangent points.
    du, dv = tu - cu, tv - cv
    dist = torch.sqrt(du**2 + dv**2)
    alpha = torch.acos(r / dist)  # angle at c between c->t and c->tangent point
    base = torch.atan2(dv, du)
    p1u, p1v = cu + r * torch.cos(base + alpha), cv + r * torch.sin(base + alpha)
    p2u, p2v = cu + r * torch.cos(base - alpha), cv + r * torch.sin(base - alpha)

    def side(au, av, bu, bv):  # sign of the cross product (b - a) x (p - a)
        return (bu - au) * (v - av) - (bv - av) * (u - au)

    s1, s2, s3 = side(tu, tv, p1u, p1v), side(p1u, p1v, p2u, p2v), side(p2u, p2v, tu, tv)
    in_tri = ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return in_disc | in_tri


def render(latents: np.ndarray, geometry: Geometry = GEOMETRY) -> np.ndarray:
    """Render sprites from latent indices [N, 5] to binary uint8 images [N, 64, 64] (0 or 255)."""
    lat = torch.as_tensor(np.asarray(latents), dtype=torch.long).reshape(-1, 5)
    shape = lat[:, 0].view(-1, 1, 1)
    scale = torch.as_tensor(SCALES, dtype=torch.float32)[lat[:, 1]].view(-1, 1, 1)
    theta = torch.as_tensor(ORIENTATIONS, dtype=torch.float32)[lat[:, 2]].view(-1, 1, 1)
    cx = 16.0 + 32.0 * torch.as_tensor(POSITIONS, dtype=torch.float32)[lat[:, 3]].view(-1, 1, 1)
    cy = 16.0 + 32.0 * torch.as_tensor(POSITIONS, dtype=torch.float32)[lat[:, 4]].view(-1, 1, 1)

    # Pixel centres in continuous coordinates; x along columns, y down the rows.
    coords = torch.arange(SIZE, dtype=torch.float32) + 0.5
    x, y = coords.view(1, 1, -1), coords.view(1, -1, 1)
    # Into the sprite's frame: y flipped to point up, then rotated back by theta (the sprite turns
    # counter-clockwise on screen as orientation grows).
    du, dv = x - cx, cy - y
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = (cos * du + sin * dv) / scale
    v = (-sin * du + cos * dv) / scale

    g = geometry
    square = (u.abs() <= g.square_half) & (v.abs() <= g.square_half)
    ellipse = (u / g.ellipse_a) ** 2 + (v / g.ellipse_b) ** 2 <= 1.0
    lobe_u = torch.tensor(g.heart_half_width - g.heart_lobe_r, dtype=torch.float32)
    lobe_v = torch.tensor(g.heart_height - g.heart_tip - g.heart_lobe_r, dtype=torch.float32)
    r = torch.tensor(g.heart_lobe_r, dtype=torch.float32)
    tip_u, tip_v = (
        torch.tensor(0.0, dtype=torch.float32),
        torch.tensor(-g.heart_tip, dtype=torch.float32),
    )
    heart = _hull_of_disc_and_point(
        u, v, -lobe_u, lobe_v, r, tip_u, tip_v
    ) | _hull_of_disc_and_point(u, v, lobe_u, lobe_v, r, tip_u, tip_v)
    mask = torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))
    return (mask.to(torch.uint8) * 255).numpy()


def loc_label(latents: np.ndarray) -> np.ndarray:
    """vtab/dsprites_loc: the posX index // 2 (16 classes)."""
    return (np.asarray(latents)[:, 3] // 2).astype(np.int64)


def ori_label(latents: np.ndarray) -> np.ndarray:
    """vtab/dsprites_ori: floor(orientation index / 2.5) (16 classes)."""
    return np.floor(np.asarray(latents)[:, 2] / 2.5).astype(np.int64)


LABELS = {"dsprites_loc": loc_label, "dsprites_ori": ori_label}


N_TRAIN = int(0.8 * N_IMAGES)  # VTAB's train part: 589,824 images


def split_indices(
    split: str,
    *,
    seed: int = 0,
    test_size: int | None = 4096,
    train_fraction: float | None = None,
) -> np.ndarray:
    """Flat image indices of a VTAB-1k split over our seeded permutation of all 737,280 images.

    Args:
        split: ``train800``, ``val200``, ``train800val200`` or ``test``.
        seed: Seed of the permutation; the same seed always gives the same splits.
        test_size: How many test images to take (from the start of the test part); ``None`` for the
            full 73,728.
        train_fraction: Train on this fraction of the whole train part instead of its first 800
            (tasks/scale.py); the first images of the permutation, so fractions are nested and
            contain train800.
    """
    from autopetl.tasks.scale import subset_size

    perm = np.random.default_rng(seed).permutation(N_IMAGES)
    n_train, n_val = N_TRAIN, int(0.1 * N_IMAGES)
    train, val, test = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    n = 800 if train_fraction is None else subset_size(n_train, train_fraction)
    if split == "train800":
        return train[:n]
    if split == "val200":
        return val[:200]
    if split == "train800val200":
        return np.concatenate([train[:n], val[:200]])
    if split == "test":
        return test if test_size is None else test[:test_size]
    raise ValueError(f"unknown split {split!r}")


def generate(
    task_folder: str,
    split: str,
    *,
    seed: int = 0,
    test_size: int | None = 4096,
    train_fraction: float | None = None,
):
    """Render one split of ``dsprites_loc`` or ``dsprites_ori``.

    Returns:
        Greyscale images as uint8 [N, 64, 64] and int64 labels [N].
    """
    indices = split_indices(split, seed=seed, test_size=test_size, train_fraction=train_fraction)
    latents = latents_of(indices)
    images = np.concatenate(
        [render(chunk) for chunk in np.array_split(latents, max(1, len(latents) // 2048))]
    )
    return images, LABELS[task_folder](latents)


def best_iou(frame: np.ndarray, geometry: Geometry = GEOMETRY) -> tuple[float, np.ndarray]:
    """How well our renders explain one real binary 64x64 frame.

    Renders every shape, scale and orientation at the grid positions next to the frame's centroid
    and returns the best IoU and the latents [5] that reach it. Used to check this generator
    against real dSprites frames (tests and benchmarks/dsprites_fidelity.py).
    """
    ys, xs = np.nonzero(frame)
    near = np.arange(-1, 2)

    def grid_index(centre: float) -> np.ndarray:
        return np.unique(np.clip(np.round((centre + 0.5 - 16) / 32 * 31).astype(int) + near, 0, 31))

    mesh = np.meshgrid(
        range(N_SHAPES),
        range(N_SCALES),
        range(N_ORIENT),
        grid_index(xs.mean()),
        grid_index(ys.mean()),
        indexing="ij",
    )
    latents = np.stack(mesh).reshape(5, -1).T
    renders = render(latents, geometry) > 0
    iou = (renders & frame).sum((1, 2)) / (renders | frame).sum((1, 2))
    k = int(iou.argmax())
    return float(iou[k]), latents[k]
