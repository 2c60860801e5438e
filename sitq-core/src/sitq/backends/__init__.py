"""Backends that ship with sitq-core (only the in-memory one; stores are plugins)."""
