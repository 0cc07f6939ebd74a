"""Rendering helpers."""
