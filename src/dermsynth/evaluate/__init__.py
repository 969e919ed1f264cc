"""Evaluate stage: accuracy by condition x FST group with CIs (metrics), paired tests (paired)."""
