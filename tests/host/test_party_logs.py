"""What the parties log for an order: one INFO line each for the decision, and the flow of
FIG. 1 (a DEBUG line per message) only when asked for (`nettx seller serve --flow`)."""

from __future__ import annotations

import logging

import pytest

from host.parties.seller import flow_log
from terminal.session import CardSession
from tests.host.market import Market, order
from tests.host.test_transaction import client_for

#: the order their INFO lines come in: the card manager decides, the delivery ships, the
#: seller finishes
PARTIES = ("nettx.issuer", "nettx.delivery", "nettx.seller")


def party_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[tuple[str, str]]:
    return [(r.name, r.getMessage()) for r in caplog.records
            if r.levelno == level and r.name.startswith("nettx.")]


def test_an_order_leaves_one_info_line_per_party_and_no_flow(
        market: Market, holder_card: CardSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outcome = client_for(market, holder_card).buy(order())
    assert outcome.status == "completed", outcome.reason
    lines = party_lines(caplog, logging.INFO)
    assert tuple(name for name, _ in lines) == PARTIES, lines
    assert lines[-1][1].endswith(": completed")
    assert outcome.order_id.hex() in lines[-1][1]
    assert not [r for r in caplog.records if r.name == flow_log.name]


def test_the_flow_is_logged_message_by_message_when_asked_for(
        market: Market, holder_card: CardSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=flow_log.name)
    outcome = client_for(market, holder_card).buy(order())
    assert outcome.status == "completed", outcome.reason
    flow = [m for name, m in party_lines(caplog, logging.DEBUG) if name == flow_log.name]
    assert flow[0] == "FLOW x holder -> seller: order form request (holder id, nonce)"
    assert "FLOW y issuer -> seller: answer under issuer -> holder key" in flow
    assert "FLOW y seller -> issuer: authorise: sealed data + seller's MAC" in flow
    assert "FLOW y issuer -> seller: authorisation: approved" in flow
    assert any(m.startswith("FLOW z delivery -> seller: delivery: TRK-") for m in flow)
    assert flow[-1] == "FLOW x seller -> holder: outcome: completed"
    # the seller's other per-step lines stay at DEBUG on its own logger, off here
    assert not [m for name, m in party_lines(caplog, logging.DEBUG) if name == "nettx.seller"]
