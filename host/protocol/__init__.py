"""The wire protocol as data: order form and policy, envelope, CBOR codec, messages and framing.
Pure: no asyncio, socket or sqlite here (checked by the import contracts in pyproject.toml)."""
