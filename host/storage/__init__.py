"""Durable state: one module per store, on the engine in host.storage.sqlite."""
