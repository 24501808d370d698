"""The application: the benchmark built on the library (nothing in the library imports it).

* :mod:`metagrad.app.suite`, :mod:`metagrad.app.options`: the plug-in API (``Suite``, ``Cell``,
  command-line options); :mod:`metagrad.app.suites`: one package per suite and their registry;
  :mod:`metagrad.app.compare`: the ``metagrad compare`` comparisons and their registry.
* :mod:`metagrad.app.running`: runner, backends, result store and rows, memory, progress,
  provenance.
* :mod:`metagrad.app.judging`: the one statistics module, paired comparisons, the claim
  framework, the leaderboard, ``check``.
* :mod:`metagrad.app.presenting`: figures, names and palette, tables, report, HTML, outputs.
* :mod:`metagrad.app.cli`: the ``metagrad`` command, one module per command;
  :mod:`metagrad.app.perf`: the throughput measurements of ``metagrad perf``.
"""
