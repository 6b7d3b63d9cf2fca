"""Task plugins (entry-point group `lengen.tasks`)."""
