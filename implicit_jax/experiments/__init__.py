"""Bi-level experiments: the building blocks of ``scripts/bilevel.py`` and ``benchmarks/bilevel.py``.

* :mod:`~implicit_jax.experiments.logreg_ho`: regularisation of logistic regression by ``argmin`` hypergradients;
* :mod:`~implicit_jax.experiments.schedule_tuning`: learning-rate / momentum / weight-decay schedules by FDS, (FG)²U, reverse;
* :mod:`~implicit_jax.experiments.hyper_cleaning`: per-example weights that find corrupted labels.
"""
