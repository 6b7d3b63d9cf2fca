"""Positional encoding plugins (entry-point group `lengen.positional_encodings`)."""
