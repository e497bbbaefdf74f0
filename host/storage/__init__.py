"""Durable state: one module per store, each on either engine (host.storage.sqlite,
host.storage.postgresql); host.storage.engine opens them."""
