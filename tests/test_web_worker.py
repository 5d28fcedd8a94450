"""The gunicorn work the web worker spares per request (duely/web_worker.spare_per_request_work)
gives what gunicorn's own functions give."""

from __future__ import annotations

import time

import pytest
from gunicorn import util
from gunicorn.config import Config as GunicornConfig
from gunicorn.http import message
from gunicorn.http import wsgi as gwsgi

from duely.web_worker import spare_per_request_work


@pytest.fixture
def spared(monkeypatch):
    """Installed for this test only (the originals come back after it)."""
    originals = util.http_date, message._ip_in_allow_list, gwsgi.WSGIErrorsWrapper
    for module, name in ((util, "http_date"), (message, "_ip_in_allow_list"), (gwsgi, "WSGIErrorsWrapper")):
        monkeypatch.setattr(module, name, getattr(module, name))
    spare_per_request_work()
    assert (util.http_date, message._ip_in_allow_list, gwsgi.WSGIErrorsWrapper) != originals
    return originals


def test_the_date_header_is_gunicorns(spared):
    original_date = spared[0]
    for _ in range(5):
        before = time.time()
        got = util.http_date()
        after = time.time()
        if int(before) == int(after):  # not across a second's change
            assert got == original_date(before) == original_date(int(before))
            assert got.endswith(" GMT")
            break
        time.sleep(0.01)
    else:
        pytest.fail("every try straddled a second")
    assert util.http_date(1_700_000_000.5) == original_date(1_700_000_000.5)
    spare_per_request_work()  # twice: not wrapped twice
    assert util.http_date.__closure__ is not None and util.http_date.duely_spared  # type: ignore[attr-defined]


def test_the_trusted_proxy_decision_is_gunicorns(spared):
    original = spared[1]
    cfg = GunicornConfig()
    cfg.set("forwarded_allow_ips", "127.0.0.1,10.0.0.0/8,::1")
    allow, networks = cfg.forwarded_allow_ips, cfg.forwarded_allow_networks()
    any_cfg = GunicornConfig()
    any_cfg.set("forwarded_allow_ips", "*")
    for ip in ("127.0.0.1", "10.1.2.3", "11.0.0.1", "::1", "::2", "::ffff:127.0.0.1", "nonsense", "", "127.0.0.1"):
        assert message._ip_in_allow_list(ip, allow, networks) == original(ip, allow, networks), ip
        assert message._ip_in_allow_list(ip, any_cfg.forwarded_allow_ips, any_cfg.forwarded_allow_networks()) is True
    # The same address under another list is decided by that list.
    other = GunicornConfig()
    other.set("forwarded_allow_ips", "192.168.0.1")
    assert message._ip_in_allow_list("127.0.0.1", other.forwarded_allow_ips, other.forwarded_allow_networks()) is False


def test_the_wsgi_errors_stream_writes_where_gunicorns_does(spared):
    cfg = GunicornConfig()
    first, second = gwsgi.base_environ(cfg)["wsgi.errors"], gwsgi.base_environ(cfg)["wsgi.errors"]
    assert first is second and isinstance(first, spared[2])
    assert first.streams == spared[2](cfg).streams
