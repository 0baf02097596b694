"""Compiled Toto / Kronos: compile where it is measured to help, persist the compile cache, verify it.

Why: ``torch.compile`` costs tens of seconds per process even for the tiny checkpoints, its speed-up
depends on the device and model size (measurements and the command behind them: the README's
"Compiled models" section), and the users' guide once shipped a compiled model that was far less
accurate than eager. So compilation is measured, checked against eager forecasts, and cached per
key; nothing here needs Dagster.

The persisted cache is inductor's own: while the probe forecasts compile, ``TORCHINDUCTOR_CACHE_DIR``
points at the key directory's ``inductor/`` folder, and a warm start runs the same probe from a
copy of it, so inductor skips lowering and C++ compilation. ``torch.compiler.save_cache_artifacts``
("Mega-Cache") was not chosen: it stores no compiled ``.so``, so a warm start from it still compiles
the C++ kernels.

Modules, each using only the ones before it:

- :mod:`.wrappers`: an engine's hot methods (its ``compile_targets()``) replaced on one instance by
  ``torch.compile`` wrappers, and removed again.
- :mod:`.parity`: the fixed-seed probe batch, the compiled-vs-eager parity error and timing.
- :mod:`.cache`: keys, the directory layout, manifests and their verification, installing a build,
  pointing inductor at a key's directory.
- :mod:`.policy`: the ``off`` / ``auto`` / ``on`` policies and what runs them (``prepare``,
  ``warm_start``, ``build``, ``reverify``) under one :class:`.policy.CompileSettings`.
"""
