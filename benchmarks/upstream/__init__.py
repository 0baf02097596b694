"""The upstream implementations our engines are measured and checked against (benchmarks, parity
tests, the GPU check), imported from the test-only installs under ``.upstream/`` (``make
.upstream/.installed``), never from the project's environment."""
