"""Check a teeserve server's attestation before sending it any data.

- ``verify_quote``: verify an Intel DCAP quote (SGX v3, TDX v4/v5) against Intel-signed
  collateral with teeserve's Rust verifier, and appraise it with a policy.
- ``attested_channel``: a ``grpc.Channel`` to a server whose TLS key was attested; it works
  unchanged with ``PredictionServiceStub`` and ``ModelServiceStub``.
- ``attested_session``: a ``requests.Session`` with the same guarantee for REST.
- ``attested_endpoint``: a local address with the same guarantee, for clients that take only
  an address: Triton's ``tritonclient`` (gRPC and HTTP) and KServe's v2 clients.
- ``verify_receipt``: check a receipt (``receipts=True``: the server's signed statement of which
  model file answered which request with which response) against the attestation document
  that carries its key, as ``teeserve receipt verify`` does.

The channel and the session never reach a server whose key was not attested: every connection
they open goes through a small forwarder in the extension, on a Unix socket in a private
directory, which opens TLS to the server and admits only the attested key (and the CA).
"""

import datetime as _dt
import json as _json
import math as _math
import os as _os

from . import _native

__all__ = [
    "Error",
    "VerificationError",
    "AttestationError",
    "ReceiptDocumentError",
    "verify_quote",
    "attested_channel",
    "attested_session",
    "attested_endpoint",
    "AttestedEndpoint",
    "Attestation",
    "Receipt",
    "verify_receipt",
]


class Error(Exception):
    """A refusal by teeserve: ``rule`` names the check that failed, ``detail`` what failed it."""

    def __init__(self, message, rule, detail):
        super().__init__(message)
        self.rule = rule
        self.detail = detail


class VerificationError(Error):
    """A quote or a receipt did not verify, or the policy refused its verdict.

    ``rule`` is the policy key that refused (``mrenclave``, ``tcb_status``, ``allow_debug``,
    ...) or the verification check that failed (``signature``, ``expired``, ``root``,
    ``tcb_not_supported``, ``collateral``, ``quote``, ...; for a receipt also ``receipt`` (its
    shape, or a signature that is not the attested receipt key's), ``receipt request``,
    ``receipt response``, ``receipt document``, ``receipt model``, ``receipt key``).
    """


class AttestationError(Error):
    """A server's attestation could not be fetched, did not verify, did not bind the TLS key of
    the connection it came over, or was refused by the policy. Nothing but requests for the
    attestation document (one with a fresh nonce, when the TLS key is the host's) was sent to the
    server."""


class ReceiptDocumentError(Error):
    """The attestation document that a receipt names could not be fetched from its server, or was
    not admitted (its quote, the policy, the certificate or the receipt key). Raised by
    ``last_receipt()`` when the served models changed after the channel or session was made and
    the receipt names a later document; the answer itself was received. ``rule`` names the check
    that failed, as for AttestationError."""


def _bytes(value, what):
    """Bytes given as bytes, or read from a path."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, _os.PathLike)):
        with open(value, "rb") as f:
            return f.read()
    raise TypeError(f"{what} must be bytes or a path, not {type(value).__name__}")


def _policy(policy):
    """(kind, text) of a policy given as a dict or as the path of a TOML file."""
    if isinstance(policy, dict):
        return "json", _json.dumps(policy)
    if isinstance(policy, (str, _os.PathLike)):
        with open(policy, "r", encoding="utf-8") as f:
            return "toml", f.read()
    raise TypeError(f"policy must be a dict or the path of a TOML file, not {type(policy).__name__}")


def _time(at):
    """Unix seconds from a datetime (naive means UTC), a number, or RFC 3339 text."""
    if at is None:
        return None
    if isinstance(at, bool):
        raise TypeError("at must be a datetime, Unix seconds or an RFC 3339 string, not bool")
    if isinstance(at, _dt.datetime):
        if at.tzinfo is None:
            at = at.replace(tzinfo=_dt.timezone.utc)
        return _math.floor(at.timestamp())
    if isinstance(at, int):
        return at
    if isinstance(at, float):
        return _math.floor(at)
    if isinstance(at, str):
        return _native.parse_time(at)
    raise TypeError(f"at must be a datetime, Unix seconds or an RFC 3339 string, not {type(at).__name__}")


def verify_quote(quote, collateral=None, *, pccs_url=None, at=None, policy=None, root=None):
    """Verifies a DCAP quote and returns its verdict as a dict (the JSON that
    ``teeserve attest verify`` prints).

    quote: the quote's bytes (raw, or hex text).
    collateral: a collateral bundle (dcap-qvl's JSON layout), as bytes or a path.
    pccs_url: else, a PCCS or Intel PCS v4 base URL to fetch the collateral from.
    at: the verification time: a datetime (naive means UTC), Unix seconds or RFC 3339 text;
        default now.
    policy: a dict with the keys of a teeserve policy file, or the path of one (TOML); the
        verdict must then be admitted too.
    root: the root certificate (PEM bytes or a path) instead of the Intel SGX Root CA.

    Raises VerificationError (with ``rule`` and ``detail``) when the quote does not verify or
    the policy refuses it; ValueError or TypeError for malformed arguments.

    Collateral bundles are checked once and kept (the last few, by their SHA-256 and the
    root), as teeserve's key broker keeps them: their signatures, chains and CRLs do not change;
    the validity windows are checked against ``at`` on every call.
    """
    q = _bytes(quote, "quote")
    c = None if collateral is None else _bytes(collateral, "collateral")
    if c is None and pccs_url is None:
        raise TypeError("verify_quote needs collateral (a bundle) or pccs_url")
    kind, text = _policy(policy) if policy is not None else (None, None)
    r = None if root is None else _bytes(root, "root")
    try:
        verdict = _native.verify_quote(q, c, pccs_url, _time(at), kind, text, r)
    except _native.Refusal as e:
        rule, detail, message = e.args
        raise VerificationError(message, rule, detail) from None
    return _json.loads(verdict)


class Attestation:
    """A server's attestation document (``document``: its JSON bytes) and the certificate
    (``certificate``: DER bytes) whose key the document binds: what a receipt is verified
    against. Keep it with the receipts it vouches for."""

    __slots__ = ("document", "certificate")

    def __init__(self, document, certificate):
        self.document = _bytes(document, "document")
        self.certificate = _bytes(certificate, "certificate")

    def __repr__(self):
        return f"Attestation(document={len(self.document)} bytes, certificate={len(self.certificate)} bytes)"


# The files of a receipt directory, as `teeserve predict --receipt DIR` writes them and
# `teeserve receipt verify DIR` reads them.
_RECEIPT_FILES = ("receipt.cbor", "request.bin", "response.bin", "attestation.json", "certificate.der")


class Receipt:
    """A receipt (``receipt``: the COSE_Sign1 bytes the server sent), the exact bytes of the
    request and the response it is about (``request``, ``response``: the gRPC messages or the
    REST bodies as sent and received), and the ``attestation`` that carries its key.

    ``save(directory)`` writes the files ``teeserve receipt verify`` reads; ``Receipt.load``
    reads them back.
    """

    __slots__ = ("receipt", "request", "response", "attestation")

    def __init__(self, receipt, request, response, attestation):
        self.receipt = receipt
        self.request = request
        self.response = response
        self.attestation = attestation

    def save(self, directory):
        """Writes receipt.cbor, request.bin, response.bin, attestation.json and certificate.der
        into ``directory`` (made if absent)."""
        _os.makedirs(directory, exist_ok=True)
        contents = (self.receipt, self.request, self.response, self.attestation.document,
                    self.attestation.certificate)
        for name, data in zip(_RECEIPT_FILES, contents):
            with open(_os.path.join(directory, name), "wb") as f:
                f.write(data)

    @classmethod
    def load(cls, directory):
        """The receipt that ``save`` (or ``teeserve predict --receipt``) wrote to ``directory``."""
        r, req, resp, doc, cert = (_bytes(_os.path.join(directory, n), n) for n in _RECEIPT_FILES)
        return cls(r, req, resp, Attestation(doc, cert))

    def __repr__(self):
        return (f"Receipt({len(self.receipt)} bytes, request {len(self.request)} bytes, "
                f"response {len(self.response)} bytes)")


def verify_receipt(receipt, request=None, response=None, attestation=None, *, policy, root=None,
                   collateral=None):
    """Verifies a receipt and returns its verdict as a dict, the JSON that ``teeserve receipt
    verify`` prints: ``model``, ``version``, ``model_sha256``, ``signature``, ``api`` (``grpc`` or
    ``rest``), ``method``, ``time``, ``counter``, ``request_sha256``, ``response_sha256``,
    ``tee``, ``tcb_status``.

    receipt: the receipt's bytes, or a Receipt (which brings its request, response and
        attestation).
    request, response: the exact bytes the receipt is about (bytes or paths).
    attestation: the Attestation that carries the receipt key (``channel.attestation``), or a
        (document, certificate) pair.
    policy: a dict with the keys of a teeserve policy file, or the path of one (TOML).
    root: the attestation root certificate (PEM bytes or path) instead of Intel's.
    collateral: a collateral bundle (bytes or path) instead of the one the document carries.

    Checks the document's quote and the policy as of the receipt's time (was the server
    admitted when it answered?), that the quote binds the document's receipt key, the receipt's
    signature under that key, that the request and response are the ones it names, and that
    the document lists the model file it names. Raises VerificationError naming the rule
    otherwise.
    """
    if isinstance(receipt, Receipt):
        request = receipt.request if request is None else request
        response = receipt.response if response is None else response
        attestation = receipt.attestation if attestation is None else attestation
        receipt = receipt.receipt
    if request is None or response is None or attestation is None:
        raise TypeError("verify_receipt needs the request, the response and the attestation")
    if not isinstance(attestation, Attestation):
        attestation = Attestation(*attestation)
    kind, text = _policy(policy)
    try:
        verdict = _native.verify_receipt(
            _bytes(receipt, "receipt"), _bytes(request, "request"), _bytes(response, "response"),
            attestation.document, attestation.certificate, kind, text,
            root_pem=None if root is None else _bytes(root, "root"),
            collateral=None if collateral is None else _bytes(collateral, "collateral"))
    except _native.Refusal as e:
        rule, detail, message = e.args
        raise VerificationError(message, rule, detail) from None
    return _json.loads(verdict)


def _split_target(target):
    """(host:port, host) of a gRPC target such as ``localhost:8500`` or ``dns:///host:8500``."""
    t = target
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(f"target {target!r} has no port")
        return t, host
    host, sep, port = t.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"target {target!r} is not HOST:PORT")
    return t, host


def _attestation_of_receipt(forwarder, receipt):
    """The Attestation a receipt of ``forwarder``'s server names: the document held since the
    forwarder was made, or a later one (fetched by its SHA-256 and admitted)."""
    try:
        doc = forwarder.document_of_receipt(receipt)
    except _native.Refusal as e:
        rule, detail, message = e.args
        raise ReceiptDocumentError(
            f"the attestation document this receipt names: {message}", rule, detail) from None
    except (ValueError, OSError) as e:
        raise ReceiptDocumentError(
            f"the attestation document this receipt names: {e}", "fetch", str(e)) from None
    return Attestation(doc, forwarder.certificate)


def _attest(addr, server_name, protocol, root_certificates, policy, root, collateral,
            private_key, certificate_chain, receipts=False, tcp=False):
    kind, text = _policy(policy)
    try:
        return _native.attest(
            addr, server_name, protocol, kind, text,
            ca_pem=None if root_certificates is None else _bytes(root_certificates, "root_certificates"),
            root_pem=None if root is None else _bytes(root, "root"),
            collateral=None if collateral is None else _bytes(collateral, "collateral"),
            certificate_chain=None if certificate_chain is None else _bytes(certificate_chain, "certificate_chain"),
            private_key=None if private_key is None else _bytes(private_key, "private_key"),
            receipts=receipts,
            tcp=tcp,
        )
    except _native.Refusal as e:
        rule, detail, message = e.args
        raise AttestationError(
            f"refusing to send data to {addr}: {message}", rule, detail) from None


def attested_channel(target, *, root_certificates, policy, root=None, collateral=None,
                     private_key=None, certificate_chain=None, options=None, receipts=False):
    """A ``grpc.Channel`` to ``target`` (``HOST:PORT``) whose server's TLS key was attested.

    Before returning, fetches the server's attestation document (``/v1/attestation``, quoted
    over a fresh nonce when the TLS key is one the host gave), verifies it, checks that it binds the key of the TLS certificate that
    the server presented, and appraises it with ``policy`` (a dict with the keys of a teeserve
    policy file, or the path of one). Raises AttestationError otherwise, before any request.

    root_certificates: the CA (PEM bytes) the server's certificate must chain to, as for
        ``grpc.ssl_channel_credentials``; None lets the attestation alone decide.
    root: the attestation root certificate (PEM bytes or path) instead of Intel's.
    collateral: a collateral bundle (bytes or path) instead of the one the server publishes.
    private_key, certificate_chain: PEM bytes of a client identity, for mutual TLS.
    options: gRPC channel options; ``grpc.ssl_target_name_override`` names the server.
    receipts: ask for a receipt of every call (metadata ``x-teeserve-receipt: 1``); the server
        must sign receipts (its document carries a receipt key), else AttestationError.
        ``channel.last_receipt()`` is then the Receipt of the last unary call (all of TF
        Serving's methods are unary) that this thread made and that completed, with the
        request and response messages as the channel sent and received them; pass it to
        verify_receipt. ``channel.attestation`` is the document the receipts name.

    Every connection the channel makes (reconnects included) must present the attested key:
    a server swapped in later, even with a certificate from the same CA, is refused at the
    handshake, and the call fails with UNAVAILABLE saying why. ``close()`` stops the forwarder.
    """
    from . import _grpc

    return _grpc.channel(target, root_certificates=root_certificates, policy=policy, root=root,
                         collateral=collateral, private_key=private_key,
                         certificate_chain=certificate_chain, options=options, receipts=receipts)


def attested_session(url, *, root_certificates, policy, root=None, collateral=None,
                     private_key=None, certificate_chain=None, receipts=False):
    """A ``requests.Session`` for the REST API at ``url`` (``https://HOST:PORT``) whose server's
    TLS key was attested, with the same check and arguments as attested_channel.

    The session talks only to that origin (any other URL, redirects included, is refused) and
    only to the attested key: a server swapped in later is refused at the handshake and the
    request raises ``requests.exceptions.SSLError`` saying why. ``close()`` stops the forwarder.

    receipts: ask for a receipt of every request (header ``X-Teeserve-Receipt: 1``), as for
    attested_channel; ``session.last_receipt()`` is then the Receipt of the last response this
    thread got, with the request body as sent and the response body as received.
    """
    from . import _rest

    return _rest.session(url, root_certificates=root_certificates, policy=policy,
                         root=root, collateral=collateral, private_key=private_key,
                         certificate_chain=certificate_chain, receipts=receipts)


class AttestedEndpoint:
    """A local address that carries every connection to an attested server, each pinned to the
    attested key: for clients that take only an address, such as Triton's ``tritonclient`` and
    KServe's ``InferenceGRPCClient`` / ``InferenceRESTClient`` (the Open Inference Protocol).

    ``url``: what to give the client: ``127.0.0.1:PORT`` (``transport="tcp"``, the default: a
    loopback port that admits only this process's own connections), or ``unix:PATH`` for gRPC
    and ``None`` for HTTP with ``socket_path`` set (``transport="unix"``: a socket in a private
    directory, for ``httpx.AsyncHTTPTransport(uds=...)``). ``channel_args``: gRPC channel options
    a ``unix:`` address needs (``grpc.default_authority``: the server's address; gRPC would
    send the socket's path, which HTTP/2 servers refuse). ``headers``: the headers every request
    must carry when the policy pins model files (give them to the client's calls); empty
    otherwise. ``verdict`` and ``document``: as for attested_channel. ``close()`` (or leaving a
    ``with`` block) stops the forwarder.
    """

    def __init__(self, forwarder, protocol, tcp, addr):
        self._fwd = forwarder
        self.protocol = protocol
        self.verdict = _json.loads(forwarder.verdict_json)
        self.document = _json.loads(forwarder.document_json)
        self.headers = {"x-teeserve-accept-sha256": forwarder.accept_header} if forwarder.accept_header else {}
        self.channel_args = []
        if tcp:
            self.url, self.socket_path = forwarder.tcp_address, None
        elif protocol == "grpc":
            self.url, self.socket_path = "unix:" + forwarder.socket_path, forwarder.socket_path
            self.channel_args = [("grpc.default_authority", addr)]
        else:
            self.url, self.socket_path = None, forwarder.socket_path

    def last_error(self):
        """Why the last connection to the server was refused or failed, if one was."""
        return self._fwd.last_error()

    @property
    def closed(self):
        return self._fwd.closed

    def close(self):
        self._fwd.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"AttestedEndpoint({self.protocol}, url={self.url!r}, closed={self.closed})"


def attested_endpoint(target, *, protocol, root_certificates, policy, root=None, collateral=None,
                      private_key=None, certificate_chain=None, server_name=None, transport=None,
                      model_pin=None):
    """An AttestedEndpoint for the server at ``target`` (``HOST:PORT``, or ``https://HOST:PORT``
    for HTTP), after the same check as attested_channel, with the same arguments; raises
    AttestationError before anything but a nonce reaches the server when the check fails.

    protocol: ``"grpc"`` (the server's gRPC port) or ``"http"`` (its REST port, HTTP/1.1).
    transport: ``"tcp"`` (default: a loopback port that admits only this process's own
        connections) or ``"unix"`` (a socket in a private directory).
    server_name: the name the server's certificate must carry (default: the target's host).
    model_pin: when the policy pins model files (``models = {...}``), the forwarder cannot add
        the pin to the client's requests (it carries their bytes, encrypted): pass
        ``model_pin="caller"`` to say that every call will send ``ep.headers``. Without it such
        a policy raises ValueError, so that no request goes out without the pin by mistake.

    Every connection the client opens is carried over a new TLS connection that must present
    the attested key; a server swapped in later is refused at the handshake and the client's
    call fails (gRPC ``UNAVAILABLE``, HTTP 502), saying why.
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol {protocol!r} is neither 'grpc' nor 'http'")
    if transport not in (None, "tcp", "unix"):
        raise ValueError(f"transport {transport!r} is neither 'tcp' nor 'unix'")
    t = target
    if protocol == "http" and "://" in t:
        if not t.startswith("https://"):
            raise ValueError(f"target {target!r} is not https://HOST:PORT")
        t = t[len("https://"):].rstrip("/")
    addr, host = _split_target(t)
    if model_pin not in (None, "caller"):
        raise ValueError(f"model_pin {model_pin!r} is neither None nor 'caller'")
    tcp = transport != "unix"
    fwd = _attest(addr, server_name or host, "grpc" if protocol == "grpc" else "http1",
                  root_certificates, policy, root, collateral, private_key, certificate_chain,
                  tcp=tcp)
    if fwd.accept_header and model_pin != "caller":
        fwd.close()
        raise ValueError(
            "the policy pins model files, and an endpoint cannot add the pin to the client's "
            "requests: pass model_pin=\"caller\" and send ep.headers with every call, or use "
            "attested_channel / attested_session, which add it")
    return AttestedEndpoint(fwd, protocol, tcp, addr)
