"""Shared fixtures: one intra-op thread (see DEVELOPERS.md: 2-core machines), small tasks."""

from __future__ import annotations

import pytest
import torch

from metagrad.app.running.backends import configure_allocator
from metagrad.envs import random_task

torch.set_num_threads(1)
configure_allocator()  # as the CLI and its workers do (speed only)


@pytest.fixture
def small_task():
    """A small, genuinely stochastic MDP (Dirichlet 1.0) for statistical and finite-difference tests."""
    return random_task(4, 3, gamma=0.9, horizon=6, dirichlet_alpha=1.0, seed=3, start_state=None)


@pytest.fixture
def small_logits():
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
