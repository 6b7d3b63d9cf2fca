"""First-party lengen plugins, imported as `lengen_plugins` and registered through entry points."""
