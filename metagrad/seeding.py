"""Every random stream of the suite, derived from a run seed and labels, in one module.

Randomness is passed in (a ``torch.Generator`` or a ``numpy.random.Generator``), never global.
Where the suite itself makes a generator, it asks this module for its seed, so that the rule
"same run seed, same numbers" has one place to hold:

* :func:`derive_seed` is the scheme for every new stream: a 62-bit seed from the run seed and a
  tuple of labels (``numpy.random.SeedSequence`` over the run seed and a stable hash of the
  labels), independent across labels and stable across processes, platforms and Python versions.
  :func:`torch_generator` and :func:`numpy_generator` wrap it.
* :func:`digest` (16 hex digits of SHA-256 over a JSON form) names a cell, a setting or a config;
  :func:`stable_hash` turns text into an integer seed (bootstraps of a table, claims).
* The named streams below (:func:`cell_seed`, :func:`task_seed`, ...) predate the scheme. Their
  formulas are kept exactly, so stores written by earlier versions recompute bit for bit
  (``metagrad check --against``); new code derives its streams with :func:`derive_seed`.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import torch

__all__ = [
    "SEED_BITS",
    "cell_seed",
    "derive_seed",
    "digest",
    "game_stream_seed",
    "heldout_task_rng",
    "neighbour_seed",
    "numpy_generator",
    "pair_seed",
    "setting_seed",
    "stable_hash",
    "target_policy_seed",
    "task_seed",
    "torch_generator",
    "train_task_rng",
]

SEED_BITS = 62  # seeds stay below 2**62: valid for torch, numpy and JSON integers alike


def digest(payload: object) -> str:
    """A stable 16-hex-digit name of a JSON-able payload (keys sorted; other values as ``str``)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stable_hash(*parts: object) -> int:
    """A 60-bit integer from the text of ``parts`` (stable across processes, unlike ``hash``)."""
    text = "|".join(str(p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def derive_seed(seed: int, *labels: object) -> int:
    """The seed of the stream named by ``labels`` under run seed ``seed``.

    Different labels give independent streams (``SeedSequence`` spawning from the run seed and
    a stable hash of the labels); the same labels always give the same seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    words = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(seed) >> 64, stable_hash(*labels)]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 32 | int(state[1])) % (2**SEED_BITS)


def torch_generator(seed: int, *labels: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` (``seed``, ``labels``);
    with no labels, seeded with ``seed`` itself."""
    value = derive_seed(seed, *labels) if labels else int(seed)
    return torch.Generator(device=device).manual_seed(value)


def numpy_generator(seed: int, *labels: object) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded with :func:`derive_seed` (``seed``, ``labels``)."""
    return np.random.default_rng(derive_seed(seed, *labels))


# ------------------------------------------------------------------------------------------------
# Named streams kept from earlier versions (formulas unchanged: stored rows recompute exactly).
# ------------------------------------------------------------------------------------------------


def setting_seed(key: str) -> int:
    """The seed of a setting named by a :func:`digest` ``key`` (its 62 low bits)."""
    return int(key, 16) % (2**SEED_BITS)


def cell_seed(run_seed: int, pairing_key: str) -> int:
    """A cell's seed: its setting's :func:`digest` (never its estimator) plus the run seed, so
    every estimator scored on one setting draws the same random numbers."""
    return setting_seed(pairing_key) + run_seed


def task_seed(run_seed: int, index: int) -> int:
    """The seed of task ``index`` of a tabular run (the MDP drawn by ``random_task``)."""
    return run_seed * 100_003 + index


def target_policy_seed(run_seed: int, index: int) -> int:
    """The seed of the target policy of task ``index`` (the Hessian-scoring experiments)."""
    return task_seed(run_seed, index) + 7_919


def pair_seed(run_seed: int, index: int) -> int:
    """The seed of random policy pair ``index`` of an iterated-game run."""
    return run_seed * 1_000_003 + index


def game_stream_seed(run_seed: int, game: str, salt: int) -> int:
    """The seed of a game's environment and action stream (``salt`` tells the streams apart)."""
    return (run_seed * 1_000_003 + zlib.crc32(game.encode()) + salt) % (2**31)


def neighbour_seed(seed: int) -> int:
    """The seed next to ``seed`` (mod ``2**62``): a second stream beside one seeded with ``seed``
    (the injected-bias stream of an MLMC path beside its critic stream)."""
    return (seed + 1) % 2**SEED_BITS


def heldout_task_rng(distribution_seed: int) -> np.random.Generator:
    """The held-out task stream of a task distribution (never used for training draws)."""
    return np.random.default_rng([distribution_seed, 7_919])


def train_task_rng(distribution_seed: int, run_seed: int) -> np.random.Generator:
    """The training task stream of a task distribution for run ``run_seed``."""
    return np.random.default_rng([distribution_seed, 1, run_seed])
