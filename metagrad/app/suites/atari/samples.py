"""Drawing MGRL meta-gradient estimates on one game's seeded stream: paired estimates of several
inner estimators on the same batches, an estimator's own estimates, and the reference view's
high-budget reference."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from metagrad.agents.a2c import A2CAgent, A2CConfig, build_model, collect_rollout
from metagrad.agents.mgrl import (
    META_NAMES,
    MGRLConfig,
    initial_meta_parameters,
    meta_gradient,
    paired_meta_gradients,
)
from metagrad.app.judging.statistics import standard_error
from metagrad.app.suites.atari.config import AtariBenchConfig
from metagrad.envs.minatar import game_config
from metagrad.seeding import game_stream_seed

__all__ = ["PairedSamples", "estimates", "paired_estimates", "reference_meta_gradient", "stream_seed"]


def stream_seed(config: AtariBenchConfig, game: str, salt: int) -> int:
    """The seed of a game's env and action stream (:func:`metagrad.seeding.game_stream_seed`):
    every cell of a game (every estimator) uses the same one, so their samples are common."""
    return game_stream_seed(config.seed, game, salt)


def _env_config(config: AtariBenchConfig, game: str) -> Any:
    return game_config(game, num_envs=config.num_envs, backend=config.backend)


@functools.lru_cache(maxsize=8)
def _agent_state(config: AtariBenchConfig, game: str, device: str) -> dict[str, Any]:
    """The fixed agent state of a game: parameters and RMSprop statistics (zero without warm-up),
    after the optional A2C warm-up."""
    agent = A2CAgent(
        A2CConfig(num_envs=config.num_envs, n_steps=config.n_steps),
        _env_config(config, game),
        seed=config.seed,
        device=device,
    )
    try:
        if config.warmup_frames:
            agent.train(config.warmup_frames)
        params, rms = {}, {}
        for n, p in agent.model.named_parameters():
            params[n] = p.detach().clone()
            state = agent.optimizer.state.get(p, {})
            rms[n] = state["square_avg"].detach().clone() if "square_avg" in state else torch.zeros_like(p)
        num_actions, obs_shape = agent.env.num_actions, agent.env.obs_shape
    finally:
        agent.close()
    return {"params": params, "rms": rms, "num_actions": num_actions, "obs_shape": obs_shape}


class _Stream:
    """A game's seeded env and action stream with the fixed agent's model: rollouts of a given
    parameter dict, ``scale`` consecutive ones side by side."""

    def __init__(self, config: AtariBenchConfig, game: str, seed: int, device: str) -> None:
        self.state = _agent_state(config, game, device)
        self.env = _env_config(config, game).make()
        self.model = build_model(
            self.state["num_actions"], seed=config.seed, device=device, obs_shape=self.state["obs_shape"]
        )
        self.config, self.device = config, device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.obs = self.env.reset(seed=seed)

    def batch(self, theta: dict[str, torch.Tensor], scale: int = 1) -> Any:
        out = None
        for _ in range(scale):
            part, self.obs = collect_rollout(
                self.env, self.model, theta, self.obs, self.config.n_steps, gamma=0.99,
                generator=self.generator, device=self.device,
            )  # fmt: skip
            out = part if out is None else out.cat(part)
        return out

    def mgrl(self, estimator: str, scale: int = 1) -> MGRLConfig:
        c = self.config
        return MGRLConfig(
            A2CConfig(num_envs=c.num_envs * scale, n_steps=c.n_steps),
            inner_steps=c.inner_steps,
            estimator=estimator,
            learn_coefs=True,
            policy_lambda=c.policy_lambda,
        )

    def fresh_rms(self) -> dict[str, torch.Tensor]:
        return {n: v.clone() for n, v in self.state["rms"].items()}

    def close(self) -> None:
        self.env.close()


def _stack(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([grads[n] for n in META_NAMES]).double().cpu()


@dataclass(frozen=True)
class PairedSamples:
    """Paired estimates on common batches: ``reference [R, D]``, ``estimates[X] [R, D]`` and the
    largest relative gap between X's inner iterates and the reference's (``iterate_gap[X]``)."""

    reference: torch.Tensor
    estimates: dict[str, torch.Tensor]
    iterate_gap: dict[str, float]


def paired_estimates(
    config: AtariBenchConfig, game: str, estimators: tuple[str, ...], device: str = "cpu"
) -> PairedSamples:
    """``config.repeats`` paired estimates of ``estimators`` and the reference on one game's stream.

    Raises ``ValueError`` when an estimator's inner iterates leave the reference's (another
    first-order update: the replayed batches would be off-policy for it).
    """
    stream = _Stream(config, game, stream_seed(config, game, 1), device)
    mgrl = stream.mgrl(config.reference_estimator)
    refs: list[torch.Tensor] = []
    out: dict[str, list[torch.Tensor]] = {e: [] for e in estimators}
    gaps = dict.fromkeys(estimators, 0.0)
    try:
        for _ in range(config.repeats):
            grads, gap = paired_meta_gradients(
                stream.model,
                stream.state["params"],
                lambda _k, theta: stream.batch(theta),
                stream.fresh_rms(),
                mgrl,
                estimators,
                device,
            )
            refs.append(_stack(grads[config.reference_estimator]))
            for e in estimators:
                out[e].append(_stack(grads[e]))
                gaps[e] = max(gaps[e], gap[e])
                if gaps[e] > 1e-2:  # checked at the first estimate, before the rest of the work
                    raise ValueError(
                        f"estimators: {e}'s inner iterates leave the reference's (relative gap "
                        f"{gaps[e]:.2g}); the paired view needs the reference's first-order update "
                        "(score it in the reference view)"
                    )
    finally:
        stream.close()
    return PairedSamples(torch.stack(refs), {e: torch.stack(v) for e, v in out.items()}, gaps)


def estimates(
    config: AtariBenchConfig, game: str, estimator: str, repeats: int, scale: int, seed: int, device: str
) -> torch.Tensor:
    """``[repeats, D]`` meta-gradient estimates of one estimator on its own stream (``seed``)."""
    stream = _Stream(config, game, seed, device)
    mgrl = stream.mgrl(estimator, scale)
    out = []
    try:
        for _ in range(repeats):
            eta = initial_meta_parameters(mgrl, device)
            grads, *_ = meta_gradient(
                stream.model,
                stream.state["params"],
                eta,
                lambda _k, theta: stream.batch(theta, scale),
                stream.fresh_rms(),
                mgrl,
            )
            out.append(_stack(grads))
    finally:
        stream.close()
    return torch.stack(out)


@functools.lru_cache(maxsize=8)
def reference_meta_gradient(
    config: AtariBenchConfig, game: str, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference view's reference ``(mean [D], its standard errors [D])`` on one game."""
    samples = estimates(
        config,
        game,
        config.reference_estimator,
        config.reference_repeats,
        config.reference_scale,
        stream_seed(config, game, 17),
        device,
    )
    return samples.mean(0), standard_error(samples)
