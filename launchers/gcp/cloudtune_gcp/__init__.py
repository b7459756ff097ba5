"""cloudtune-gcp: the Google Vertex AI launcher plugin for cloudtune (`--provider gcp`)."""

__version__ = "0.1.0"
