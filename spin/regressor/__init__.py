"""HMR regressor (pending: see the training-loop issue)."""
