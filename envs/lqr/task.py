"""Linear-quadratic-Gaussian task parameters and task distributions.

:class:`LQRTask` holds one task or a batch of N (frozen, validated, float64 on the CPU); the
distributions draw batches of related tasks with randomness passed in (point-mass navigation,
random stable systems). The model is stated in :mod:`metagrad.envs.lqr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from metagrad.registry import Registry
from metagrad.seeding import numpy_generator
from metagrad.validation import as_float64, check_int, check_real

__all__ = [
    "LQR_DISTRIBUTIONS",
    "LQRTask",
    "PointMassNavigation",
    "RandomStableSystem",
    "TaskDistribution",
]

_SYMMETRIC = ("Q", "R", "W", "S0")
_TOLERANCE = 1e-10  # relative tolerance of the symmetry and semi-definiteness checks


def _psd_root(x: torch.Tensor) -> torch.Tensor:
    """The symmetric square root ``L`` (``L L^T = x``) of symmetric PSD matrices ``[..., n, n]``."""
    values, vectors = torch.linalg.eigh(0.5 * (x + x.mT))
    return (vectors * values.clamp_min(0.0).sqrt().unsqueeze(-2)) @ vectors.mT


@dataclass(frozen=True, eq=False)
class LQRTask:
    """A finite-horizon linear-quadratic-Gaussian task, or a batch of N of them (immutable).

    Attributes (``*N``: empty for one task, ``(N,)`` for a batch):
        A: ``[*N, n, n]`` dynamics; B: ``[*N, n, m]`` input matrix.
        Q: ``[*N, n, n]`` state cost, symmetric positive semi-definite.
        R: ``[*N, m, m]`` action cost, symmetric positive definite.
        W: ``[*N, n, n]`` process-noise covariance, symmetric positive semi-definite.
        mu0: ``[*N, n]`` initial mean; S0: ``[*N, n, n]`` initial covariance (symmetric PSD).
        goal: ``[*N, n]`` the state the cost pulls towards.
        gamma: discount in ``[0, 1]``; horizon: ``T >= 1`` (both shared by a batch).

    In a batch, a field given without the task axis is shared by every task (e.g. one ``A`` and
    many goals). Tensors are stored as float64 on the CPU; a bad field raises ``ValueError``
    naming it (shape, NaN/inf, symmetry, semi-definiteness) before any work starts.
    """

    A: torch.Tensor
    B: torch.Tensor
    Q: torch.Tensor
    R: torch.Tensor
    W: torch.Tensor
    mu0: torch.Tensor
    S0: torch.Tensor
    goal: torch.Tensor
    gamma: float
    horizon: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    MATRICES: ClassVar[tuple[str, ...]] = ("A", "B", "Q", "R", "W", "mu0", "S0", "goal")

    def __post_init__(self) -> None:
        values = {name: as_float64(name, getattr(self, name)) for name in self.MATRICES}
        A, B = values["A"], values["B"]
        if A.ndim < 2 or A.shape[-1] != A.shape[-2] or A.shape[-1] < 1:
            raise ValueError(f"A: expected shape [n, n] or [N, n, n] with n >= 1, got {list(A.shape)}")
        if B.ndim < 2 or B.shape[-2] != A.shape[-1] or B.shape[-1] < 1:
            raise ValueError(
                f"B: expected shape [n, m] or [N, n, m] with n = {A.shape[-1]}, got {list(B.shape)}"
            )
        n, m = A.shape[-1], B.shape[-1]
        core = {"A": (n, n), "B": (n, m), "Q": (n, n), "R": (m, m), "W": (n, n), "mu0": (n,)}
        core.update({"S0": (n, n), "goal": (n,)})
        batch: tuple[int, ...] = ()
        batch_from = ""
        for name, shape in core.items():
            x = values[name]
            lead = tuple(x.shape[: x.ndim - len(shape)])
            if tuple(x.shape[x.ndim - len(shape) :]) != shape or len(lead) > 1 or (lead and lead[0] < 1):
                raise ValueError(
                    f"{name}: expected shape {list(shape)} or [N, {', '.join(map(str, shape))}], "
                    f"got {list(x.shape)}"
                )
            if lead and batch and lead != batch:
                raise ValueError(f"{name}: has {lead[0]} tasks where {batch_from} has {batch[0]}")
            if lead and not batch:
                batch, batch_from = lead, name
        for name in _SYMMETRIC:
            _check_symmetric_psd(name, values[name], definite=name == "R")
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0)
        check_int("horizon", self.horizon, 1, numpy_ok=True)
        for name, shape in core.items():
            x = values[name]
            if batch and x.ndim == len(shape):
                x = x.expand(*batch, *shape)
            object.__setattr__(self, name, x)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "horizon", int(self.horizon))

    @property
    def state_dim(self) -> int:
        """``n``."""
        return int(self.A.shape[-1])

    @property
    def action_dim(self) -> int:
        """``m``."""
        return int(self.B.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``()`` for one task, ``(N,)`` for a batch of N tasks."""
        return tuple(self.A.shape[:-2])

    @property
    def num_tasks(self) -> int:
        """1 for one task, N for a batch."""
        return int(math.prod(self.batch_shape))

    def __len__(self) -> int:
        return self.num_tasks

    def unbind(self) -> list[LQRTask]:
        """The tasks of a batch as single tasks (``[self]`` for one task)."""
        if not self.batch_shape:
            return [self]
        return [
            LQRTask(
                **{name: getattr(self, name)[i] for name in self.MATRICES},
                gamma=self.gamma,
                horizon=self.horizon,
            )
            for i in range(self.num_tasks)
        ]

    @classmethod
    def stack(cls, tasks: list[LQRTask]) -> LQRTask:
        """A batch ``[N, ...]`` of single tasks with the same n, m, gamma and horizon."""
        if not tasks:
            raise ValueError("tasks: need at least one task")
        first = tasks[0]
        for i, t in enumerate(tasks):
            if not isinstance(t, LQRTask) or t.batch_shape:
                raise ValueError(f"tasks[{i}]: expected a single LQRTask")
            if (t.state_dim, t.action_dim, t.gamma, t.horizon) != (
                first.state_dim,
                first.action_dim,
                first.gamma,
                first.horizon,
            ):
                raise ValueError(f"tasks[{i}]: n, m, gamma and horizon must match tasks[0]")
        return cls(
            **{name: torch.stack([getattr(t, name) for t in tasks]) for name in cls.MATRICES},
            gamma=first.gamma,
            horizon=first.horizon,
        )

    def tensors(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The fields on ``device`` in ``dtype`` plus the noise square roots ``W_root`` and
        ``S0_root`` (``L L^T = W``, symmetric; from float64), cached per device and dtype."""
        key = (str(torch.device(device)), dtype)
        if key not in self._cache:
            out = {name: getattr(self, name) for name in self.MATRICES}
            out["W_root"], out["S0_root"] = _psd_root(self.W), _psd_root(self.S0)
            self._cache[key] = {name: x.to(device=device, dtype=dtype) for name, x in out.items()}
        return self._cache[key]


def _check_symmetric_psd(name: str, x: torch.Tensor, *, definite: bool) -> None:
    scale = max(1.0, float(x.abs().max())) if x.numel() else 1.0
    asymmetry = float((x - x.mT).abs().max()) if x.numel() else 0.0
    if asymmetry > _TOLERANCE * scale:
        raise ValueError(f"{name}: must be symmetric (largest |{name} - {name}^T| entry {asymmetry:.3g})")
    smallest = float(torch.linalg.eigvalsh(0.5 * (x + x.mT)).min())
    if definite and not smallest > 0.0:
        raise ValueError(f"{name}: must be positive definite (smallest eigenvalue {smallest:.3g})")
    if smallest < -_TOLERANCE * scale:
        raise ValueError(f"{name}: must be positive semi-definite (smallest eigenvalue {smallest:.3g})")


# ------------------------------------------------------------------------------------------------
# Task distributions
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDistribution:
    """What every LQR task family shares: isotropic costs and noises, discount, horizon, seed.

    ``Q = state_cost I``, ``R = control_cost I``, ``W = noise_std^2 I``, ``S0 = init_std^2 I``.
    Subclasses draw ``A``, ``B``, ``mu0`` and ``goal``. Sampling is deterministic given the
    ``numpy.random.Generator`` passed in; :meth:`held_out` is a fixed evaluation batch drawn from
    a stream (:func:`metagrad.seeding.derive_seed` of ``seed``) that :meth:`train_rng` never uses.
    """

    state_cost: float = 1.0
    control_cost: float = 0.1
    noise_std: float = 0.05
    init_std: float = 0.05
    gamma: float = 0.95
    horizon: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check_real("state_cost", self.state_cost, minimum=0.0)
        check_real("control_cost", self.control_cost, minimum=0.0, open_min=True)
        check_real("noise_std", self.noise_std, minimum=0.0)
        check_real("init_std", self.init_std, minimum=0.0)
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0)
        check_int("horizon", self.horizon, 1)
        check_int("seed", self.seed, 0)

    def _draw(self, num_tasks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def dims(self) -> tuple[int, int]:
        """``(n, m)``."""
        raise NotImplementedError

    def sample(self, num_tasks: int, rng: np.random.Generator) -> LQRTask:
        """A batch of ``num_tasks`` tasks (``[N, ...]``) drawn with ``rng``."""
        check_int("num_tasks", num_tasks, numpy_ok=True)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
        n, m = self.dims
        drawn = self._draw(int(num_tasks), rng)
        eye_n, eye_m = np.eye(n), np.eye(m)
        return LQRTask(
            A=drawn["A"],
            B=drawn["B"],
            Q=self.state_cost * eye_n,
            R=self.control_cost * eye_m,
            W=self.noise_std**2 * eye_n,
            mu0=drawn["mu0"],
            S0=self.init_std**2 * eye_n,
            goal=drawn["goal"],
            gamma=self.gamma,
            horizon=self.horizon,
        )

    def held_out(self, num_tasks: int) -> LQRTask:
        """A fixed evaluation batch (the same for every caller; disjoint from training draws)."""
        return self.sample(num_tasks, numpy_generator(self.seed, "lqr", "held_out"))

    def train_rng(self, seed: int) -> np.random.Generator:
        """The generator of training draws for run ``seed`` (never the held-out stream)."""
        return numpy_generator(seed, "lqr", "train", self.seed)


@dataclass(frozen=True)
class PointMassNavigation(TaskDistribution):
    """Point-mass navigation, the 2D navigation task of MAML (Finn et al., ICML 2017) made
    linear-quadratic: ``A = I``, ``B = dt I`` (the action is a velocity), start near the origin,
    goals drawn per task.

    ``goals``: ``"circle"``, uniform on the sphere of radius ``goal_scale`` (the circle in 2D);
    ``"box"``, uniform in ``[-goal_scale, goal_scale]^dim`` (MAML's tasks: ``goal_scale = 0.5``).
    """

    dim: int = 2
    dt: float = 0.1
    goals: Literal["circle", "box"] = "circle"
    goal_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("dim", self.dim, 1)
        check_real("dt", self.dt, minimum=0.0, open_min=True)
        check_real("goal_scale", self.goal_scale, minimum=0.0)
        if self.goals not in ("circle", "box"):
            raise ValueError(f"goals: expected 'circle' or 'box', got {self.goals!r}")

    @property
    def dims(self) -> tuple[int, int]:
        return self.dim, self.dim

    def _draw(self, num_tasks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d = self.dim
        if self.goals == "circle":
            direction = rng.standard_normal((num_tasks, d))
            norm = np.linalg.norm(direction, axis=-1, keepdims=True)
            goal = self.goal_scale * direction / np.where(norm > 0, norm, 1.0)
        else:
            goal = rng.uniform(-self.goal_scale, self.goal_scale, size=(num_tasks, d))
        return {"A": np.eye(d), "B": self.dt * np.eye(d), "mu0": np.zeros(d), "goal": goal}


@dataclass(frozen=True)
class RandomStableSystem(TaskDistribution):
    """Random stable linear systems: ``A = spectral_radius G / rho(G)`` with ``G`` standard
    normal (so every eigenvalue of ``A`` has modulus at most ``spectral_radius``), ``B`` normal with
    variance ``input_scale^2 / n``, ``mu0 ~ N(0, init_scale^2 I)`` and ``goal ~ N(0, goal_scale^2 I)``
    (``goal_scale = 0``: regulation to the origin), all drawn per task."""

    state_dim: int = 2
    action_dim: int = 2
    spectral_radius: float = 0.9
    input_scale: float = 1.0
    init_scale: float = 1.0
    goal_scale: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("state_dim", self.state_dim, 1)
        check_int("action_dim", self.action_dim, 1)
        check_real("spectral_radius", self.spectral_radius, minimum=0.0)
        for name in ("input_scale", "init_scale", "goal_scale"):
            check_real(name, getattr(self, name), minimum=0.0)

    @property
    def dims(self) -> tuple[int, int]:
        return self.state_dim, self.action_dim

    def _draw(self, num_tasks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n, m = self.state_dim, self.action_dim
        G = rng.standard_normal((num_tasks, n, n))
        radius = np.abs(np.linalg.eigvals(G)).max(-1).reshape(-1, 1, 1)
        A = self.spectral_radius * G / np.where(radius > 0, radius, 1.0)
        B = rng.standard_normal((num_tasks, n, m)) * self.input_scale / math.sqrt(n)
        mu0 = rng.standard_normal((num_tasks, n)) * self.init_scale
        goal = rng.standard_normal((num_tasks, n)) * self.goal_scale
        return {"A": A, "B": B, "mu0": mu0, "goal": goal}


LQR_DISTRIBUTIONS: Registry[type[TaskDistribution]] = Registry("LQR task distribution")
LQR_DISTRIBUTIONS.register("navigation", PointMassNavigation)
LQR_DISTRIBUTIONS.register("stable", RandomStableSystem)
