"""Fixtures shared by the integration tier."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.slack import Receiver, slack_receiver


@pytest.fixture
async def slack() -> AsyncIterator[Receiver]:
    """A local https Slack webhook receiver (self-signed, trusted through SSL_CERT_FILE)."""
    async with slack_receiver() as r:
        yield r
