"""Synthetic bilingual labelled corpus for the default model, and its generator."""
