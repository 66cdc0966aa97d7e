"""The suite-wide check in conftest.py: no HTTP reply a test receives names the session's temporary directory."""

from __future__ import annotations

import pytest


def test_every_test_client_reply_is_checked_for_the_temporary_directory(tmp_path):
    """The check fires: a reply that names the session's temporary directory fails the test."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.get("/leak")(lambda: {"path": str(tmp_path)})
    app.get("/fine")(lambda: {"path": tmp_path.name})
    client = TestClient(app)
    assert client.get("/fine").status_code == 200
    with pytest.raises(AssertionError, match="temporary directory"):
        client.get("/leak")
