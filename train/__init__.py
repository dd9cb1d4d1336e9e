"""Training pipeline for the shipped model: `python -m train --help`."""
