"""The card manager's ledger: accounts, one decision (and at most one debit) per order, the
card transaction counters seen, and the declines that rate-limit a holder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from host.errors import EnvelopeError
from host.storage.sqlite import Database, Seen, record_view, replay_error

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    card_number TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,        -- the card holder's identifier (its key row)
    name        TEXT NOT NULL,
    phone       TEXT NOT NULL,
    expiry      TEXT NOT NULL,        -- MM/YY
    balance     INTEGER NOT NULL CHECK (balance >= 0),
    blocked     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS authorisations (
    order_id    BLOB PRIMARY KEY,     -- one decision, one debit at most, per order
    request     BLOB NOT NULL,        -- digest of the request: retransmission vs replay
    seller      TEXT NOT NULL,
    card_number TEXT,
    amount      INTEGER NOT NULL,
    digest      BLOB NOT NULL,        -- the order digest the decision refers to
    code        TEXT NOT NULL,        -- approved | declined | reversed | voided
    reason      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    answer      BLOB,                 -- the authorisation frame sent: every retransmission
    reversal    BLOB                  -- gets these exact bytes; and the reversed frame sent
);
CREATE TABLE IF NOT EXISTS counters (
    holder TEXT NOT NULL,
    atc    INTEGER NOT NULL,          -- a card transaction counter value seen in a part
    PRIMARY KEY (holder, atc)
);
CREATE TABLE IF NOT EXISTS declines (
    holder TEXT NOT NULL,             -- a holder identifier whose request was declined
    at     INTEGER NOT NULL           -- when: the rate limit counts a rolling window
);
CREATE INDEX IF NOT EXISTS declines_by_holder ON declines (holder, at);
"""

MAX_AMOUNT = 2**53  # minor units; beyond any order, and exact in every peer's numbers

# Counters may arrive out of order (two sellers, a pending order retried after a newer one);
# a value seen twice, or far below the highest seen, is what a cloned card produces.
ATC_WINDOW = 256

# Declines per holder identifier before the card manager stops evaluating (an enumeration of
# card numbers, expiry dates or names costs one decline per guess): at most MAX_DECLINES
# evaluated declines in any DECLINE_WINDOW seconds; beyond, a request is declined unread.
MAX_DECLINES = 5
DECLINE_WINDOW = 3600
RATE_LIMITED = "too many declines for this card holder: try again later"


@dataclass(frozen=True, slots=True)
class Account:
    card_number: str
    holder: str
    name: str
    phone: str
    expiry: str
    balance: int
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    code: str  # "approved" | "declined"
    reason: str
    amount: int
    digest: bytes
    answer: bytes | None = None  # the frame already sent for this decision, if any

    @property
    def approved(self) -> bool:
        return self.code == "approved"


@dataclass(frozen=True, slots=True)
class AuthorisationRequest:
    """What the card manager's part claims, as plain values: a field missing from the part,
    or of the wrong type, is None (the rules decline it)."""

    order_id: bytes
    request_digest: bytes
    seller: str
    holder: str  # the holder identifier the header names (its card sealed the part)
    digest: bytes  # the order digest
    atc: int  # the card transaction counter value the part was sealed under
    card_number: str | None
    amount: int | None  # minor units
    expiry: str | None  # MM/YY
    name: str | None
    phone: str | None
    fields: frozenset[str]  # the names of the fields this party decrypted (the views table)


class Ledger(Database):
    schema = LEDGER_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {
        "authorisations": {"answer": "BLOB", "reversal": "BLOB"}}

    def __init__(self, path: Path, *, max_declines: int = MAX_DECLINES,
                 decline_window: int = DECLINE_WINDOW) -> None:
        super().__init__(path)
        self.max_declines, self.decline_window = max_declines, decline_window

    def add_account(self, account: Account) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(card_number) DO "
                "UPDATE SET holder=excluded.holder, name=excluded.name, phone=excluded.phone, "
                "expiry=excluded.expiry, balance=excluded.balance, blocked=excluded.blocked",
                (account.card_number, account.holder, account.name, account.phone,
                 account.expiry, account.balance, int(account.blocked)))

    def account(self, card_number: str) -> Account | None:
        row = self.conn.execute("SELECT * FROM accounts WHERE card_number = ?",
                                (card_number,)).fetchone()
        return Account(*row[:6], blocked=bool(row[6])) if row else None

    def accounts(self) -> list[Account]:
        return [Account(*row[:6], blocked=bool(row[6]))
                for row in self.conn.execute("SELECT * FROM accounts ORDER BY card_number")]

    def debits(self, order_id: bytes) -> int:
        (count,) = self.conn.execute(
            "SELECT count(*) FROM authorisations WHERE order_id = ? AND code = 'approved'",
            (order_id,)).fetchone()
        return int(count)

    def authorise(self, request: AuthorisationRequest,
                  stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide and debit in one transaction. A retransmission gets the recorded decision
        at any age; a new request must be fresh (`stale` says why it is not)."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT request, code, reason, amount, digest, answer FROM authorisations "
                "WHERE order_id = ?", (request.order_id,)).fetchone()
            if row is not None:
                if row[0] != request.request_digest:
                    raise replay_error(request.order_id)
                return Decision(*row[1:6]), Seen.RETRANSMISSION
            if stale is not None:
                raise EnvelopeError("stale", stale)
            now = int(time.time())
            decision, card_number = self._decide(request, now)
            if not decision.approved and decision.reason != RATE_LIMITED:
                self.conn.execute("DELETE FROM declines WHERE at <= ?",
                                  (now - self.decline_window,))
                self.conn.execute("INSERT INTO declines VALUES (?, ?)", (request.holder, now))
            if decision.approved:
                self.conn.execute("UPDATE accounts SET balance = balance - ? "
                                  "WHERE card_number = ?", (decision.amount, card_number))
            # every part the card sealed spent a counter value, approved or not
            self.conn.execute("INSERT OR IGNORE INTO counters VALUES (?, ?)",
                              (request.holder, request.atc))
            self.conn.execute(
                "INSERT INTO authorisations (order_id, request, seller, card_number, amount, "
                "digest, code, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request.order_id, request.request_digest, request.seller, card_number,
                 decision.amount, decision.digest, decision.code, decision.reason, now))
            record_view(self.conn, request.order_id, request.fields)
        return decision, Seen.NEW

    def reverse(self, order_id: bytes, seller: str, digest: bytes) -> Decision:
        """Undo an approval the seller could not complete (or void an order it never will):
        credit the debit back once; an order never seen is voided, so a late authorisation
        request for it is refused as a replay."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT seller, card_number, amount, digest, code, reversal FROM authorisations "
                "WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO authorisations (order_id, request, seller, card_number, "
                    "amount, digest, code, reason, at) "
                    "VALUES (?, x'', ?, NULL, 0, ?, 'voided', ?, ?)",
                    (order_id, seller, digest, "voided before any authorisation",
                     int(time.time())))
                return Decision("voided", "voided before any authorisation", 0, digest)
            if row[0] != seller or row[3] != digest:
                raise replay_error(order_id)
            if row[5] is not None:  # reversed (or voided) before: the same answer again
                return Decision(row[4], "no charge stands",
                                row[2] if row[4] == "reversed" else 0, digest, row[5])
            code, amount = row[4], row[2]
            if code == "approved":
                self.conn.execute("UPDATE accounts SET balance = balance + ? "
                                  "WHERE card_number = ?", (amount, row[1]))
                self.conn.execute("UPDATE authorisations SET code = 'reversed', reason = ? "
                                  "WHERE order_id = ?", ("reversed by the seller", order_id))
                code = "reversed"
            # declined, reversed, voided: nothing is charged, and stays so
            return Decision(code, "no charge stands", amount if code == "reversed" else 0,
                            digest)

    def declines(self, holder: str, now: int | None = None) -> int:
        """Evaluated declines for `holder` in the current window."""
        now = int(time.time()) if now is None else now
        (count,) = self.conn.execute(
            "SELECT count(*) FROM declines WHERE holder = ? AND at > ?",
            (holder, now - self.decline_window)).fetchone()
        return int(count)

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the authorisation frame before it is sent; returns the frame to send, which
        is an earlier one if a concurrent retransmission recorded its own first."""
        return self._record(order_id, "answer", answer)

    def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        """The same for the reversed frame."""
        return self._record(order_id, "reversal", answer)

    def _record(self, order_id: bytes, column: str, answer: bytes) -> bytes:
        # `column` is one of two names fixed above, never input
        with self.transaction():
            self.conn.execute(f"UPDATE authorisations SET {column} = ? "
                              f"WHERE order_id = ? AND {column} IS NULL", (answer, order_id))
            (stored,) = self.conn.execute(f"SELECT {column} FROM authorisations "
                                          f"WHERE order_id = ?", (order_id,)).fetchone()
        return bytes(stored)

    def _decide(self, request: AuthorisationRequest,
                now: int) -> tuple[Decision, str | None]:
        amount, card_number = request.amount, request.card_number
        if amount is None or not 0 < amount <= MAX_AMOUNT or card_number is None:
            return Decision("declined", "the order lacks a valid amount or card number",
                            0, request.digest), None

        def decline(reason: str) -> tuple[Decision, str | None]:
            return Decision("declined", reason, amount, request.digest), card_number

        if self.declines(request.holder, now) >= self.max_declines:
            # not evaluated: the answer says nothing about this card number
            return Decision("declined", RATE_LIMITED, amount, request.digest), None
        account = self.account(card_number)
        if account is None:
            return decline("unknown card number")
        # the holder is authenticated twice: by its card (only it could seal this part) and
        # against the account it claims (card number bound to its identifier, expiry, name)
        if account.holder != request.holder:
            return decline("the card number does not belong to this card holder")
        if request.expiry != account.expiry:
            return decline("wrong expiry date")
        if request.name != account.name:
            return decline("the name does not match the account")
        if account.phone and request.phone != account.phone:
            return decline("the phone number does not match the account")
        if account.blocked:
            return decline("the card is blocked")
        seen, highest = self.conn.execute(
            "SELECT count(*) FILTER (WHERE atc = ?), max(atc) FROM counters WHERE holder = ?",
            (request.atc, request.holder)).fetchone()
        if seen:
            return decline(f"card transaction counter {request.atc} seen before: "
                           f"a cloned card")
        if highest is not None and request.atc + ATC_WINDOW <= highest:
            return decline(f"card transaction counter {request.atc} far below {highest}: "
                           f"a cloned card")
        if account.balance < amount:
            return decline("insufficient funds")
        return Decision("approved", "approved", amount, request.digest), card_number
