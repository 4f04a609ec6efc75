"""attested_channel: a grpc.Channel over the extension's pinning forwarder."""

import collections
import json
import weakref

import grpc

from . import _attest, _split_target

# Every call carries the policy's model pins, so that the attested server answers from no
# other model file (teeserve_ratls::document::ACCEPT_HEADER).
_ACCEPT = "x-teeserve-accept-sha256"


class _CallDetails(
        collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _Pin(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
           grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the pin to every call's metadata."""

    def __init__(self, value):
        self._value = value

    def _details(self, d):
        metadata = [(k, v) for k, v in (d.metadata or []) if k != _ACCEPT]
        metadata.append((_ACCEPT, self._value))
        return _CallDetails(d.method, d.timeout, metadata, d.credentials,
                            getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class AttestedChannel(grpc.Channel):
    """A grpc.Channel whose every connection goes to the attested TLS key.

    ``verdict`` and ``document`` are what the attestation check found.
    """

    def __init__(self, channel, forwarder):
        self._channel = channel
        self._forwarder = forwarder
        self.verdict = json.loads(forwarder.verdict_json)
        self.document = json.loads(forwarder.document_json)
        # A channel that is dropped without close() stops its forwarder when collected.
        weakref.finalize(self, forwarder.close)

    def subscribe(self, callback, try_to_connect=False):
        return self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        return self._channel.unsubscribe(callback)

    def unary_unary(self, method, *args, **kwargs):
        return self._channel.unary_unary(method, *args, **kwargs)

    def unary_stream(self, method, *args, **kwargs):
        return self._channel.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method, *args, **kwargs):
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method, *args, **kwargs):
        return self._channel.stream_stream(method, *args, **kwargs)

    def close(self):
        try:
            self._channel.close()
        finally:
            self._forwarder.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
        return False


def channel(target, *, root_certificates, policy, root, collateral, private_key,
            certificate_chain, options):
    addr, host = _split_target(target)
    opts = []
    server_name = host
    has_authority = False
    for k, v in options or []:
        if k == "grpc.ssl_target_name_override":
            # The forwarder checks the name; the local socket has none.
            server_name = v
            continue
        has_authority = has_authority or k == "grpc.default_authority"
        opts.append((k, v))
    if not has_authority:
        opts.append(("grpc.default_authority", addr))
    fwd = _attest(addr, server_name, "grpc", root_certificates, policy, root, collateral,
                  private_key, certificate_chain)
    try:
        inner = grpc.insecure_channel("unix:" + fwd.socket_path, options=opts)
        if fwd.accept_header:
            inner = grpc.intercept_channel(inner, _Pin(fwd.accept_header))
    except BaseException:
        fwd.close()
        raise
    return AttestedChannel(inner, fwd)
