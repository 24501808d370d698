"""Names and colours of every figure and table: one palette, one set of human names.

* :data:`PALETTE` gives every estimator one colour and one marker in every figure: a registered
  estimator's colour and marker are facts of its registration (``register_estimator(...,
  color=..., marker=...)``, :mod:`metagrad.estimators`); other names get a fixed fallback from
  their text, so they too keep their colour.
* :func:`human` maps code names (``sweep_n``, ``bias_debiased``, ``lee``, ``loaded_dice``) to the
  words a figure shows: an estimator's registered ``label``, else :data:`HUMAN_NAMES`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from metagrad.estimators import ESTIMATORS

__all__ = ["COLORS", "HUMAN_NAMES", "MARKERS", "PALETTE", "Palette", "Style", "human", "sequence_styles"]


@dataclass(frozen=True)
class Style:
    """How one estimator is drawn in every figure."""

    color: str
    marker: str


# Colour-blind-safe (Okabe-Ito, then Tol's bright) colours: the fallback cycle for series that are
# not registered estimators (their colour and marker are facts of the estimator registry).
COLORS = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
    "#882255", "#117733", "#999933", "#AA4499", "#44AA99", "#332288", "#888888",
)  # fmt: skip
MARKERS = ("o", "s", "D", "^", "P", "X", "*", "h", "p", "<", ">", "d", "H", "8")
# Series that are not estimators but are drawn beside them.
_OTHER_STYLES = {"exact": Style("#332288", "H"), "mlmc": Style("#888888", "8")}


def _fallback(name: str) -> Style:
    """A fixed style from the name's text (stable across runs)."""
    i = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return Style(COLORS[i % len(COLORS)], MARKERS[(i // 7) % len(MARKERS)])


class Palette(Mapping[str, Style]):
    """Estimator name -> :class:`Style`; the same object serves every figure (:data:`PALETTE`).

    A registered estimator is drawn in the colour and marker its registration states
    (:class:`~metagrad.estimators.EstimatorInfo`); other names get a fixed fallback from their text.
    """

    def __getitem__(self, name: str) -> Style:
        if name in _OTHER_STYLES:
            return _OTHER_STYLES[name]
        info = ESTIMATORS.get(name)
        fallback = _fallback(name)
        if info is None:
            return fallback
        return Style(info.color or fallback.color, info.marker or fallback.marker)

    def __iter__(self) -> Iterator[str]:
        return iter((*ESTIMATORS, *_OTHER_STYLES))

    def __len__(self) -> int:
        return len(ESTIMATORS) + len(_OTHER_STYLES)


PALETTE = Palette()


def sequence_styles(labels: Iterable[str]) -> dict[str, Style]:
    """Styles for series that are not estimators (e.g. values of K), in order."""
    return {
        label: Style(COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, label in enumerate(labels)
    }


HUMAN_NAMES: dict[str, str] = {
    # series drawn beside the registered estimators (whose labels are registry facts)
    "exact": "exact",
    "lola_dice": "LOLA-DiCE",
    "lola_lvc": "LOLA-LVC",
    "off_policy_lola_dice": "off-policy LOLA-DiCE",
    "mlmc": "MLMC",
    # metrics
    "corr": "correlation with the exact gradient",
    "bias_debiased": "debiased bias ||E[g] - exact||",
    "bias_sq_debiased": "debiased squared bias",
    "mse": "mean squared error",
    "relative_bias": "relative bias (bias / ||exact||)",
    "episodes_per_estimate": "(expected) episodes per estimate",
    # experiments
    "decomposition": "Bias decomposition by stage",
    "sweep_n": "Compositional bias vs inner sample size",
    "sweep_k": "Compositional bias vs inner steps",
    "sweep_alpha": "Compositional bias vs inner step size",
    "sweep_lr": "Bias vs lookahead step size",
    "sweep_steps": "Bias vs lookahead steps",
    "hessian_bias": "Injected Hessian bias",
    "hessian_bias_k": "Injected Hessian bias, K = 1..6",
    "lirpg": "LIRPG: intrinsic-reward meta-gradient",
    "sweep_states": "Bias vs number of states",
    "mlmc_bias": "MLMC inner stage: bias vs cost",
    "off_policy": "Off-policy LOLA",
    # stage combinations (inner, Hessian, outer; e exact, l sampled)
    "eel": "outer sampled (eel)",
    "ele": "Hessian sampled (ele)",
    "lee": "inner sampled (lee)",
    "ell": "Hessian + outer sampled (ell)",
    "lel": "inner + outer sampled (lel)",
    "lle": "inner + Hessian sampled (lle)",
    "lll": "all stages sampled (lll)",
}


def human(name: object) -> str:
    """The words a figure shows for a code name (the name itself where none is defined)."""
    text = str(name)
    if text in HUMAN_NAMES:
        return HUMAN_NAMES[text]
    info = ESTIMATORS.get(text)
    return info.label if info is not None else text
