"""attested_session: a requests.Session over the extension's pinning forwarder."""

import base64
import json
import socket
import threading
import weakref
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection

from . import Attestation, Receipt, _attest, _attestation_of_receipt

# The header on the forwarder's own answer when it refused the server.
_REFUSED = "x-teeserve-refused"
# The request header that asks for a receipt, and the response header that brings one
# (base64url without padding).
_RECEIPT = "X-Teeserve-Receipt"


class _UnixConnection(urllib3.connection.HTTPConnection):
    """HTTP/1.1 to the forwarder's socket; the Host header still names the server."""

    def __init__(self, *args, socket_path, **kwargs):
        super().__init__(*args, **kwargs)
        self._socket_path = socket_path

    def _new_conn(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.timeout, (int, float)):
            s.settimeout(self.timeout)
        try:
            s.connect(self._socket_path)
        except OSError:
            s.close()
            raise
        return s


class _UnixPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _UnixConnection


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Sends every request through the forwarder; TLS (the CA, the attested key, the client
    certificate) is the forwarder's, so requests' own verify and cert do not apply."""

    def __init__(self, forwarder, host, port):
        super().__init__()
        self._forwarder = forwarder
        self._pool = _UnixPool(host, port, socket_path=forwarder.socket_path)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):
        return self._pool

    def cert_verify(self, conn, url, verify, cert):
        pass

    def request_url(self, request, proxies):
        # Never a proxy: the forwarder connects to the attested server itself.
        return request.path_url

    def send(self, request, **kwargs):
        try:
            resp = super().send(request, **kwargs)
        except requests.exceptions.ConnectionError as e:
            why = self._forwarder.last_error()
            if why:
                raise requests.exceptions.SSLError(why, request=request) from e
            raise
        refused = resp.headers.get(_REFUSED)
        if refused:
            try:
                why = json.loads(resp.content)["error"]
            except (ValueError, KeyError, TypeError):
                why = "the server's TLS key is not the attested one"
            # The forwarder says whether the server was refused or could not be reached.
            error = (requests.exceptions.ConnectionError if refused == "unreachable"
                     else requests.exceptions.SSLError)
            raise error(why, request=request, response=resp)
        return resp

    def close(self):
        super().close()
        self._pool.close()


class _ElsewhereAdapter(requests.adapters.BaseAdapter):
    """Refuses every URL outside the attested origin."""

    def __init__(self, origin):
        super().__init__()
        self._origin = origin

    def send(self, request, **kwargs):
        raise requests.exceptions.InvalidURL(
            f"{request.url} is not on {self._origin}: an attested session talks only to the "
            "server whose attestation it checked", request=request)

    def close(self):
        pass


class AttestedSession(requests.Session):
    """A requests.Session that talks only to the attested server.

    ``verdict`` and ``document`` are what the attestation check found; ``base_url`` is the
    origin it admits; ``attestation`` is the document (JSON bytes) with the certificate it
    binds, which receipts are verified against. With receipts, ``last_receipt()`` is the
    Receipt of this thread's last response.
    """

    def __init__(self, forwarder, origin, host, port, receipts=False):
        super().__init__()
        self._forwarder = forwarder
        self.base_url = origin
        self.verdict = json.loads(forwarder.verdict_json)
        self.document = json.loads(forwarder.document_json)
        self.attestation = Attestation(forwarder.attestation_document, forwarder.certificate)
        self.receipts = receipts
        self._last = threading.local()
        self.trust_env = False  # no proxy from the environment: nothing but the forwarder
        if receipts:
            self.headers[_RECEIPT] = "1"
        if forwarder.accept_header:
            # Every request carries the policy's model pins: the attested server answers from
            # no other model file.
            self.headers["x-teeserve-accept-sha256"] = forwarder.accept_header
        elsewhere = _ElsewhereAdapter(origin)
        self.mount("https://", elsewhere)
        self.mount("http://", elsewhere)
        pinned = _PinnedAdapter(forwarder, host, port)
        for prefix in _prefixes(host, port):
            self.mount(prefix, pinned)
        weakref.finalize(self, forwarder.close)

    def send(self, request, **kwargs):
        self._last.response = None
        resp = super().send(request, **kwargs)
        self._last.response = resp
        return resp

    def last_receipt(self):
        """The Receipt of the last response this thread got from the session (redirects
        followed), or None when it carries none. The request body is the one sent (a body
        given as text is sent as its UTF-8 bytes); the response body is read if it was not.
        When the served models changed after the session was made, the receipt names a later
        attestation document, which is fetched (by its SHA-256) and admitted here;
        ReceiptDocumentError when that fails."""
        resp = getattr(self._last, "response", None)
        value = None if resp is None else resp.headers.get(_RECEIPT)
        if not value:
            return None
        receipt = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        body = resp.request.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        return Receipt(receipt, bytes(body), resp.content, _attestation_of_receipt(self._forwarder, receipt))


    def close(self):
        try:
            super().close()
        finally:
            self._forwarder.close()


def _prefixes(host, port):
    name = f"[{host}]" if ":" in host else host
    out = [f"https://{name}:{port}/"]
    if port == 443:
        out.append(f"https://{name}/")
    return out


def session(url, *, root_certificates, policy, root, collateral, private_key,
            certificate_chain, receipts):
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise ValueError(f"url {url!r} is not https://HOST[:PORT]")
    host, port = u.hostname, u.port or 443
    name = f"[{host}]" if ":" in host else host
    addr = f"{name}:{port}"
    fwd = _attest(addr, host, "http1", root_certificates, policy, root, collateral,
                  private_key, certificate_chain, receipts=receipts)
    return AttestedSession(fwd, f"https://{addr}", host, port, receipts)
