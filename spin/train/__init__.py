"""Training: the SPIN loop (regressor + SMPLify in the loop + fits cache), checkpoints, logging."""
