"""Keys the card derives from the pair key and its transport key (docs/apdu.md, "Key
derivation"). The pair key is never used directly: K(a,b) = K(b,a), so every derived key
names its purpose and its direction (sender -> receiver), which stops reflection."""

from __future__ import annotations

import secrets

from Crypto.Cipher import AES
from Crypto.Hash import CMAC
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from card_applet.kdf import Hkdf, hkdf_sha256, hmac_sha256

SEAL_SALT = b"EP0791901/card/v1/seal"
CONFIRM_SALT = b"EP0791901/card/v1/confirm"
SESSION_SALT = b"EP0791901/card/v1/session"
TRANSPORT_SALT = b"EP0791901/transport/v1"
PERSO_SALT = b"EP0791901/perso/v1"
CARD_AUTH_LABEL = b"EP0791901/card-auth/v1"
# the salts' HMAC blocks prepared once: every PSO and authentication derives a key
_SEAL = Hkdf(SEAL_SALT)
_CONFIRM = Hkdf(CONFIRM_SALT)
_SESSION = Hkdf(SESSION_SALT)

# the sealed box: version(1) || atc(4) || nonce(12) || ciphertext || tag(16) (docs/apdu.md 5.3)
SEAL_VERSION = 0x01
ATC_SIZE = 4
HEADER_SIZE = 1 + ATC_SIZE
NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
CONFIRM_SIZE = 16
MAC_SIZE = 16
CARD_AUTH_KEY_SIZE = 32
SESSION_NONCE_SIZE = 32
SESSION_KEY_SIZE = 32
#: GENERAL AUTHENTICATE's role byte (docs/apdu.md 3.20): who drew the first nonce
SESSION_INITIATOR, SESSION_RESPONDER = 0x01, 0x02
CARD_AUTH_SIZE = 32


class IntegrityError(ValueError):
    """An authentication tag or MAC did not verify."""


def _lv(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def directed_info(label: bytes, sender: bytes, receiver: bytes, context: bytes = b"") -> bytes:
    return _lv(label) + _lv(sender) + _lv(receiver) + _lv(context)


def seal_key(pair_key: bytes, sender: bytes, receiver: bytes, context: bytes) -> bytes:
    return _SEAL.derive(pair_key, directed_info(b"seal", sender, receiver, context))


def confirm_key(pair_key: bytes, sender: bytes, receiver: bytes) -> bytes:
    return _CONFIRM.derive(pair_key, directed_info(b"confirm", sender, receiver))


def confirm_mac(key: bytes, challenge: bytes) -> bytes:
    return hmac_sha256(key, b"confirm" + challenge)[:CONFIRM_SIZE]


def session_proof_key(pair_key: bytes, sender: bytes, receiver: bytes) -> bytes:
    return _SESSION.derive(pair_key, directed_info(b"session-proof", sender, receiver))


def session_proof(key: bytes, role: int, initiator_nonce: bytes, responder_nonce: bytes) -> bytes:
    """A session handshake's proof (docs/apdu.md 5.8): the sender's role is in it, so an
    initiator's proof never passes as a responder's, and both nonces, so it is fresh for
    each side."""
    body = b"session-proof" + bytes((role,)) + initiator_nonce + responder_nonce
    return hmac_sha256(key, body)[:CONFIRM_SIZE]


def session_frame_key(pair_key: bytes, sender: bytes, receiver: bytes,
                      initiator_nonce: bytes, responder_nonce: bytes) -> bytes:
    """The key of one direction of one session: both nonces make it this session's alone."""
    info = directed_info(b"session-frame", sender, receiver, initiator_nonce + responder_nonce)
    return _SESSION.derive(pair_key, info)


def card_auth_input(serial: bytes, holder_id: bytes, challenge: bytes) -> bytes:
    """What the card MACs to prove it is the holder's genuine card (docs/apdu.md,
    INTERNAL AUTHENTICATE). Label and direction (card -> terminal) first, so the key can
    never answer for another purpose or direction; serial and holder id bind the answer to
    this card's identity; the terminal's fresh challenge makes it single-use."""
    return (_lv(CARD_AUTH_LABEL) + _lv(b"card") + _lv(b"terminal") + _lv(serial)
            + _lv(holder_id) + _lv(challenge))


def card_auth_mac(key: bytes, serial: bytes, holder_id: bytes, challenge: bytes) -> bytes:
    return hmac_sha256(key, card_auth_input(serial, holder_id, challenge))


def seal(key: bytes, atc: int, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    """version(1) || atc(4) || nonce(12) || ciphertext || tag(16); version and ATC are
    authenticated with the caller's associated data."""
    nonce = nonce if nonce is not None else secrets.token_bytes(NONCE_SIZE)
    header = bytes((SEAL_VERSION,)) + atc.to_bytes(ATC_SIZE, "big")
    # AES-GCM from `cryptography` (OpenSSL): the same bytes as pycryptodome's, whose GCM
    # object costs ~60-130 us to build, at ~2-4 us; every part, receipt and box passes here
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> tuple[int, bytes]:
    """Returns (atc, plaintext); raises ValueError for a malformed box, IntegrityError for a
    forged or altered one."""
    if len(sealed) < SEAL_OVERHEAD or sealed[0] != SEAL_VERSION:
        raise ValueError("not a v1 sealed box")
    header, nonce = sealed[:HEADER_SIZE], sealed[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
    try:  # the ciphertext and its 16-byte tag, as AESGCM takes them
        plaintext = AESGCM(key).decrypt(nonce, sealed[HEADER_SIZE + NONCE_SIZE :], header + aad)
    except InvalidTag as exc:
        raise IntegrityError("authentication tag mismatch") from exc
    return box_counter(header), plaintext


def box_counter(box: bytes) -> int:
    """The ATC a sealed box carries in clear (authenticated once the box is opened): what a
    receiver checks is increasing, without the card (DESIGN.md's clone detection)."""
    return int.from_bytes(box[1:HEADER_SIZE], "big")


def diversify_transport_key(master_transport_key: bytes, serial: bytes) -> bytes:
    """Per-card transport key from the centre's master, as GlobalPlatform diversification."""
    return hkdf_sha256(master_transport_key, TRANSPORT_SALT, b"card" + serial)


def perso_session_key(transport_key: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    return hkdf_sha256(transport_key, PERSO_SALT, b"session" + host_challenge + card_challenge)


def cmac(key: bytes, message: bytes) -> bytes:
    return CMAC.new(key, message, ciphermod=AES).digest()


def card_cryptogram(session_key: bytes, host_challenge: bytes, card_challenge: bytes) -> bytes:
    return cmac(session_key, b"card" + host_challenge + card_challenge)


def command_mac(session_key: bytes, counter: int, header: bytes, payload: bytes) -> bytes:
    """C-MAC of a personalisation command: the counter makes each MAC single-use in the
    session, the session key (from both challenges) makes it single-use across sessions."""
    return cmac(session_key, counter.to_bytes(2, "big") + header + payload)
