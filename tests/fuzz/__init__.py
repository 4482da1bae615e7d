"""Fuzz targets (atheris) and the harness logic they share with the corpus replay test."""
