"""Accuracy evaluation: verification pairs and open-set identification."""
