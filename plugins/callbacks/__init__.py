"""First-party curriculum and monitoring callbacks (entry-point group `lengen.callbacks`)."""
