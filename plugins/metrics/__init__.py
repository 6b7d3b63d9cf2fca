"""Metric plugins (entry-point group `lengen.metrics`)."""
