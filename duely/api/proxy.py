"""The client's address behind a reverse proxy.

Behind nginx every connection comes from the proxy, so `request.remote_addr` would be the
proxy's address for every player in the world (and the login lockout would count them all as
one). The proxy names the real client in `X-Forwarded-For`; that header is believed only when
the peer is one of FORWARDED_ALLOW_IPS (the same list, with the same default and meaning, as
gunicorn's `forwarded_allow_ips`, which gunicorn_conf.py sets from it for the scheme headers).
Anyone else could write any address there, so from other peers it is ignored.

Werkzeug's ProxyFix does the header work; it trusts one hop, i.e. the address the nearest proxy
appended (nginx's `$proxy_add_x_forwarded_for`), never what the client itself put there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
_REMEMBERED_PEERS = 4096


def _networks(allow: str) -> tuple[bool, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    entries = [entry.strip() for entry in allow.split(",") if entry.strip()]
    try:
        return "*" in entries, [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
    except ValueError as exc:
        raise SystemExit(f"bad value for FORWARDED_ALLOW_IPS: {exc}") from None


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR from X-Forwarded-For when (and only when) the peer is trusted."""

    def __init__(self, app: WSGIApp, allow: str):
        self.app = app
        self.behind_proxy = ProxyFix(app, x_for=1, x_proto=1)
        self.any_peer, self.networks = _networks(allow)
        # The decision per peer address, remembered: parsing the address cost every request a
        # few microseconds, and a worker sees few distinct peers (often just the proxy).
        self._trusted: dict[str | None, bool] = {}

    def trusts(self, peer: str | None) -> bool:
        if self.any_peer:
            return True
        if not peer:
            return True  # a UNIX socket: only local processes can connect (gunicorn's rule too)
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR")
        trusted = self._trusted.get(peer)
        if trusted is None:
            if len(self._trusted) >= _REMEMBERED_PEERS:
                self._trusted.clear()
            trusted = self._trusted[peer] = self.trusts(peer)
        if trusted:
            return self.behind_proxy(environ, start_response)
        return self.app(environ, start_response)
