"""Data modules: task examples and language-model text."""
