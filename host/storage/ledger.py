"""The card manager's ledger: accounts, one decision (and at most one debit) per order, the
card transaction counters seen, and the declines that rate-limit a holder.

The ledger stores; it does not judge. For a new authorisation request it gathers the facts the
card manager's rules read (the account claimed, the holder's counter history, its recent
declines) and applies the Decision those rules return, all in one transaction: two requests
for one account can never both read the balance before either debits it. The decisions are
awaited (`Engine.decide`): they return once committed, the loop never waiting for the disk.
A decision (and a reversal) is made durable by the record of its answer, which precedes the
answer on the wire: so it does not wait for the disk itself (docs/protocol.md section 7)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from host.errors import EnvelopeError
from host.storage.base import (
    VIEWS_POSTGRESQL,
    Row,
    Schema,
    Seen,
    Tx,
    keep_first,
    record_view,
    replay_error,
)
from host.storage.group_commit import BatchHook
from host.storage.location import Location, open_database

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

# The same tables on PostgreSQL, as versioned migration steps (host.storage.postgresql):
# append a step to change them, never edit one a database may already have run.
LEDGER_POSTGRESQL = ("""
CREATE TABLE accounts (
    card_number text PRIMARY KEY,
    holder      text NOT NULL,
    name        text NOT NULL,
    phone       text NOT NULL,
    expiry      text NOT NULL,
    balance     bigint NOT NULL CHECK (balance >= 0),
    blocked     integer NOT NULL DEFAULT 0
);
CREATE TABLE authorisations (
    order_id    bytea PRIMARY KEY,
    request     bytea NOT NULL,
    seller      text NOT NULL,
    card_number text,
    amount      bigint NOT NULL,
    digest      bytea NOT NULL,
    code        text NOT NULL CHECK (code IN ('approved', 'declined', 'reversed', 'voided')),
    reason      text NOT NULL,
    at          bigint NOT NULL,
    answer      bytea,
    reversal    bytea
);
CREATE TABLE counters (
    holder text NOT NULL,
    atc    bigint NOT NULL,
    PRIMARY KEY (holder, atc)
);
CREATE TABLE declines (
    holder text NOT NULL,
    at     bigint NOT NULL
);
CREATE INDEX declines_by_holder ON declines (holder, at);
""" + VIEWS_POSTGRESQL,)

LEDGER = Schema("ledger", LEDGER_SCHEMA, LEDGER_POSTGRESQL,
                {"authorisations": {"answer": "BLOB", "reversal": "BLOB"}})

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

    async def authorise(self, request: AuthorisationRequest, rules: Rules,
                        stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide a new request with `rules` and apply the decision, or return the one
        recorded for a retransmission; a replay raises `replay`, a stale new request
        `stale`."""
        ...

    async def reverse(self, order_id: bytes, seller: str, digest: bytes) -> Decision:
        """Credit an approved debit back once, or void an order never seen."""
        ...

    def declines(self, holder: str, now: int | None = None) -> int: ...

    async def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        """Keep the authorisation frame before it is sent; returns the one to send (an
        earlier one, if a concurrent retransmission recorded its own first). Its commit is
        what makes the decision durable: `authorise` and `reverse` do not wait for the disk,
        since nothing may be sent on their strength before their answer is recorded."""
        ...

    async def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        """The same for the reversed frame."""
        ...

    def close(self) -> None: ...


def _account(row: Row) -> Account:
    return Account(*row[:6], blocked=bool(row[6]))


class Ledger:
    """The ledger on either engine (`location`: a SQLite file, or a PostgreSQL URL)."""

    def __init__(self, location: Location, *, decline_window: int = DECLINE_WINDOW,
                 batch_hook: BatchHook | None = None) -> None:
        self.db = open_database(location, LEDGER, batch_hook=batch_hook)
        self.decline_window = decline_window

    def close(self) -> None:
        self.db.close()

    def add_account(self, account: Account) -> None:
        self.db.run(lambda tx: tx.execute(
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(card_number) DO "
            "UPDATE SET holder=excluded.holder, name=excluded.name, phone=excluded.phone, "
            "expiry=excluded.expiry, balance=excluded.balance, blocked=excluded.blocked",
            (account.card_number, account.holder, account.name, account.phone,
             account.expiry, account.balance, int(account.blocked))))

    def account(self, card_number: str) -> Account | None:
        return self.db.read(lambda tx: self._account(tx, card_number))

    @staticmethod
    def _account(tx: Tx, card_number: str) -> Account | None:
        row = tx.one("SELECT * FROM accounts WHERE card_number = ?", (card_number,))
        return _account(row) if row else None

    def accounts(self) -> list[Account]:
        return [_account(row) for row in self.db.read(
            lambda tx: tx.all("SELECT * FROM accounts ORDER BY card_number"))]

    def debits(self, order_id: bytes) -> int:
        row = self.db.read(lambda tx: tx.one(
            "SELECT count(*) FROM authorisations WHERE order_id = ? AND code = 'approved'",
            (order_id,)))
        assert row is not None
        return int(row[0])

    async def authorise(self, request: AuthorisationRequest, rules: Rules,
                        stale: str | None = None) -> tuple[Decision, Seen]:
        """Decide with `rules` and debit in one transaction. A retransmission gets the
        recorded decision at any age; a new request must be fresh (`stale` says why it is
        not)."""
        # made durable by the record of its answer, which comes before the answer is sent
        # (`record_answer`, durable): nothing rests on it until then
        return await self.db.decide(lambda tx: self._authorise(tx, request, rules, stale),
                                    durable=False)

    def _authorise(self, tx: Tx, request: AuthorisationRequest, rules: Rules,
                   stale: str | None) -> tuple[Decision, Seen]:
        row = tx.one("SELECT request, code, reason, amount, digest, answer FROM authorisations "
                     "WHERE order_id = ?", (request.order_id,))
        if row is not None:
            if bytes(row[0]) != request.request_digest:
                raise replay_error(request.order_id)
            return Decision(*row[1:6]), Seen.RETRANSMISSION
        if stale is not None:
            raise EnvelopeError("stale", stale)
        now = int(time.time())
        decision = rules(request, self._facts(tx, request, now))
        card_number = decision.card_number
        if decision.approved and card_number is None:
            raise ValueError("an approval must name the account it charges")
        if not decision.approved and decision.evaluated:
            # this holder's declines only: the index reads them, and two holders' decisions
            # touch no common row
            tx.execute("DELETE FROM declines WHERE holder = ? AND at <= ?",
                       (request.holder, now - self.decline_window))
            tx.execute("INSERT INTO declines VALUES (?, ?)", (request.holder, now))
        if decision.approved:
            tx.execute("UPDATE accounts SET balance = balance - ? WHERE card_number = ?",
                       (decision.amount, card_number))
        # every part the card sealed spent a counter value, approved or not
        tx.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT DO NOTHING",
                   (request.holder, request.atc))
        tx.execute(
            "INSERT INTO authorisations (order_id, request, seller, card_number, amount, "
            "digest, code, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request.order_id, request.request_digest, request.seller, card_number,
             decision.amount, decision.digest, decision.code, decision.reason, now))
        record_view(tx, request.order_id, request.fields)
        return decision, Seen.NEW

    def _facts(self, tx: Tx, request: AuthorisationRequest, now: int) -> Facts:
        account = None if request.card_number is None \
            else self._account(tx, request.card_number)
        # two lookups in the (holder, atc) key, not a scan of the holder's every counter
        row = tx.one("SELECT (SELECT 1 FROM counters WHERE holder = ? AND atc = ?), "
                     "(SELECT max(atc) FROM counters WHERE holder = ?)",
                     (request.holder, request.atc, request.holder))
        assert row is not None
        seen, highest = row
        return Facts(account, CounterHistory(seen is not None, highest),
                     self._declines(tx, request.holder, now))

    async def reverse(self, order_id: bytes, seller: str, digest: bytes) -> Decision:
        """Undo an approval the seller could not complete (or void an order it never will):
        credit the debit back once; an order never seen is voided, so a late authorisation
        request for it is refused as a replay."""
        # made durable by the record of its answer (`record_reversal`), as `authorise`
        return await self.db.decide(lambda tx: self._reverse(tx, order_id, seller, digest),
                                    durable=False)

    @staticmethod
    def _reverse(tx: Tx, order_id: bytes, seller: str, digest: bytes) -> Decision:
        row = tx.one("SELECT seller, card_number, amount, digest, code, reversal "
                     "FROM authorisations WHERE order_id = ?", (order_id,))
        if row is None:
            tx.execute(
                "INSERT INTO authorisations (order_id, request, seller, card_number, "
                "amount, digest, code, reason, at) "
                "VALUES (?, ?, ?, NULL, 0, ?, 'voided', ?, ?)",
                (order_id, b"", seller, digest, "voided before any authorisation",
                 int(time.time())))
            return Decision("voided", "voided before any authorisation", 0, digest)
        if row[0] != seller or bytes(row[3]) != digest:
            raise replay_error(order_id)
        if row[5] is not None:  # reversed (or voided) before: the same answer again
            return Decision(row[4], "no charge stands",
                            row[2] if row[4] == "reversed" else 0, digest, bytes(row[5]))
        code, amount = row[4], row[2]
        if code == "approved":
            tx.execute("UPDATE accounts SET balance = balance + ? WHERE card_number = ?",
                       (amount, row[1]))
            tx.execute("UPDATE authorisations SET code = 'reversed', reason = ? "
                       "WHERE order_id = ?", ("reversed by the seller", order_id))
            code = "reversed"
        # declined, reversed, voided: nothing is charged, and stays so
        return Decision(code, "no charge stands", amount if code == "reversed" else 0, digest)

    def declines(self, holder: str, now: int | None = None) -> int:
        """Evaluated declines for `holder` in the current window."""
        at = int(time.time()) if now is None else now
        return self.db.read(lambda tx: self._declines(tx, holder, at))

    def _declines(self, tx: Tx, holder: str, now: int) -> int:
        row = tx.one("SELECT count(*) FROM declines WHERE holder = ? AND at > ?",
                     (holder, now - self.decline_window))
        assert row is not None
        return int(row[0])

    async def record_answer(self, order_id: bytes, answer: bytes) -> bytes:
        return await self.db.decide(
            lambda tx: keep_first(tx, "authorisations", "answer", order_id, answer))

    async def record_reversal(self, order_id: bytes, answer: bytes) -> bytes:
        return await self.db.decide(
            lambda tx: keep_first(tx, "authorisations", "reversal", order_id, answer))
