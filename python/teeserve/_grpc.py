"""attested_channel: a grpc.Channel over the extension's pinning forwarder."""

import collections
import json
import threading
import weakref

import grpc

from . import Attestation, Receipt, _attest, _attestation_of_receipt, _split_target

# Every call carries the policy's model pins, so that the attested server answers from no
# other model file (teeserve_ratls::document::ACCEPT_HEADER).
_ACCEPT = "x-teeserve-accept-sha256"
# A call that asks for a receipt, and the trailer that brings it (binary metadata).
_RECEIPT = "x-teeserve-receipt"
_RECEIPT_TRAILER = "x-teeserve-receipt-bin"


class _CallDetails(
        collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the channel's metadata (the model pins, the request for a receipt) to every call."""

    def __init__(self, pairs):
        self._pairs = pairs
        self._keys = {k for k, _ in pairs}

    def _details(self, d):
        metadata = [(k, v) for k, v in (d.metadata or []) if k not in self._keys]
        metadata.extend(self._pairs)
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


def _receipt_of(call):
    """The receipt in a finished call's trailers, or None."""
    for k, v in call.trailing_metadata() or ():
        if k == _RECEIPT_TRAILER:
            return bytes(v)
    return None


class _Recorded(grpc.UnaryUnaryMultiCallable):
    """A unary method whose calls keep their receipts.

    The call itself carries bytes: this serializes the request and deserializes the response
    around it, so the bytes kept are the very ones the channel sent and received (a message
    serialized again need not give the same bytes: map order, unknown fields).
    """

    def __init__(self, owner, raw, serializer, deserializer):
        self._owner = owner
        self._raw = raw
        self._serialize = serializer or (lambda b: b)
        self._deserialize = deserializer or (lambda b: b)

    def __call__(self, request, timeout=None, metadata=None, credentials=None,
                 wait_for_ready=None, compression=None):
        response, _ = self.with_call(request, timeout, metadata, credentials, wait_for_ready,
                                     compression)
        return response

    def with_call(self, request, timeout=None, metadata=None, credentials=None,
                  wait_for_ready=None, compression=None):
        self._owner._record(None)
        sent = self._serialize(request)
        got, call = self._raw.with_call(sent, timeout=timeout, metadata=metadata,
                                        credentials=credentials, wait_for_ready=wait_for_ready,
                                        compression=compression)
        self._owner._record_call(call, sent, got)
        return self._deserialize(got), call

    def future(self, request, timeout=None, metadata=None, credentials=None,
               wait_for_ready=None, compression=None):
        self._owner._record(None)
        sent = self._serialize(request)
        inner = self._raw.future(sent, timeout=timeout, metadata=metadata,
                                 credentials=credentials, wait_for_ready=wait_for_ready,
                                 compression=compression)
        return _RecordedFuture(inner, self._owner, sent, self._deserialize)


class _RecordedFuture(grpc.Future, grpc.Call):
    """The future of a recorded call: its result is deserialized here, and the receipt is
    recorded for the thread that takes the result."""

    def __init__(self, inner, owner, sent, deserialize):
        self._inner = inner
        self._owner = owner
        self._sent = sent
        self._deserialize = deserialize
        self._response = None
        self._lock = threading.Lock()

    def result(self, timeout=None):
        got = self._inner.result(timeout)
        self._owner._record_call(self._inner, self._sent, got)
        with self._lock:
            if self._response is None:
                self._response = (self._deserialize(got),)
            return self._response[0]

    def add_done_callback(self, fn):
        self._inner.add_done_callback(lambda _: fn(self))

    def cancel(self):
        return self._inner.cancel()

    def cancelled(self):
        return self._inner.cancelled()

    def running(self):
        return self._inner.running()

    def done(self):
        return self._inner.done()

    def exception(self, timeout=None):
        return self._inner.exception(timeout)

    def traceback(self, timeout=None):
        return self._inner.traceback(timeout)

    def is_active(self):
        return self._inner.is_active()

    def time_remaining(self):
        return self._inner.time_remaining()

    def add_callback(self, callback):
        return self._inner.add_callback(callback)

    def initial_metadata(self):
        return self._inner.initial_metadata()

    def trailing_metadata(self):
        return self._inner.trailing_metadata()

    def code(self):
        return self._inner.code()

    def details(self):
        return self._inner.details()


class AttestedChannel(grpc.Channel):
    """A grpc.Channel whose every connection goes to the attested TLS key.

    ``verdict`` and ``document`` are what the attestation check found; ``attestation`` is the
    document (JSON bytes) with the certificate it binds, which receipts are verified against.
    With receipts, ``last_receipt()`` is the Receipt of this thread's last unary call.
    """

    def __init__(self, channel, forwarder, receipts=False):
        self._channel = channel
        self._forwarder = forwarder
        self.verdict = json.loads(forwarder.verdict_json)
        self.document = json.loads(forwarder.document_json)
        self.attestation = Attestation(forwarder.attestation_document, forwarder.certificate)
        self.receipts = receipts
        self._last = threading.local()
        # A channel that is dropped without close() stops its forwarder when collected.
        weakref.finalize(self, forwarder.close)

    def last_receipt(self):
        """The Receipt of the last unary call this thread made on the channel, or None when
        that call failed or the channel asks for no receipts. When the served models changed
        after the channel was made, the receipt names a later attestation document, which is
        fetched (by its SHA-256) and admitted here; ReceiptDocumentError when that fails."""
        r = getattr(self._last, "receipt", None)
        if isinstance(r, tuple):
            receipt, sent, got = r
            r = Receipt(receipt, sent, got, _attestation_of_receipt(self._forwarder, receipt))
            self._last.receipt = r
        return r

    def _record(self, receipt):
        self._last.receipt = receipt

    def _record_call(self, call, sent, got):
        r = _receipt_of(call)
        # Its document is found when the receipt is asked for (last_receipt), not in the call.
        self._record(None if r is None else (r, sent, got))


    def subscribe(self, callback, try_to_connect=False):
        return self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        return self._channel.unsubscribe(callback)

    def unary_unary(self, method, request_serializer=None, response_deserializer=None,
                    *args, **kwargs):
        if not self.receipts:
            return self._channel.unary_unary(method, request_serializer, response_deserializer,
                                             *args, **kwargs)
        raw = self._channel.unary_unary(method, None, None, *args, **kwargs)
        return _Recorded(self, raw, request_serializer, response_deserializer)

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
            certificate_chain, options, receipts):
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
                  private_key, certificate_chain, receipts=receipts)
    metadata = []
    if fwd.accept_header:
        metadata.append((_ACCEPT, fwd.accept_header))
    if receipts:
        metadata.append((_RECEIPT, "1"))
    try:
        inner = grpc.insecure_channel("unix:" + fwd.socket_path, options=opts)
        if metadata:
            inner = grpc.intercept_channel(inner, _Metadata(metadata))
    except BaseException:
        fwd.close()
        raise
    return AttestedChannel(inner, fwd, receipts)
