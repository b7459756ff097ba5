"""cloudtune's version (bottom layer: anything may import it; the root package re-exports it as
`cloudtune.__version__`). The same as `version` in pyproject.toml; images are tagged with it."""

__version__ = "0.1.0"
