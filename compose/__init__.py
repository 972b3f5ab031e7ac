"""Composition of maximum-entropy skills."""
