"""Layers: the declared ones (Source, Transform), composition (Chain) and the built-in layers."""
