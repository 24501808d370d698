"""Meta-gradient RL (Xu et al., NeurIPS 2018) on A2C, with the Hessian estimator selectable.

Meta-parameters ``eta``: sigmoid logits of the discount ``gamma`` (init 0.99) and the GAE
``lambda`` (init 0.95), optionally also of the value and entropy coefficients. One meta-iteration:

1. K differentiable inner updates ``theta_{k+1} = theta_k - alpha P_k grad_theta L_in(theta_k, eta)``
   (``create_graph=True``) on successive rollouts; ``L_in`` is :func:`metagrad.agents.a2c.a2c_loss` whose
   returns use ``gamma(eta)``, ``lambda(eta)``; its policy term is the chosen estimator's surrogate
   (``pg``: ``A log pi`` as in common MGRL code; ``lvc``: the low-bias Hessian of Liu et al. 2022;
   ``dice``). ``P_k`` is RMSprop's preconditioner, treated as a constant (its statistics are
   cut from the graph), and the gradient is norm-clipped (differentiably).
2. The outer loss: the policy-gradient loss with fixed gamma 0.99 and lambda 0.95 on a fresh
   rollout of ``theta_K`` (which is then the next iteration's first inner batch), or, with
   ``outer="replay"``, on the last inner batch reweighted by per-step importance ratios
   (off-policy reuse, no extra rollout).
3. ``eta`` takes an Adam step (lr 1e-3) along ``-d L_out / d eta``; the agent continues from ``theta_K``.

With K = 1 the meta-gradient only involves the first derivative of the inner surrogate, where
``pg`` and ``lvc`` agree; their Hessians enter from K = 2 on (the default).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from metagrad.agents.a2c import (
    A2CConfig,
    EnvConfig,
    Params,
    Rollout,
    a2c_loss,
    build_model,
    collect_rollout,
)
from metagrad.estimators import get_estimator, stop_gradient
from metagrad.seeding import torch_generator
from metagrad.validation import check_choice, check_int, check_real, check_real_fields

__all__ = [
    "META_NAMES",
    "OUTER_MODES",
    "MGRLAgent",
    "MGRLConfig",
    "initial_meta_parameters",
    "inner_step",
    "meta_gradient",
    "paired_meta_gradients",
]

META_NAMES = ("gamma", "lambda", "value_coef", "entropy_coef")
OUTER_MODES = ("fresh", "replay")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class MGRLConfig:
    """MGRL on top of an :class:`~metagrad.agents.a2c.A2CConfig` (inner learner settings).

    ``policy_lambda``: the GAE lambda of the inner policy term's advantages; ``None`` (default)
    uses the meta-parameter lambda as Xu et al. 2018 do; ``1.0`` gives ``G_t - V(s_t)``, the
    setting under which Loaded DiCE is an unbiased reference for the inner Hessian (the bias bench).
    """

    a2c: A2CConfig = field(default_factory=A2CConfig)
    inner_steps: int = 2
    estimator: str = "pg"
    meta_lr: float = 1e-3
    init_gamma: float = 0.99
    init_lambda: float = 0.95
    learn_coefs: bool = False
    outer_gamma: float = 0.99
    outer_lambda: float = 0.95
    outer: str = "fresh"
    policy_lambda: float | None = None

    def __post_init__(self) -> None:
        check_int("inner_steps", self.inner_steps, 1)
        get_estimator(self.estimator)
        check_choice("outer", self.outer, OUTER_MODES)
        check_real_fields(
            self, ("init_gamma", "init_lambda"), minimum=0.0, maximum=1.0, open_min=True, open_max=True
        )
        check_real("meta_lr", self.meta_lr, minimum=0.0, open_min=True)
        check_real_fields(self, ("outer_gamma", "outer_lambda"), minimum=0.0, maximum=1.0)
        if self.policy_lambda is not None:
            check_real("policy_lambda", self.policy_lambda, minimum=0.0, maximum=1.0)


def initial_meta_parameters(config: MGRLConfig, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Fresh meta-logits (float32 leaves): ``logit(init_gamma)``, ``logit(init_lambda)`` and, with
    ``learn_coefs``, 0 for the coefficients (their defaults)."""
    names = META_NAMES if config.learn_coefs else META_NAMES[:2]
    init = {"gamma": _logit(config.init_gamma), "lambda": _logit(config.init_lambda)}
    return {
        n: torch.tensor(init.get(n, 0.0), dtype=torch.float32, device=device, requires_grad=True)
        for n in names
    }


def meta_values(eta: dict[str, torch.Tensor], config: A2CConfig) -> dict[str, torch.Tensor | float]:
    """gamma, lambda and the loss coefficients from the meta-logits (fixed ones where not learned)."""
    out: dict[str, torch.Tensor | float] = {
        "gamma": torch.sigmoid(eta["gamma"]),
        "lambda": torch.sigmoid(eta["lambda"]),
        "value_coef": config.value_coef,
        "entropy_coef": config.entropy_coef,
    }
    if "value_coef" in eta:  # coefficients as sigmoid(x) scaled to (0, 2 x default)
        out["value_coef"] = 2 * config.value_coef * torch.sigmoid(eta["value_coef"])
        out["entropy_coef"] = 2 * config.entropy_coef * torch.sigmoid(eta["entropy_coef"])
    return out


def inner_step(
    model: nn.Module,
    params: Params,
    batch: Rollout,
    meta: dict[str, torch.Tensor | float],
    rms: dict[str, torch.Tensor],
    config: A2CConfig,
    estimator: str,
    policy_lambda: float | None = None,
) -> tuple[Params, dict[str, torch.Tensor]]:
    """One differentiable inner update: RMSprop-preconditioned, norm-clipped gradient descent on
    :func:`metagrad.agents.a2c.a2c_loss`; the graph to ``params`` and the meta-parameters is kept
    (``policy_lambda``: the policy term's GAE lambda, default the meta-parameter lambda)."""
    loss = a2c_loss(
        model,
        params,
        batch,
        meta["gamma"],
        meta["lambda"],
        estimator=estimator,
        value_coef=meta["value_coef"],
        entropy_coef=meta["entropy_coef"],
        advantage_lambda=policy_lambda,
    )
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    scale = torch.clamp(config.max_grad_norm / (norm + 1e-6), max=1.0)
    new_params, new_rms = {}, {}
    for name, g in zip(names, grads, strict=True):
        g = g * scale
        v = config.rms_alpha * rms[name] + (1 - config.rms_alpha) * stop_gradient(g) ** 2
        new_rms[name] = v
        new_params[name] = params[name] - config.lr * g / (torch.sqrt(v) + config.rms_eps)
    return new_params, new_rms


BatchFn = Callable[[int, Params], Rollout]


def meta_gradient(
    model: nn.Module,
    params: Params,
    eta: dict[str, torch.Tensor],
    next_batch: BatchFn,
    rms: dict[str, torch.Tensor],
    config: MGRLConfig,
) -> tuple[dict[str, torch.Tensor], Params, dict[str, torch.Tensor], list[Rollout]]:
    """One meta-gradient estimate ``d L_out(theta_K(eta)) / d eta``.

    ``next_batch(k, theta_k)`` supplies the batch of inner step ``k`` (``k = 0..K-1``) and, with
    ``k = K``, the outer batch of a fresh rollout (not called with ``outer="replay"``, which reuses
    the last inner batch with importance weights); ``theta_k`` comes detached, for acting.
    Returns the gradient per meta-parameter, ``theta_K`` and the RMSprop statistics (detached),
    and the batches used (inner ones, then the outer one).
    """
    meta = meta_values(eta, config.a2c)
    theta = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    batches = []
    for k in range(config.inner_steps):
        batch = next_batch(k, {n: stop_gradient(p) for n, p in theta.items()})
        batches.append(batch)
        theta, rms = inner_step(
            model, theta, batch, meta, rms, config.a2c, config.estimator, config.policy_lambda
        )
    replay = config.outer == "replay"
    outer_batch = (
        batches[-1]
        if replay
        else next_batch(config.inner_steps, {n: stop_gradient(p) for n, p in theta.items()})
    )
    batches.append(outer_batch)
    outer = a2c_loss(
        model, theta, outer_batch, config.outer_gamma, config.outer_lambda, estimator="pg", value_coef=0.0,
        entropy_coef=0.0, importance_weighted=replay,
    )  # fmt: skip
    names = list(eta)
    grads = torch.autograd.grad(outer, [eta[n] for n in names], allow_unused=True)
    out = {
        n: torch.zeros_like(eta[n]) if g is None else g.detach() for n, g in zip(names, grads, strict=True)
    }
    return (
        out,
        {n: stop_gradient(p) for n, p in theta.items()},
        {n: stop_gradient(v) for n, v in rms.items()},
        batches,
    )


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def paired_meta_gradients(
    model: nn.Module,
    params: Params,
    next_batch: BatchFn,
    rms: dict[str, torch.Tensor],
    config: MGRLConfig,
    estimators: Sequence[str],
    device: str = "cpu",
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Meta-gradient estimates of several inner estimators on the same batches (common samples).

    The reference, ``config.estimator``, plays ``next_batch`` (its inner iterates act); every
    estimator of ``estimators`` then replays the reference's batches from the same ``params`` and
    ``rms`` with fresh meta-parameters. For estimators whose first derivative equals the
    reference's (``pg``, ``lvc`` and ``loaded_dice`` on the same advantages) the inner iterates
    coincide, so the replayed batches are their own on-policy samples: the estimates differ only
    through the Hessian estimates, which enter from K = 2. Returns the gradients per estimator
    (the reference's included) and, per estimator, the largest gap between its inner iterates and
    the reference's relative to the reference's largest update (float rounding for such
    estimators; of order 1 otherwise, where the replayed batches are off-policy and the pairing
    does not hold).
    """
    played: list[Rollout] = []
    iterates: list[torch.Tensor] = []

    def play(k: int, theta: Params) -> Rollout:
        iterates.append(_flat(theta))
        played.append(next_batch(k, theta))
        return played[-1]

    grads = {
        config.estimator: meta_gradient(
            model, params, initial_meta_parameters(config, device), play, dict(rms), config
        )[0]
    }
    steps = [(b - a).abs().max() for a, b in itertools.pairwise(iterates)]
    scale = float(max(steps)) if steps else 1.0
    gaps: dict[str, float] = {config.estimator: 0.0}
    for name in estimators:
        if name in grads:
            continue
        gap = [0.0]

        def replay(k: int, theta: Params, gap: list[float] = gap) -> Rollout:
            gap[0] = max(gap[0], float((_flat(theta) - iterates[k]).abs().max()) / max(scale, 1e-30))
            return played[k]

        other = dataclasses.replace(config, estimator=name)
        grads[name] = meta_gradient(
            model, params, initial_meta_parameters(other, device), replay, dict(rms), other
        )[0]
        gaps[name] = gap[0]
    return grads, gaps


class MGRLAgent:
    """MGRL training loop on vectorised Atari or MinAtar (see the module docstring)."""

    def __init__(self, config: MGRLConfig, env_config: EnvConfig, *, seed: int = 0, device: str = "cpu"):
        self.config, self.device = config, device
        self.env = env_config.make()
        self.model = build_model(self.env.num_actions, seed=seed, device=device, obs_shape=self.env.obs_shape)
        self.params: Params = {n: stop_gradient(p).clone() for n, p in self.model.named_parameters()}
        self.rms = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.eta = initial_meta_parameters(config, device)
        self.meta_optimizer = torch.optim.Adam(list(self.eta.values()), lr=config.meta_lr)
        self.generator = torch_generator(seed, device=device)
        self.obs = self.env.reset(seed=seed)
        self._carry: Rollout | None = None

    def meta_parameters(self) -> dict[str, float]:
        """Current gamma, lambda (and coefficients) as plain numbers."""
        with torch.no_grad():
            return {k: float(v) for k, v in meta_values(self.eta, self.config.a2c).items()}

    def _rollout(self, params: Params) -> Rollout:
        gamma = float(torch.sigmoid(stop_gradient(self.eta["gamma"])))
        batch, self.obs = collect_rollout(
            self.env, self.model, params, self.obs, self.config.a2c.n_steps, gamma=gamma,
            generator=self.generator, device=self.device,
        )  # fmt: skip
        return batch

    def iteration(self) -> tuple[int, list[float]]:
        """One meta-iteration; returns the frames it played and the raw scores of finished games."""
        c = self.config
        frames_per_rollout = self.env.num_envs * c.a2c.n_steps * self.env.config.frame_skip
        played: list[Rollout] = []

        def next_batch(k: int, theta: Params) -> Rollout:
            if k == 0 and self._carry is not None:  # the previous outer batch, played by theta_0
                return self._carry
            batch = self._rollout(theta)
            played.append(batch)
            return batch

        grads, self.params, self.rms, batches = meta_gradient(
            self.model, self.params, self.eta, next_batch, self.rms, c
        )
        self._carry = batches[-1] if c.outer == "fresh" else None
        self.meta_optimizer.zero_grad(set_to_none=True)
        for name, g in grads.items():
            self.eta[name].grad = g
        self.meta_optimizer.step()
        return frames_per_rollout * len(played), [s for b in played for s in b.episode_scores]

    def train(
        self, frames: int, *, callback: Callable[[int, list[float]], None] | None = None
    ) -> dict[str, Any]:
        """Meta-train for ``frames`` environment frames; returns scores, meta-parameters, timing."""
        done, scores, start, trace = 0, [], time.perf_counter(), []
        while done < frames:
            used, new_scores = self.iteration()
            done += used
            scores += new_scores
            trace.append((done, self.meta_parameters()))
            if callback is not None:
                callback(done, new_scores)
        return {"frames": done, "scores": scores, "meta": trace, "wall_s": time.perf_counter() - start}

    def close(self) -> None:
        self.env.close()
