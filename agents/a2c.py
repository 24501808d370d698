"""A2C on vectorised Atari and MinAtar: a CNN actor-critic (the Nature CNN for 84x84 frames, the
MinAtar network for 10x10xC grids), n-step rollouts, GAE, and the loss as a pure function of
(parameters, batch, gamma, lambda) so that MGRL can differentiate through it.

Shapes are time-major: a rollout of ``T`` steps from ``B`` games holds ``obs [T, B, *O]`` (Atari:
``uint8 [4, 84, 84]``; MinAtar: ``float32 [C, 10, 10]``), ``actions``, ``behaviour_log_probs``,
``rewards``, ``terminated``, ``truncated`` ``[T, B]`` and ``bootstrap_obs [B, *O]`` (the
observation after the last step).

Terminals for learning: a game over, or a lost life while training (episodic life). A truncated
game (the 108k-frame limit) is cut without bootstrapping (the same-step reset has already
replaced its last observation); both flags stay separate in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from metagrad.envs.atari import AtariConfig, AtariVector
from metagrad.envs.minatar import MinAtarConfig, MinAtarVector
from metagrad.estimators import advantages, get_estimator, stop_gradient
from metagrad.seeding import torch_generator
from metagrad.validation import check_int_fields, check_real, check_real_fields

__all__ = [
    "A2CAgent",
    "A2CConfig",
    "ActorCritic",
    "Rollout",
    "a2c_loss",
    "build_model",
    "collect_rollout",
    "evaluate",
    "minatar_cnn_torso",
    "mlp_torso",
    "nature_cnn_torso",
]

Params = dict[str, torch.Tensor]
EnvConfig = AtariConfig | MinAtarConfig
VectorEnv = AtariVector | MinAtarVector


def nature_cnn_torso(in_channels: int = 4) -> tuple[nn.Module, int]:
    """The Nature DQN torso (Mnih et al. 2015): 3 convolutions and a 512-unit layer; uint8 input."""
    torso = nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
    )
    return torso, 512


def minatar_cnn_torso(in_channels: int) -> tuple[nn.Module, int]:
    """The MinAtar network (Young & Tian 2019): one 3x3 convolution with 16 filters (stride 1) on the
    ``[C, 10, 10]`` grid and a 128-unit layer."""
    torso = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 128),
        nn.ReLU(),
    )
    return torso, 128


def mlp_torso(obs_dim: int, hidden: int = 16) -> tuple[nn.Module, int]:
    """A tiny torso for flat observations ``[N, obs_dim]`` (tests and toy problems; ``obs_dims=1``)."""
    return nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh()), hidden


class ActorCritic(nn.Module):
    """Policy logits and a value, optionally conditioned on the discount (Xu et al. 2018).

    ``forward(obs [N, ...], gamma)`` returns ``(logits [N, A], value [N])``; uint8 observations
    are scaled to [0, 1]. With ``gamma_input`` the value head sees ``[features, gamma]``.
    """

    def __init__(
        self,
        torso: nn.Module,
        feature_dim: int,
        num_actions: int,
        *,
        gamma_input: bool = True,
        obs_dims: int = 3,
    ):
        super().__init__()
        self.torso = torso
        self.obs_dims = obs_dims  # trailing dimensions of one observation (3 for stacked frames)
        self.gamma_input = gamma_input
        self.policy = nn.Linear(feature_dim, num_actions)
        self.value = nn.Linear(feature_dim + int(gamma_input), 1)

    def forward(self, obs: torch.Tensor, gamma: torch.Tensor | float | None = None):
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs
        features = self.torso(x)
        head = features
        if self.gamma_input:
            g = torch.as_tensor(
                0.99 if gamma is None else gamma, dtype=features.dtype, device=features.device
            )
            head = torch.cat([features, g.expand(features.shape[0], 1)], dim=-1)
        return self.policy(features), self.value(head).squeeze(-1)


@dataclass
class Rollout:
    """A time-major batch from :func:`collect_rollout` (see the module docstring)."""

    obs: torch.Tensor
    actions: torch.Tensor
    behaviour_log_probs: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    bootstrap_obs: torch.Tensor
    episode_scores: list[float] = field(default_factory=list)

    def cat(self, other: Rollout) -> Rollout:
        """Both batches side by side (episode axis)."""
        return Rollout(
            *(torch.cat([getattr(self, f), getattr(other, f)], dim=1) for f in _TIME_FIELDS),
            bootstrap_obs=torch.cat([self.bootstrap_obs, other.bootstrap_obs]),
            episode_scores=[*self.episode_scores, *other.episode_scores],
        )


_TIME_FIELDS = ("obs", "actions", "behaviour_log_probs", "rewards", "terminated", "truncated")


def evaluate(
    model: nn.Module, params: Params | None, obs: torch.Tensor, gamma: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model`` (with ``params`` substituted when given) on ``obs [*L, ...]`` -> ``[*L, A], [*L]``."""
    lead = obs.shape[: obs.ndim - model.obs_dims]
    flat = obs.reshape(-1, *obs.shape[len(lead) :])
    if params is None:
        logits, value = model(flat, gamma)
    else:
        logits, value = functional_call(model, params, (flat, gamma))
    return logits.reshape(*lead, -1), value.reshape(lead)


def collect_rollout(
    env: VectorEnv,
    model: nn.Module,
    params: Params | None,
    obs: np.ndarray,
    n_steps: int,
    *,
    gamma: torch.Tensor | float,
    generator: torch.Generator,
    device: str = "cpu",
) -> tuple[Rollout, np.ndarray]:
    """``n_steps`` steps of every game with actions sampled from the policy (no graph kept).

    Returns the rollout and the next observation to continue from.
    """
    obs_list, acts, logps, rews, terms, truncs, scores = [], [], [], [], [], [], []
    with torch.no_grad():
        for _ in range(n_steps):
            o = torch.as_tensor(obs, device=device)
            logits, _ = evaluate(model, params, o, stop_gradient(torch.as_tensor(gamma)))
            log_pi = torch.log_softmax(logits, -1)
            a = torch.multinomial(log_pi.exp(), 1, generator=generator).squeeze(-1)
            step = env.step(a.cpu().numpy())
            obs_list.append(o)
            acts.append(a)
            logps.append(log_pi.gather(-1, a.unsqueeze(-1)).squeeze(-1))
            rews.append(torch.as_tensor(step.reward, device=device))
            terms.append(torch.as_tensor(step.terminated | step.life_lost, device=device))
            truncs.append(torch.as_tensor(step.truncated, device=device))
            scores += step.episode_scores
            obs = step.obs
    rollout = Rollout(
        obs=torch.stack(obs_list),
        actions=torch.stack(acts),
        behaviour_log_probs=torch.stack(logps),
        rewards=torch.stack(rews).float(),
        terminated=torch.stack(terms),
        truncated=torch.stack(truncs),
        bootstrap_obs=torch.as_tensor(obs, device=device),
        episode_scores=scores,
    )
    return rollout, obs


def a2c_loss(
    model: nn.Module,
    params: Params,
    batch: Rollout,
    gamma: torch.Tensor | float,
    lam: torch.Tensor | float,
    *,
    estimator: str = "pg",
    value_coef: torch.Tensor | float = 0.5,
    entropy_coef: torch.Tensor | float = 0.01,
    importance_weighted: bool = False,
    advantage_lambda: float | None = None,
) -> torch.Tensor:
    """The actor-critic loss of one batch, differentiable in ``params`` and in ``gamma``/``lam``.

    ``-mean(surrogate) + value_coef * 0.5 (V - G^lambda)^2 - entropy_coef * H``: the policy term is
    the registered ``estimator``'s surrogate over each n-step window (``pg``: ``A log pi``, the
    usual A2C term; ``lvc``; ``dice``; ``loaded_dice``), with ``discounts = gamma (1 - terminal)``,
    GAE(``lam``) advantages and the bootstrap ``V(s_T)``; the value targets are the lambda-returns
    under the same ``gamma``/``lam`` (their graph to the meta-parameters is kept). Critic values in
    the advantages and bootstrap targets are cut from the graph (semi-gradient TD, as in MGRL
    code): the meta-parameters act through the returns, not through ``V(s', gamma)``. With
    ``importance_weighted`` the policy term is ``per_step_is`` against the batch's behaviour
    log-probs (a stale batch). ``advantage_lambda`` (default: ``lam``) is the GAE lambda of the
    policy term's advantages alone; ``1.0`` gives ``A_t = G_t - V(s_t)`` (returns to the window's
    end, bootstrapped), under which ``loaded_dice`` estimates every derivative order of the
    window's return without bias (Farquhar et al. 2019), while the value targets keep ``lam``.
    """
    logits, values = evaluate(model, params, batch.obs, gamma)
    _, boot = evaluate(model, params, batch.bootstrap_obs.unsqueeze(0), gamma)
    boot = boot.squeeze(0)
    log_pi = torch.log_softmax(logits, -1)
    log_probs = log_pi.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_pi.exp() * log_pi).sum(-1)
    cut = (batch.terminated | batch.truncated).to(values.dtype)
    gamma_t = torch.as_tensor(gamma, dtype=values.dtype, device=values.device)
    discounts = gamma_t * (1.0 - cut)
    # the truncated step's "next" state is already a reset: no bootstrap through it
    boot = boot * (1.0 - cut[-1])
    rewards = batch.rewards.to(values.dtype)
    name = "per_step_is" if importance_weighted else estimator
    info = get_estimator(name)
    kwargs: dict[str, Any] = {}
    if "gae_lambda" in info.params:
        kwargs["gae_lambda"] = lam if advantage_lambda is None else advantage_lambda
    surrogate = info.fn(
        log_probs,
        rewards,
        discounts,
        behaviour_log_probs=batch.behaviour_log_probs.to(values.dtype),
        values=values,
        bootstrap_value=boot,
        **kwargs,
    )
    targets = advantages(rewards, discounts, values, boot, lam) + stop_gradient(values)
    value_loss = 0.5 * ((values - targets) ** 2).mean()
    return -surrogate.mean() + value_coef * value_loss - entropy_coef * entropy.mean()


@dataclass(frozen=True)
class A2CConfig:
    """A2C (Mnih et al. 2016) as in common Atari baselines: 16 games x 5 steps, RMSprop 7e-4
    (alpha 0.99, eps 1e-5), gradient-norm clip 0.5, entropy 0.01, value 0.5, gamma 0.99, GAE 0.95."""

    num_envs: int = 16
    n_steps: int = 5
    lr: float = 7e-4
    rms_alpha: float = 0.99
    rms_eps: float = 1e-5
    max_grad_norm: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    entropy_coef: float = 0.01

    def __post_init__(self) -> None:
        check_int_fields(self, ("num_envs", "n_steps"), 1)
        check_real_fields(self, ("gamma", "gae_lambda"), minimum=0.0, maximum=1.0)
        check_real("lr", self.lr, minimum=0.0, open_min=True)
        check_real_fields(self, ("value_coef", "entropy_coef"), minimum=0.0)


def build_model(
    num_actions: int, *, seed: int, device: str = "cpu", obs_shape: tuple[int, ...] = (4, 84, 84)
) -> ActorCritic:
    """A seeded actor-critic with a discount-conditioned value head, its torso chosen by the
    observation shape: the Nature CNN for ``[stack, 84, 84]`` frames, the MinAtar network for
    ``[C, 10, 10]`` grids."""
    if len(obs_shape) != 3 or obs_shape[1:] not in ((84, 84), (10, 10)):
        raise ValueError(f"obs_shape: expected [C, 84, 84] (Atari) or [C, 10, 10] (MinAtar), got {obs_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torso, dim = nature_cnn_torso(obs_shape[0]) if obs_shape[1] == 84 else minatar_cnn_torso(obs_shape[0])
        model = ActorCritic(torso, dim, num_actions, gamma_input=True)
    return model.to(device)


class A2CAgent:
    """Plain A2C training loop (the suite's own baseline)."""

    def __init__(self, config: A2CConfig, env_config: EnvConfig, *, seed: int = 0, device: str = "cpu"):
        self.config, self.device = config, device
        self.env = env_config.make()
        self.model = build_model(self.env.num_actions, seed=seed, device=device, obs_shape=self.env.obs_shape)
        self.optimizer = torch.optim.RMSprop(
            self.model.parameters(), lr=config.lr, alpha=config.rms_alpha, eps=config.rms_eps
        )
        self.generator = torch_generator(seed, device=device)
        self.obs = self.env.reset(seed=seed)

    def train(
        self, frames: int, *, callback: Callable[[int, list[float]], None] | None = None
    ) -> dict[str, Any]:
        """Train for ``frames`` environment frames (frame skip counted); returns scores and timing."""
        c = self.config
        per_update = c.num_envs * c.n_steps * self.env.config.frame_skip
        done_frames, scores, start = 0, [], time.perf_counter()
        while done_frames < frames:
            batch, self.obs = collect_rollout(
                self.env, self.model, None, self.obs, c.n_steps, gamma=c.gamma, generator=self.generator,
                device=self.device,
            )  # fmt: skip
            params = dict(self.model.named_parameters())
            loss = a2c_loss(
                self.model, params, batch, c.gamma, c.gae_lambda, value_coef=c.value_coef,
                entropy_coef=c.entropy_coef,
            )  # fmt: skip
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
            self.optimizer.step()
            done_frames += per_update
            scores += batch.episode_scores
            if callback is not None:
                callback(done_frames, batch.episode_scores)
        return {"frames": done_frames, "scores": scores, "wall_s": time.perf_counter() - start}

    def close(self) -> None:
        self.env.close()
