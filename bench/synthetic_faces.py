"""Synthetic face vectors for the clustering benchmarks: identities as random directions in 512-d space,
faces as noisy copies, with look-alike families (siblings, twins) and one-off strangers."""

from __future__ import annotations

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def noise_for_distance(distance: float, dim: int) -> float:
    """Per-coordinate noise whose two noisy copies of one vector are `distance` apart (cosine) on average."""
    # cos between c+e1 and c+e2 with |c|=1, |e|^2 = dim*s^2 is ~ 1/(1 + dim*s^2).
    return float(np.sqrt((1.0 / (1.0 - distance) - 1.0) / dim))


def clustered_faces(
    n_faces: int,
    n_people: int,
    dim: int = 512,
    spread: float = 0.35,
    lookalike_share: float = 0.0,
    lookalike_distance: float = 0.45,
    stranger_share: float = 0.05,
    faces_per_photo: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors (n, dim) float32, identity labels (n,) with -1 for one-off strangers, photo ids (n,)).

    spread: mean cosine distance between two faces of one person (real ArcFace: ~0.3-0.6).
    lookalike_share: share of people that have a look-alike sibling `lookalike_distance` away.
    Face counts per person follow a long-tailed distribution like real libraries.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_people, dim)))
    n_look = int(n_people * lookalike_share) // 2
    for i in range(n_look):  # person 2i+1 looks like person 2i
        step = noise_for_distance(lookalike_distance, dim) * np.sqrt(2)
        centres[2 * i + 1] = unit(centres[2 * i] + step * rng.standard_normal(dim))
    n_strangers = int(n_faces * stranger_share)
    weights = rng.pareto(1.2, n_people) + 1.0
    counts = np.maximum(1, np.round(weights / weights.sum() * (n_faces - n_strangers))).astype(int)
    people = np.repeat(np.arange(n_people), counts)[: n_faces - n_strangers]
    noise = noise_for_distance(spread, dim) / np.sqrt(2)
    # Some faces are harder (blur, profile): a per-face noise factor around 1.
    factor = rng.lognormal(0.0, 0.25, len(people))[:, None]
    faces = unit(centres[people] + noise * factor * rng.standard_normal((len(people), dim)).astype(np.float32))
    strangers = unit(rng.standard_normal((n_faces - len(people), dim)))
    vectors = np.concatenate([faces, strangers]).astype(np.float32)
    labels = np.concatenate([people, np.full(len(strangers), -1)])
    perm = rng.permutation(len(vectors))
    vectors, labels = vectors[perm], labels[perm]
    photos = _photos(labels, faces_per_photo, rng)
    return vectors, labels, photos


def _photos(labels: np.ndarray, faces_per_photo: int, rng: np.random.Generator) -> np.ndarray:
    """Photo ids such that no photo shows one identity twice (group photos of distinct people)."""
    if faces_per_photo <= 1:
        return np.arange(len(labels))
    photos = np.empty(len(labels), dtype=np.int64)
    next_photo, current, members = 0, [], set()
    for i in rng.permutation(len(labels)):
        if len(current) >= faces_per_photo or (labels[i] >= 0 and labels[i] in members):
            next_photo, current, members = next_photo + 1, [], set()
        photos[i] = next_photo
        current.append(i)
        if labels[i] >= 0:
            members.add(labels[i])
    return photos
