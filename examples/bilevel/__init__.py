"""Bi-level experiments: the building blocks of ``scripts/bilevel.py`` and ``benchmarks/bilevel.py``.

* :mod:`~examples.bilevel.logreg_ho`: regularisation of logistic regression by ``argmin`` hypergradients;
* :mod:`~examples.bilevel.schedule_tuning`: learning-rate / momentum / weight-decay schedules by FDS, (FG)²U, reverse;
* :mod:`~examples.bilevel.hyper_cleaning`: per-example weights that find corrupted labels.
"""
