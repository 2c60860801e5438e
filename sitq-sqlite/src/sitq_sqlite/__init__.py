"""SQLite backend for sitq."""
