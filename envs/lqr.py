"""Linear-quadratic-Gaussian tasks: parameters, task distributions, a batched torch rollout
engine for linear-Gaussian policies and Gymnasium faces (``MetaGrad/LQR-v0``).

The model (state ``x`` in R^n, action ``u`` in R^m, horizon T, discount gamma)::

    x_0 ~ N(mu0, S0),   x_{t+1} = A x_t + B u_t + w_t,   w_t ~ N(0, W),
    r_t = -((x_t - goal)^T Q (x_t - goal) + u_t^T R u_t),   t < T,
    u_t = K x_t + k + exp(log_std) * eps_t,   eps_t ~ N(0, I_m)   (the policy),

and the objective ``J = E[sum_{t<T} gamma^t r_t]``, which :mod:`metagrad.exact.lqr` computes in
closed form. Task parameters (:class:`LQRTask`) are frozen and may hold a batch of N tasks; the
engine (:func:`rollout`) samples every episode of every policy of a batch as one tensor
recursion, time-major ``[T, B, *G, ...]``, on the CPU or a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from metagrad.envs.tabular import TimeMajorBatch, _as_float64
from metagrad.registry import Registry
from metagrad.seeding import numpy_generator
from metagrad.validation import check_int, check_real

__all__ = [
    "LQR_DISTRIBUTIONS",
    "LQREnv",
    "LQRTask",
    "LQRTrajectory",
    "LQRVectorEnv",
    "LinearGaussian",
    "PointMassNavigation",
    "RandomStableSystem",
    "TaskDistribution",
    "as_policy",
    "gaussian_log_probs",
    "rollout",
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
        values = {name: _as_float64(name, getattr(self, name)) for name in self.MATRICES}
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


# ------------------------------------------------------------------------------------------------
# Linear-Gaussian policies and the batched engine
# ------------------------------------------------------------------------------------------------


class LinearGaussian(NamedTuple):
    """The parameters of a linear-Gaussian policy ``u = K x + k + exp(log_std) * eps``, or the
    gradients with respect to them: ``K [*G, m, n]``, ``k [*G, m]``, ``log_std [*G, m]``."""

    K: torch.Tensor
    k: torch.Tensor
    log_std: torch.Tensor

    def flatten(self) -> torch.Tensor:
        """One vector per policy, ``[*G, m n + 2 m]`` (``K`` row-major, then ``k``, ``log_std``)."""
        K, k, log_std = torch.broadcast_tensors(self.K, self.k.unsqueeze(-1), self.log_std.unsqueeze(-1))
        batch = K.shape[:-2]
        return torch.cat([K.reshape(*batch, -1), k[..., 0], log_std[..., 0]], dim=-1)

    @classmethod
    def unflatten(cls, theta: torch.Tensor, state_dim: int, action_dim: int) -> LinearGaussian:
        """The inverse of :meth:`flatten` (views of ``theta [*G, m n + 2 m]``, graph kept)."""
        n, m = state_dim, action_dim
        if theta.shape[-1] != m * n + 2 * m:
            raise ValueError(
                f"theta: expected a last axis of m n + 2 m = {m * n + 2 * m}, got {theta.shape[-1]}"
            )
        batch = theta.shape[:-1]
        return cls(
            theta[..., : m * n].reshape(*batch, m, n), theta[..., m * n : m * n + m], theta[..., m * n + m :]
        )


def as_policy(task: LQRTask, K: Any, k: Any, log_std: Any) -> LinearGaussian:
    """Checked policy parameters broadcast to one batch shape ``G`` that fits ``task``.

    ``K [*G, m, n]``, ``k [*G, m]``, ``log_std [*G, m]`` (tensors keep their dtype, device and
    graph; other array-likes become float64 tensors). Their batch shapes broadcast; for a batch
    of N tasks the last axis of ``G`` is the task axis (``G = ()`` plays one policy in every task).
    """
    n, m = task.state_dim, task.action_dim
    named = {"K": K, "k": k, "log_std": log_std}
    out = {}
    for name, value in named.items():
        x = value if isinstance(value, torch.Tensor) else _as_float64(name, value)
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
        core = (m, n) if name == "K" else (m,)
        if x.ndim < len(core) or tuple(x.shape[x.ndim - len(core) :]) != core:
            raise ValueError(f"{name}: expected shape [*G, {', '.join(map(str, core))}], got {list(x.shape)}")
        if not torch.isfinite(x.detach()).all():
            raise ValueError(f"{name}: contains NaN or infinite entries")
        out[name] = x
    batches = [tuple(out["K"].shape[:-2]), tuple(out["k"].shape[:-1]), tuple(out["log_std"].shape[:-1])]
    try:
        batch = tuple(np.broadcast_shapes(*batches, task.batch_shape))
    except ValueError:
        raise ValueError(
            f"K, k, log_std: batch shapes {batches} do not broadcast together and against the "
            f"task batch {list(task.batch_shape)} (the last policy axis is the task axis)"
        ) from None
    return LinearGaussian(
        out["K"].expand(*batch, m, n), out["k"].expand(*batch, m), out["log_std"].expand(*batch, m)
    )


def gaussian_log_probs(policy: LinearGaussian, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log N(u; K x + k, diag(exp(2 log_std)))`` of ``actions [T, B, *G, m]`` in ``states
    [T, B, *G, n]`` (both held fixed), ``[T, B, *G]``, with the graph of the policy parameters
    ``[*G, ...]`` only (the score-function form)."""
    mean = (policy.K @ states.detach().unsqueeze(-1)).squeeze(-1) + policy.k
    z = (actions.detach() - mean) * torch.exp(-policy.log_std)
    m = actions.shape[-1]
    return -0.5 * (z * z).sum(-1) - policy.log_std.sum(-1) - 0.5 * m * math.log(2 * math.pi)


@dataclass(frozen=True, eq=False)
class LQRTrajectory(TimeMajorBatch):
    """A time-major batch of LQR episodes from :func:`rollout`.

    Shapes: ``T`` the horizon, ``B`` episodes per policy, ``G`` the policy batch shape.

    Attributes:
        states: ``[T, B, *G, n]`` (``x_t``); actions: ``[T, B, *G, m]`` (``u_t``).
        rewards: ``[T, B, *G]``; with ``reparameterize=True`` they (and the states and actions)
            carry the graph of the policy parameters through the actions and the dynamics.
        log_probs: ``[T, B, *G]``; ``log pi(u_t | x_t)`` with states and actions held fixed,
            differentiable w.r.t. the policy parameters (the score-function form).
        behaviour_log_probs: the same values cut from the graph.
        discounts: ``[T, B, *G]``; ``gamma`` between ``t`` and ``t + 1``.
        terminated, truncated: bool ``[T, B, *G]``; never terminated, truncated at the last step.
        final_states: ``[B, *G, n]``; ``x_T``.
    """

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    behaviour_log_probs: torch.Tensor
    discounts: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_states: torch.Tensor


def rollout(
    task: LQRTask,
    K: torch.Tensor,
    k: torch.Tensor,
    log_std: torch.Tensor,
    num_episodes: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    reparameterize: bool = False,
) -> LQRTrajectory:
    """Sample ``num_episodes`` episodes of the policy ``u = K x + k + exp(log_std) eps``, batched.

    Every episode of every policy advances in one batched matrix product per time step: with
    ``F = A + B K`` and the noise of all steps drawn up front, ``x_{t+1} = F x_t + B (k +
    sigma eps_t) + w_t``; actions, rewards and log-densities then follow for all steps at once.

    Args:
        task: one task, or a batch of N (the last policy-batch axis is then the task axis).
        K, k, log_std: ``[*G, m, n]``, ``[*G, m]``, ``[*G, m]`` (see :func:`as_policy`); the
            computation runs in their dtype.
        num_episodes: ``B >= 1`` episodes per policy.
        generator: source of randomness (on ``device``). One block of standard normals
            ``[T + 1, B, *G, n + m]`` is drawn per call whatever the policy, so the same seed gives
            the same noise to every policy and estimator (common random numbers).
        device: where to simulate (default: the parameters' device).
        reparameterize: keep the graph of ``K, k, log_std`` through the actions and the dynamics
            in ``states``, ``actions`` and ``rewards`` (for pathwise estimators); otherwise they
            are sampled without a graph.
    Returns:
        An :class:`LQRTrajectory`, tensors ``[T, B, *G, ...]``.
    """
    policy = as_policy(task, K, k, log_std)
    B = check_int("num_episodes", num_episodes, 1, numpy_ok=True)
    device = torch.device(device) if device is not None else policy.K.device
    policy = LinearGaussian(*(x.to(device) for x in policy))
    dtype = policy.K.dtype
    n, m, T = task.state_dim, task.action_dim, task.horizon
    batch = tuple(policy.K.shape[:-2])
    g = int(math.prod(batch))
    tables = task.tensors(device, dtype)

    def per_policy(name: str, core: tuple[int, ...]) -> torch.Tensor:  # [g, *core]
        return tables[name].expand(*batch, *core).reshape(g, *core)

    A, Bm, goal = per_policy("A", (n, n)), per_policy("B", (n, m)), per_policy("goal", (n,))
    Q, R = per_policy("Q", (n, n)), per_policy("R", (m, m))
    noise = torch.randn((T + 1, B, *batch, n + m), generator=generator, device=device, dtype=dtype)
    noise = noise.reshape(T + 1, B, g, n + m).transpose(1, 2)  # [T + 1, g, B, n + m]
    with torch.set_grad_enabled(reparameterize and torch.is_grad_enabled()):
        params = policy if reparameterize else LinearGaussian(*(x.detach() for x in policy))
        Kg, kg = params.K.reshape(g, m, n), params.k.reshape(g, 1, m)
        std = torch.exp(params.log_std).reshape(g, 1, m)
        # x_0 = mu0 + S0^(1/2) z; w_t = W^(1/2) z_t; the open-loop action part k + sigma eps_t
        x = per_policy("mu0", (n,)).unsqueeze(1) + noise[T, ..., :n] @ per_policy("S0_root", (n, n)).mT
        process = noise[:T, ..., :n] @ per_policy("W_root", (n, n)).mT.unsqueeze(0)  # [T, g, B, n]
        open_loop = kg + std * noise[:T, ..., n:]  # [T, g, B, m]
        drive = process + open_loop @ Bm.mT.unsqueeze(0)
        F_T = (A + Bm @ Kg).mT
        xs = [x]
        for t in range(T):
            xs.append(torch.baddbmm(drive[t], xs[-1], F_T))
        states = torch.stack(xs[:T])  # [T, g, B, n]
        actions = states @ Kg.mT.unsqueeze(0) + open_loop
        offset = states - goal.unsqueeze(1)
        cost = ((offset @ Q) * offset).sum(-1) + ((actions @ R) * actions).sum(-1)
        rewards = -cost

    def time_major(x: torch.Tensor, *core: int) -> torch.Tensor:  # [T, g, B, *core] -> [T, B, *G, *core]
        return x.transpose(1, 2).reshape(x.shape[0], B, *batch, *core)

    states, actions = time_major(states, n), time_major(actions, m)
    log_probs = gaussian_log_probs(policy, states, actions)
    shape = (T, B, *batch)
    terminated, truncated = LQRTrajectory.horizon_flags(shape, device)
    return LQRTrajectory(
        states=states,
        actions=actions,
        rewards=time_major(rewards),
        log_probs=log_probs,
        behaviour_log_probs=log_probs.detach(),
        discounts=torch.full(shape, task.gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=xs[T].transpose(0, 1).reshape(B, *batch, n),
    )


# ------------------------------------------------------------------------------------------------
# Gymnasium faces
# ------------------------------------------------------------------------------------------------


def _single_task(task: LQRTask | None, task_seed: int | None, distribution: str, kwargs: dict) -> LQRTask:
    if task is not None:
        if not isinstance(task, LQRTask):
            raise ValueError(f"task: expected an LQRTask, got {type(task).__name__}")
        if kwargs:
            raise ValueError(f"task given: do not also pass distribution arguments {sorted(kwargs)}")
        return task
    family = LQR_DISTRIBUTIONS[distribution](**kwargs)
    seed = 0 if task_seed is None else check_int("task_seed", task_seed, 0)
    return family.sample(1, numpy_generator(seed, "lqr", "env_task")).unbind()[0]


def _box(shape: tuple[int, ...], bound: float | None = None) -> spaces.Box:
    high = np.inf if bound is None else bound
    return spaces.Box(-high, high, shape=shape, dtype=np.float64)


def _check_bound(action_bound: float | None) -> float | None:
    if action_bound is None:
        return None
    return check_real("action_bound", action_bound, minimum=0.0, open_min=True)


class LQREnv(gym.Env):
    """Gymnasium face of one :class:`LQRTask` (id ``MetaGrad/LQR-v0``).

    Observations are the state ``x_t`` (an unbounded float64 ``Box``) and actions the control
    ``u_t``, clipped to ``[-action_bound, action_bound]`` (a ``Box`` with those bounds; Stable
    Baselines3 needs finite ones). Within the bounds the env is the linear model exactly;
    ``action_bound=None`` never clips (an unbounded action ``Box``). The reward is ``r_t`` and
    episodes are truncated at the horizon. Pass ``task=`` or let ``task_seed`` draw one from the
    ``distribution`` (a name in :data:`LQR_DISTRIBUTIONS`, default point-mass navigation) with
    its keyword arguments. ``reset(options={"task": other})`` switches to another task of the same
    sizes (meta-RL: one task per episode). Render modes: ``"ansi"`` and ``"rgb_array"`` (the first
    two state coordinates: the agent white, the goal green).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: LQRTask | None = None,
        task_seed: int | None = None,
        render_mode: str | None = None,
        action_bound: float | None = 10.0,
        distribution: str = "navigation",
        **distribution_kwargs: Any,
    ) -> None:
        self.action_bound = _check_bound(action_bound)
        self.task = _single_task(task, task_seed, distribution, distribution_kwargs)
        if task is not None and task.batch_shape:
            raise ValueError(f"task: the Gymnasium env plays one task, got a batch of {task.num_tasks}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.observation_space = _box((self.task.state_dim,))
        self.action_space = _box((self.task.action_dim,), self.action_bound)
        self._set_task(self.task)
        self._x = self._m["mu0"].copy()
        self._t = 0

    def _set_task(self, task: LQRTask) -> None:
        self.task = task
        self._m = {name: x.numpy() for name, x in task.tensors("cpu", torch.float64).items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            other = options["task"]
            if not isinstance(other, LQRTask) or other.batch_shape:
                raise ValueError("options['task']: expected a single LQRTask")
            if (other.state_dim, other.action_dim) != (self.task.state_dim, self.task.action_dim):
                raise ValueError("options['task']: must have the sizes (n, m) of the env's task")
            self._set_task(other)
        noise = self.np_random.standard_normal(self.task.state_dim)
        self._x = self._m["mu0"] + self._m["S0_root"] @ noise
        self._t = 0
        return self._x.copy(), {"step": 0}

    def step(self, action):
        u = np.asarray(action, dtype=np.float64)
        if u.shape != (self.task.action_dim,) or not np.isfinite(u).all():
            raise ValueError(f"action: expected {self.task.action_dim} finite numbers, got {action!r}")
        if self.action_bound is not None:
            u = np.clip(u, -self.action_bound, self.action_bound)
        m, x = self._m, self._x
        offset = x - m["goal"]
        reward = -float(offset @ m["Q"] @ offset + u @ m["R"] @ u)
        noise = self.np_random.standard_normal(self.task.state_dim)
        self._x = m["A"] @ x + m["B"] @ u + m["W_root"] @ noise
        self._t += 1
        truncated = self._t >= self.task.horizon
        return self._x.copy(), reward, False, truncated, {"step": self._t}

    def render(self):
        if self.render_mode == "ansi":
            return f"t={self._t} x={np.array2string(self._x, precision=3)}"
        if self.render_mode == "rgb_array":
            return _frame(self._x, self._m["goal"], self._t / self.task.horizon)
        return None


def _frame(x: np.ndarray, goal: np.ndarray, progress: float, size: int = 64) -> np.ndarray:
    """``uint8 [size + 4, size, 3]``: the first two coordinates of the state (white) and goal
    (green) in a square around the origin, and a bar filled to ``progress``."""
    frame = np.zeros((size + 4, size, 3), dtype=np.uint8)
    extent = 1.5 * max(1.0, float(np.abs(goal[:2]).max()), float(np.abs(x[:2]).max()))

    def pixel(p: np.ndarray) -> tuple[int, int]:
        xy = np.append(p[:2], 0.0)[:2]
        col, row = ((xy / extent + 1.0) / 2.0 * (size - 1)).round().astype(int)
        return int(np.clip(size - 1 - row, 1, size - 2)), int(np.clip(col, 1, size - 2))

    for point, colour in ((goal, (0, 200, 0)), (x, (255, 255, 255))):
        r, c = pixel(point)
        frame[r - 1 : r + 2, c - 1 : c + 2] = colour
    frame[size + 1 : size + 3, : round(min(max(progress, 0.0), 1.0) * size)] = 255
    return frame


class LQRVectorEnv(VectorEnv):
    """``num_envs`` LQR episodes stepped together by torch (``gymnasium.make_vec("MetaGrad/LQR-v0")``).

    Every sub-environment plays the same task, or, given a batch of N tasks, sub-environment ``i``
    plays task ``i`` (``num_envs`` must then be N). Observations, rewards and flags are numpy
    arrays; actions are clipped to ``[-action_bound, action_bound]`` as in :class:`LQREnv`;
    autoreset follows Gymnasium's default ``NEXT_STEP`` mode (the step after a truncation resets
    that sub-environment, ignores its action and pays 0).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        task: LQRTask | None = None,
        task_seed: int | None = None,
        device: str | torch.device = "cpu",
        action_bound: float | None = 10.0,
        distribution: str = "navigation",
        **distribution_kwargs: Any,
    ) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1, numpy_ok=True)
        self.action_bound = _check_bound(action_bound)
        self.task = _single_task(task, task_seed, distribution, distribution_kwargs)
        if self.task.batch_shape and self.task.num_tasks != self.num_envs:
            raise ValueError(
                f"num_envs: a batch of {self.task.num_tasks} tasks needs num_envs = {self.task.num_tasks}"
            )
        self.device = torch.device(device)
        n, m = self.task.state_dim, self.task.action_dim
        self.single_observation_space, self.single_action_space = _box((n,)), _box((m,), self.action_bound)
        self.observation_space = _box((self.num_envs, n))
        self.action_space = _box((self.num_envs, m), self.action_bound)
        tables = self.task.tensors(self.device, torch.float64)
        self._m = {
            name: (x if self.task.batch_shape else x.expand(self.num_envs, *x.shape))
            for name, x in tables.items()
        }
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._x = torch.zeros(self.num_envs, n, dtype=torch.float64, device=self.device)
        self._t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _normal(self) -> torch.Tensor:
        shape = (self.num_envs, self.task.state_dim)
        return torch.randn(shape, generator=self._generator, device=self.device, dtype=torch.float64)

    def _initial(self) -> torch.Tensor:
        return self._m["mu0"] + (self._m["S0_root"] @ self._normal().unsqueeze(-1)).squeeze(-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._x = self._initial()
        self._t.zero_()
        self._needs_reset.zero_()
        return self._x.cpu().numpy(), {}

    def step(self, actions):
        u = torch.as_tensor(np.asarray(actions, dtype=np.float64), device=self.device)
        if u.shape != (self.num_envs, self.task.action_dim) or not torch.isfinite(u).all():
            raise ValueError(
                f"actions: expected finite numbers of shape {[self.num_envs, self.task.action_dim]}"
            )
        if self.action_bound is not None:
            u = u.clamp(-self.action_bound, self.action_bound)
        m, x = self._m, self._x
        offset = x - m["goal"]
        quad = (offset.unsqueeze(-2) @ m["Q"] @ offset.unsqueeze(-1)).reshape(-1)
        rewards = -(quad + (u.unsqueeze(-2) @ m["R"] @ u.unsqueeze(-1)).reshape(-1))
        next_x = (m["A"] @ x.unsqueeze(-1) + m["B"] @ u.unsqueeze(-1)).squeeze(-1)
        next_x = next_x + (m["W_root"] @ self._normal().unsqueeze(-1)).squeeze(-1)
        self._t += 1
        reset_mask = self._needs_reset  # NEXT_STEP autoreset: truncated last step, restart now
        if reset_mask.any():
            next_x = torch.where(reset_mask.unsqueeze(-1), self._initial(), next_x)
            rewards = torch.where(reset_mask, torch.zeros_like(rewards), rewards)
            self._t = torch.where(reset_mask, torch.zeros_like(self._t), self._t)
        truncated = (self._t >= self.task.horizon) & ~reset_mask
        self._x = next_x
        self._needs_reset = truncated.clone()
        return (
            self._x.cpu().numpy(),
            rewards.cpu().numpy(),
            torch.zeros_like(truncated).cpu().numpy(),
            truncated.cpu().numpy(),
            {},
        )
