"""cloudtune-aws: the Amazon SageMaker launcher plugin for cloudtune (`--provider aws`)."""

__version__ = "0.1.0"
