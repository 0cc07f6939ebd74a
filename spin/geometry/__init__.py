"""Rotations, cameras, projection and Procrustes alignment."""
