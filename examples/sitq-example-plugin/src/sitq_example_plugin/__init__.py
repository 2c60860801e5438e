"""An example third-party sitq plugin (see docs/plugins.md)."""
