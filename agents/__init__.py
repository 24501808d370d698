"""Learners built on the metagrad library (imported as ``metagrad.agents``).

* :mod:`metagrad.agents.maml`: MAML meta-learners on tabular task distributions;
* :mod:`metagrad.agents.lola`: naive and LOLA learners in iterated memory-one games;
* :mod:`metagrad.agents.a2c`, :mod:`metagrad.agents.mgrl`: A2C and meta-gradient RL on Atari;
* :mod:`metagrad.agents.optim`: the optimiser table they share.

Submodules are imported on use (``from metagrad.agents.lola import play``): the Atari learners
pull in ale-py and stable-baselines3, which the tabular and game learners do not need.
"""

__all__: list[str] = []
