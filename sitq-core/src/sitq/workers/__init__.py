"""Worker kinds that ship with sitq-core (the async kind is :class:`sitq.Worker` itself)."""
