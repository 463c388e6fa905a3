"""Scaling laws from a width ladder: the fits and the infinite-width limit (fit), and the study that tunes,
trains and fits a ladder (study)."""
