"""The atari suite's config: :class:`AtariMetaSpec` (one MGRL estimate), :class:`AtariBenchConfig`,
presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from metagrad.envs.atari import BACKENDS
from metagrad.envs.minatar import game_config
from metagrad.estimators import get_estimator
from metagrad.validation import check_choice, check_int, check_int_fields, check_real, check_seed

__all__ = ["EXPERIMENTS", "PRESETS", "AtariBenchConfig", "AtariMetaSpec", "describe_preset"]

EXPERIMENTS = ("paired", "reference")
_CELL_FIELDS = (
    "num_envs",
    "n_steps",
    "inner_steps",
    "warmup_frames",
    "repeats",
    "ci_block",
    "reference_estimator",
    "policy_lambda",
    "view_repeats",
    "reference_scale",
    "reference_repeats",
    "seed",
    "backend",
)


@dataclass(frozen=True)
class AtariMetaSpec:
    """The recipe of one MGRL estimate: ``estimator``, the inner surrogate (one rollout of ``n``
    parallel games gives both the value and the Jacobian of each of the K inner updates); the
    outer loss is the fixed policy-gradient loss on a fresh rollout; ``scale`` consecutive
    rollouts side by side per batch; ``policy_lambda`` the GAE lambda of the inner policy term;
    ``paired_with``: the reference estimator of a paired cell (empty in the reference view)."""

    estimator: str = "pg"
    n: int = 16
    inner_steps: int = 2
    learn_coefs: bool = True
    scale: int = 1
    policy_lambda: float = 1.0
    paired_with: str = ""

    def __post_init__(self) -> None:
        get_estimator(self.estimator)
        if self.paired_with:
            get_estimator(self.paired_with)
        check_int_fields(self, ("n", "inner_steps", "scale"), 1)
        check_real("policy_lambda", self.policy_lambda, minimum=0.0, maximum=1.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AtariBenchConfig:
    """Everything that defines an Atari bias run (recorded in every row).

    ``games``: ALE or MinAtar ids; ``repeats``: paired estimates per cell (a multiple of
    ``ci_block``, at least two blocks); ``estimators``: those with a critic (other than the
    reference) are paired, all are scored in the reference view (``view_repeats`` estimates
    each, against ``reference_repeats`` estimates of ``reference_estimator`` with
    ``reference_scale`` times the games).
    """

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    games: tuple[str, ...] = ("ALE/Breakout-v5", "ALE/Pong-v5", "ALE/SpaceInvaders-v5")
    num_envs: int = 16
    n_steps: int = 5
    inner_steps: int = 2
    warmup_frames: int = 0
    estimators: tuple[str, ...] = ("pg", "lvc", "dice", "loaded_dice")
    repeats: int = 96
    ci_block: int = 4
    reference_estimator: str = "loaded_dice"
    policy_lambda: float = 1.0
    view_repeats: int = 16
    reference_scale: int = 4
    reference_repeats: int = 16
    seed: int = 0
    backend: str = "ale"
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self) -> None:
        if not self.games:
            raise ValueError("games: give at least one game")
        for game in self.games:
            try:
                game_config(game, num_envs=1)
            except ValueError as exc:
                raise ValueError(f"games: unknown game {game!r} ({exc})") from exc
        check_int_fields(self, ("num_envs", "n_steps", "inner_steps", "reference_scale", "ci_block"), 1)
        check_int_fields(self, ("view_repeats", "reference_repeats"), 2)
        check_int("repeats", self.repeats, 2 * self.ci_block)
        if self.repeats % self.ci_block:
            raise ValueError(
                f"repeats: expected a multiple of ci_block = {self.ci_block}, got {self.repeats}"
            )
        check_int("warmup_frames", self.warmup_frames, 0)
        check_seed("seed", self.seed)
        check_real("policy_lambda", self.policy_lambda, minimum=0.0, maximum=1.0)
        if not self.estimators:
            raise ValueError("estimators: give at least one estimator")
        for est in (*self.estimators, self.reference_estimator):
            get_estimator(est)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("experiments", self.experiments, EXPERIMENTS)
        if not self.experiments:
            raise ValueError("experiments: give at least one experiment")

    @property
    def env(self) -> str:
        """The games, comma-separated (each row's ``env`` is its own game)."""
        return ",".join(self.games)

    @property
    def paired_estimators(self) -> tuple[str, ...]:
        """The estimators of the paired view: those that use the critic, other than the reference."""
        return tuple(
            e for e in self.estimators if e != self.reference_estimator and get_estimator(e).uses_critic
        )

    def spec(self, estimator: str, scale: int = 1, paired: bool = False) -> AtariMetaSpec:
        return AtariMetaSpec(
            estimator,
            self.num_envs * scale,
            self.inner_steps,
            True,
            scale,
            self.policy_lambda,
            self.reference_estimator if paired else "",
        )

    def frames_per_estimate(self, game: str, scale: int = 1) -> int:
        """Environment frames of one meta-gradient estimate (K inner batches and the outer one)."""
        skip = game_config(game, num_envs=1).frame_skip
        return (self.inner_steps + 1) * self.num_envs * scale * self.n_steps * skip


PRESETS: dict[str, AtariBenchConfig] = {
    # Three ALE games at the A2C defaults (16 games x 5 steps per batch), K = 2, the agent state
    # after 200k frames of A2C; 96 paired estimates per estimator and game (blocks of 4): about
    # 10 minutes of one CPU core per game with the reference view.
    "xu2018": AtariBenchConfig(preset="xu2018", warmup_frames=200_000, repeats=96),
    # The same on three MinAtar games (10x10 grids, the MinAtar network; a frame is a step):
    # 2400 paired estimates per estimator and game in about the same CPU time.
    "minatar": AtariBenchConfig(
        preset="minatar",
        games=("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Asterix-v1"),
        warmup_frames=200_000,
        repeats=2400,
    ),
    "quick": AtariBenchConfig(
        preset="quick",
        games=("ALE/Breakout-v5",),
        num_envs=4,
        repeats=8,
        ci_block=2,
        view_repeats=4,
        reference_repeats=4,
        reference_scale=2,
    ),
}


def describe_preset(config: AtariBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    games = ", ".join(g.split("/")[-1] for g in config.games)
    return (
        f"{games}; {config.num_envs} games x {config.n_steps} steps, K = {config.inner_steps}; paired: "
        f"{config.repeats} estimates of {','.join(config.paired_estimators)} "
        f"vs {config.reference_estimator}; "
        f"reference view: {config.view_repeats} estimates vs {config.reference_estimator} "
        f"x{config.reference_scale} from {config.reference_repeats}"
    )
