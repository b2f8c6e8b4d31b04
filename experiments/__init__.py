"""Hydra entry points and MLflow tracking around the mogjax library.

No mathematics lives here; ``mogjax`` never imports hydra, omegaconf or mlflow.
"""
