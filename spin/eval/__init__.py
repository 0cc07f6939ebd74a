"""Evaluation: metrics (:mod:`~spin.eval.metrics`), named benchmark protocols
(:mod:`~spin.eval.protocols`) and checkpoint evaluation (:mod:`~spin.eval.evaluate`,
``spin-eval``)."""
