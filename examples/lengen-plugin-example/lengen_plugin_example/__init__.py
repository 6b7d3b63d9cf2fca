"""Example lengen plugins: one encoding, one task, one metric, one callback (no work at import)."""
