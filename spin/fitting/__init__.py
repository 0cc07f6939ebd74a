"""SMPLify model fitting and everything around it.

- :mod:`~spin.fitting.losses`: SMPLify's terms as pure functions (and residual forms).
- :mod:`~spin.fitting.priors`: the GMM pose prior (SMPLify's file format; the bundled open prior)
  and :func:`~spin.fitting.priors.fit_gmm` (``spin-fit-prior``).
- :mod:`~spin.fitting.smplify`: batched SMPLify, modes ``faithful`` / ``fast`` / ``lm``.
- :mod:`~spin.fitting.fits_cache`: the per-sample best fits of the training loop (HDF5).
- :mod:`~spin.fitting.fit_dataset`: SMPLify over a whole dataset (``spin-fit-dataset``).
"""
