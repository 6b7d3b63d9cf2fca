"""lengen: length generalization in decoder-only Transformers."""
