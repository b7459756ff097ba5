"""cloudtune's Azure Machine Learning launcher (command jobs). Importing it imports no Azure SDK."""

__version__ = "0.1.0"
