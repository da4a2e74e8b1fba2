"""Datasets in their real formats, the procedural stand-in dataset and the shared sample layout."""
