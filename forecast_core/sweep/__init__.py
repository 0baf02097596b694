"""The sweep, in parts: the search spaces (``spaces``), the plans that turn trials into draws
(``plans``), the runner that draws, scores and stores trials (``runner``), the budgets and the
whole per-symbol tune (``budgets``)."""
