"""Evaluation and reporting of fine-tuning results (tables, plots, raw per-case numbers)."""
