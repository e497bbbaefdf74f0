"""The nettx card: a sans-IO ISO 7816-4 applet holding a Blom/KPS key row.

`card_applet.applet.Applet.process(command: bytes) -> bytes` is the only edge; every
transport (vpcd client, serial T=1, in-process) wraps that one call. Every number the card
and its terminals agree on (AID, instructions, tags, PIN reference, life cycle, PIN block) is
`card_applet.vocabulary`'s.
"""
