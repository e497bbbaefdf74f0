"""Card authentication vectors (docs/apdu.md, INTERNAL AUTHENTICATE key 81).

`python -m tests.card_applet.card_auth_vectors` writes docs/vectors/card-auth-v1.json; the
tests recompute every vector from its inputs and check that a card personalised with the
vector's key, serial and holder id answers the vector's challenge with the vector's answer.
"""

from __future__ import annotations

import json
from pathlib import Path

from card_applet import keys

PATH = Path(__file__).resolve().parents[2] / "docs" / "vectors" / "card-auth-v1.json"

INPUTS = [
    {"key": bytes(range(0x40, 0x60)), "serial": bytes.fromhex("4E54580000000001"),
     "holder": "holder:alice@example.org", "challenge": bytes(range(32))},
    {"key": bytes(range(0x40, 0x60)), "serial": bytes.fromhex("4E54580000000001"),
     "holder": "holder:alice@example.org", "challenge": bytes(range(1, 33))},
    {"key": bytes(range(0x40, 0x60)), "serial": bytes.fromhex("4E54580000000002"),
     "holder": "holder:alice@example.org", "challenge": bytes(range(32))},
    {"key": bytes(32), "serial": bytes.fromhex("0102030405060708"),
     "holder": "holder:bob@example.org", "challenge": bytes(16)},
]


def build() -> dict:
    vectors = []
    for v in INPUTS:
        holder = v["holder"].encode("utf-8")
        vectors.append({
            "card_auth_key_hex": v["key"].hex(), "serial_hex": v["serial"].hex(),
            "holder_id": v["holder"], "challenge_hex": v["challenge"].hex(),
            "mac_input_hex": keys.card_auth_input(v["serial"], holder, v["challenge"]).hex(),
            "answer_hex": keys.card_auth_mac(v["key"], v["serial"], holder,
                                             v["challenge"]).hex(),
        })
    return {"format": 1, "command": "00 88 00 81 Lc challenge Le",
            "mac": "HMAC-SHA256(card_auth_key, mac_input), 32 bytes", "vectors": vectors}


if __name__ == "__main__":
    PATH.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {PATH}")
