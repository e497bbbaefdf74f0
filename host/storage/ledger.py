"""The card manager's ledger: accounts, one decision (and at most one debit) per order, the
card transaction counters seen, and the declines that rate-limit a holder.

The ledger stores; it does not judge. For a new authorisation request it gathers the facts the
card manager's rules read (the account claimed, the holder's counter history, its recent
declines) and applies the Decision those rules return, all in one transaction: two requests
for one account can never both read the balance before either debits it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from host.errors import EnvelopeError
from host.storage.base import Seen, replay_error
from host.storage.sqlite import Database, keep_first, record_view

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

# How far back the declines counted for a holder's rate limit reach, in seconds (the rule that
# reads the count, and how many it allows, is the card manager's: host.parties.authorisation).
DECLINE_WINDOW = 3600


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
    code: str  # "approved" | "declined" (| "reversed" | "voided" once the seller undoes it)
    reason: str
    amount: int
    digest: bytes
    answer: bytes | None = None  # the frame already sent for this decision, if any
    # for a new decision: the account it charges, or that a decline concerns (None when the
    # request named none, or was not read); recorded with the decision
    card_number: str | None = None
    # False for a decline given without reading the request (the holder is rate-limited):
    # it does not count as one more decline
    evaluated: bool = True

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


@dataclass(frozen=True, slots=True)
class CounterHistory:
    """The holder's card transaction counters as the ledger has seen them."""

    seen: bool  # this request's value was seen before
    highest: int | None  # the highest value seen, None for a holder never seen


@dataclass(frozen=True, slots=True)
class Facts:
    """What the ledger knows that the rules read, gathered in the deciding transaction."""

    account: Account | None  # the account the request claims, None if there is none
    counters: CounterHistory
    declines: int  # the holder's evaluated declines in the current window


#: the card manager's rules: a pure function of the request and the facts
Rules = Callable[[AuthorisationRequest, Facts], Decision]


@runtime_checkable
class LedgerStore(Protocol):
    """The card manager's store, whatever engine holds it."""

    def add_account(self, account: Account) -> None: ...

    def account(self, card_number: str) -> Account | None: ...

    def accounts(self) -> list[Account]: ...

    def debits(self, order_id: bytes) -> int:
        """How many approved debits the order has (0 or 1)."""
        ...

    def authorise(self, request: AuthorisationRequest, rules: Rules,
                  stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide a new request with `rules` and apply the decision, or return the one
        recorded for a retransmission; a replay raises `replay`, a stale new request
        `stale`."""
        ...

    def reverse(self, order_id: bytes, seller: str, digest: bytes) -> Decision:
        """Credit an approved debit back once, or void an order never seen."""
        ...

    def declines(self, holder: str, now: int | None = None) -> int: ...

    def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the authorisation frame before it is sent; returns the one to send (an
        earlier one, if a concurrent retransmission recorded its own first)."""
        ...

    def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        """The same for the reversed frame."""
        ...

    def close(self) -> None: ...


class Ledger(Database):
    schema = LEDGER_SCHEMA
    columns: ClassVar[dict[str, dict[str, str]]] = {
        "authorisations": {"answer": "BLOB", "reversal": "BLOB"}}

    def __init__(self, path: Path, *, decline_window: int = DECLINE_WINDOW) -> None:
        super().__init__(path)
        self.decline_window = decline_window

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

    def authorise(self, request: AuthorisationRequest, rules: Rules,
                  stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide with `rules` and debit in one transaction. A retransmission gets the
        recorded decision at any age; a new request must be fresh (`stale` says why it is
        not)."""
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
            decision = rules(request, self._facts(request, now))
            card_number = decision.card_number
            if decision.approved and card_number is None:
                raise ValueError("an approval must name the account it charges")
            if not decision.approved and decision.evaluated:
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

    def _facts(self, request: AuthorisationRequest, now: int) -> Facts:
        account = None if request.card_number is None else self.account(request.card_number)
        seen, highest = self.conn.execute(
            "SELECT count(*) FILTER (WHERE atc = ?), max(atc) FROM counters WHERE holder = ?",
            (request.atc, request.holder)).fetchone()
        return Facts(account, CounterHistory(bool(seen), highest),
                     self.declines(request.holder, now))

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
        with self.transaction():
            return keep_first(self.conn, "authorisations", "answer", order_id, answer)

    def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        with self.transaction():
            return keep_first(self.conn, "authorisations", "reversal", order_id, answer)
