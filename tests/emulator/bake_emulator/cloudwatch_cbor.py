"""Smithy RPC v2 CBOR protocol for CloudWatch, in front of moto's CloudWatch backend.

The AWS SDKs generated from CloudWatch's current Smithy model (aws-sdk-cloudwatch >= 1.1xx
for Rust, among others) send every call as::

    POST /service/GraniteServiceVersion20100801/operation/<Operation>
    smithy-protocol: rpc-v2-cbor
    Content-Type: application/cbor        (only when there is an input body)
    Accept: application/cbor
    x-amzn-query-mode: true               (CloudWatch is @awsQueryCompatible)

moto 5.2.5 answers such requests with 404. This module puts a WSGI layer in front of moto's
application that speaks the protocol (https://smithy.io/2.0/additional-specs/protocols/
smithy-rpc-v2.html) and hands the decoded input to moto's own ``CloudWatchResponse`` handler
methods, so every behaviour of moto's CloudWatch backend (statistics, metric math, alarms) is
reused as is; only the wire format is new:

* request: the CBOR body (empty body = empty input) is decoded and walked along the operation's
  input shape in the service model (timestamps arrive as CBOR tag 1 epoch seconds and become
  naive UTC datetimes, as moto stores them); required members are checked
  (``MissingParameter``);
* response: 200 with a CBOR map of the output shape (doubles as CBOR floats, integers as CBOR
  integers, timestamps as tag 1 epoch seconds with millisecond precision, blobs as byte
  strings); operations without an output shape get an empty body and no ``Content-Type``;
* errors: a CBOR map ``{"__type": "com.amazonaws.cloudwatch#<ErrorShape>", "message": ...}``,
  status 400 for client errors and 500 for server faults (the protocol's rule), and because
  CloudWatch is @awsQueryCompatible the header ``x-amzn-query-error: <QueryCode>;Sender|Receiver``
  that the SDKs use to name the error (``ResourceNotFound``, ``InvalidParameterValue``, ...);
* every answer carries ``smithy-protocol: rpc-v2-cbor`` and ``x-amzn-requestid``.

Account and region are resolved the way moto resolves them for every other protocol: the region
from the SigV4 ``Authorization`` credential scope (default us-east-1), the account from the access
key (moto's default account for any ordinary key).

Everything that is not a CBOR call to CloudWatch passes through to moto unchanged.
"""

from __future__ import annotations

import gzip
import html
import io
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import cbor2
from botocore.model import OperationNotFoundError
from werkzeug.datastructures import EnvironHeaders

from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.parse import BaseJSONParser
from moto.core.request import Request
from moto.core.responses import ActionContext, ActionResult
from moto.core.serialize import BaseJSONSerializer
from moto.core.utils import camelcase_to_underscores, get_service_model

#: The service shape of CloudWatch in its Smithy model, as it appears in the URL.
SERVICE_NAME = "GraniteServiceVersion20100801"
#: Smithy namespace of CloudWatch's shapes, used for the absolute shape IDs in ``__type``.
NAMESPACE = "com.amazonaws.cloudwatch"
#: The spec lets servers accept the absolute shape ID with ``#`` replaced by ``.``.
SERVICE_NAMES = {SERVICE_NAME, f"{NAMESPACE}.{SERVICE_NAME}"}

PROTOCOL_HEADER = "smithy-protocol"
PROTOCOL = "rpc-v2-cbor"
CONTENT_TYPE = "application/cbor"

# "{prefix?}/service/{serviceName}/operation/{operationName}": only the last four segments route.
_PATH = re.compile(r"^(?:/.*)?/service/(?P<service>[^/]+)/operation/(?P<operation>[^/]+)/?$")


def _service_model():
    return get_service_model("cloudwatch")


# --------------------------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the protocol layer rejects before moto sees it."""

    def __init__(self, status, shape, query_code, message, sender=True):
        super().__init__(message)
        self.status = status
        self.shape = shape
        self.query_code = query_code
        self.message = message
        self.sender = sender


def _as_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _to_datetime(value: Any) -> datetime:
    """CBOR tag 1 (decoded by cbor2 to an aware datetime), or a bare epoch number."""
    if isinstance(value, cbor2.CBORTag) and value.tag == 1:
        value = value.value
    if isinstance(value, datetime):
        return _as_naive_utc(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)
    raise ValueError(f"expected a timestamp (CBOR tag 1), got {value!r}")


class CborRequestParser(BaseJSONParser):
    """Walks a decoded CBOR document along the operation's input shape.

    Produces the same structure moto's own JSON/query parsers produce (member names as keys,
    naive UTC datetimes, floats, ints), and collects missing required members on the way.
    """

    def __init__(self, operation_model):
        super().__init__(operation_model, map_type=dict)
        self.missing: list[str] = []
        self._path: list[str] = []

    def parse_document(self, document: Any) -> dict[str, Any]:
        shape = self.operation_model.input_shape
        if shape is None:
            return {}
        if not isinstance(document, dict):
            raise RequestError(
                400,
                "SerializationException",
                "SerializationException",
                "the request body must be a CBOR map (the operation's input structure)",
            )
        return self._parse_shape(shape, document)

    def _parse_structure(self, shape, value):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{'.'.join(self._path) or 'input'}: expected a map")
        for name in shape.required_members:
            if value.get(name) is None:
                self.missing.append(".".join([*self._path, name]))
        parsed = self.MAP_TYPE()
        for name, member in shape.members.items():
            raw = value.get(name)
            if raw is None:
                continue
            self._path.append(name)
            try:
                parsed[name] = self._parse_shape(member, raw)
            finally:
                self._path.pop()
        return parsed

    def _parse_list(self, shape, node):
        if not isinstance(node, list):
            raise ValueError(f"{'.'.join(self._path)}: expected a list")
        parsed = []
        for i, item in enumerate(node, start=1):
            self._path.append(f"member.{i}")
            try:
                parsed.append(self._parse_shape(shape.member, item))
            finally:
                self._path.pop()
        return parsed

    def _parse_timestamp(self, shape, value):
        return _to_datetime(value)

    def _parse_blob(self, shape, value):
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise ValueError(f"{'.'.join(self._path)}: expected a byte string")

    def _parse_boolean(self, shape, value):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{'.'.join(self._path)}: expected a boolean")

    def _parse_string(self, shape, value):
        if isinstance(value, str):
            return value
        raise ValueError(f"{'.'.join(self._path)}: expected a text string")


# --------------------------------------------------------------------------------------------
# Response encoding
# --------------------------------------------------------------------------------------------


def _epoch_tag(value: Any) -> cbor2.CBORTag:
    """Tag 1 epoch seconds, millisecond precision; an integer when there is no fraction."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        seconds = round(value.timestamp(), 3)
    else:
        seconds = round(float(value), 3)
    if seconds == int(seconds):
        return cbor2.CBORTag(1, int(seconds))
    return cbor2.CBORTag(1, seconds)


def _is_sender_fault(shape) -> bool:
    error = shape.metadata.get("error", {})
    if "senderFault" in error:
        return bool(error["senderFault"])
    return int(error.get("httpStatusCode", 400)) < 500


class RpcV2CborSerializer(BaseJSONSerializer):
    """moto's JSON serializer (same shape walk, same attribute picking), CBOR on the wire."""

    CONTENT_TYPE = CONTENT_TYPE

    def _get_protocol_specific_content_type(self) -> str:
        return CONTENT_TYPE

    def _serialize_body(self, body):
        return cbor2.dumps(body)

    def _serialized_result_to_response(self, resp, result, shape, serialized_result):
        if self.operation_model.output_shape is None:
            # Unit output: no body and no Content-Type.
            resp["body"] = b""
            return resp
        resp["body"] = self._serialize_body(serialized_result)
        resp["headers"]["Content-Type"] = CONTENT_TYPE
        return resp

    def _serialize_error_metadata(self, serialized, error, shape):
        serialized["__type"] = f"{NAMESPACE}#{shape.name}"
        message = getattr(error, "message", None) or str(error)
        if message:
            serialized["message"] = message

    def _serialized_error_to_response(self, resp, error, shape, serialized_error):
        sender = _is_sender_fault(shape)
        resp["body"] = self._serialize_body(serialized_error)
        resp["status_code"] = 400 if sender else 500
        resp["headers"]["Content-Type"] = CONTENT_TYPE
        fault = "Sender" if sender else "Receiver"
        resp["headers"]["x-amzn-query-error"] = f"{shape.error_code};{fault}"
        return resp

    def _serialize_type_timestamp(self, serialized, value, shape, key):
        self._default_serialize(serialized, _epoch_tag(value), shape, key)

    def _serialize_type_blob(self, serialized, value, shape, key):
        if isinstance(value, str):
            value = value.encode("utf-8")
        self._default_serialize(serialized, bytes(value), shape, key)

    def _serialize_type_boolean(self, serialized, value, shape, key):
        if isinstance(value, str):
            value = value.lower() == "true"
        self._default_serialize(serialized, bool(value), shape, key)

    def _serialize_type_integer(self, serialized, value, shape, key):
        self._default_serialize(serialized, int(float(value)), shape, key)

    _serialize_type_long = _serialize_type_integer

    def _serialize_type_float(self, serialized, value, shape, key):
        self._default_serialize(serialized, float(value), shape, key)

    _serialize_type_double = _serialize_type_float


# --------------------------------------------------------------------------------------------
# moto's CloudWatch handlers, fed from CBOR
# --------------------------------------------------------------------------------------------


class _CborRequest(Request):
    from_wsgi_server = True


class CborCloudWatchResponse(CloudWatchResponse):
    """moto's CloudWatch handler methods with the operation and input already decoded."""

    # The body is CBOR, not UTF-8 text: keep moto from decoding or form-parsing it.
    use_raw_body = True

    def __init__(self, operation: str, params: dict[str, Any]) -> None:
        super().__init__()
        self._operation = operation
        self._cbor_params = params

    def _get_action(self) -> str:
        return self._operation

    def parse_parameters(self, request) -> None:
        self.params = self._cbor_params

    def serialized(self, action_result: ActionResult):
        service_model = _service_model()
        operation_model = service_model.operation_model(self._operation)
        context = ActionContext(service_model, operation_model, RpcV2CborSerializer, self)
        status, headers, body = action_result.execute_result(context)
        headers.update(self.response_headers)
        return status, headers, body


# --------------------------------------------------------------------------------------------
# WSGI
# --------------------------------------------------------------------------------------------


def _error_response(status, shape, query_code, message, sender=True):
    body = cbor2.dumps({"__type": f"{NAMESPACE}#{shape}", "message": message})
    headers = {
        "Content-Type": CONTENT_TYPE,
        "x-amzn-query-error": f"{query_code};{'Sender' if sender else 'Receiver'}",
    }
    return status, headers, body


def _read_body(environ) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if length > 0:
        return stream.read(length)
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" or environ.get(
        "wsgi.input_terminated"
    ):
        return stream.read()
    return b""


def handle(environ, operation: str):
    """Answer one CBOR call: ``(status, headers, body)``."""
    headers_in = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if headers_in.get(PROTOCOL_HEADER) != PROTOCOL:
        return _error_response(
            400,
            "SerializationException",
            "SerializationException",
            f"rpcv2Cbor requests must carry the header '{PROTOCOL_HEADER}: {PROTOCOL}'",
        )
    if "x-amz-target" in headers_in or "x-amzn-target" in headers_in:
        return _error_response(
            400,
            "SerializationException",
            "SerializationException",
            "rpcv2Cbor requests must not carry X-Amz-Target or X-Amzn-Target",
        )

    service_model = _service_model()
    try:
        operation_model = service_model.operation_model(operation)
    except OperationNotFoundError:
        return _error_response(
            404,
            "UnknownOperationException",
            "InvalidAction",
            f"CloudWatch has no operation named {operation!r}",
        )
    if not hasattr(CloudWatchResponse, camelcase_to_underscores(operation)):
        return _error_response(
            501,
            "UnknownOperationException",
            "InvalidAction",
            f"the emulator does not implement CloudWatch {operation}",
        )

    body = received = _read_body(environ)
    if environ.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except OSError as err:
            return _error_response(
                400, "SerializationException", "SerializationException", f"bad gzip body: {err}"
            )
    content_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if body and content_type != CONTENT_TYPE:
        return _error_response(
            400,
            "SerializationException",
            "SerializationException",
            f"Content-Type must be {CONTENT_TYPE} for a request with a body, got {content_type!r}",
        )

    parser = CborRequestParser(operation_model)
    try:
        document = cbor2.loads(body) if body else {}
        params = parser.parse_document(document)
    except RequestError as err:
        return _error_response(err.status, err.shape, err.query_code, err.message, err.sender)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as err:
        return _error_response(
            400, "SerializationException", "SerializationException", f"malformed CBOR input: {err}"
        )
    if parser.missing:
        return _error_response(
            400,
            "MissingRequiredParameterException",
            "MissingParameter",
            f"The parameter {parser.missing[0]} is required.",
        )

    # moto reads the (already decoded) request through its own Request type; hand it a clean
    # environ so nothing tries to decompress or form-parse the CBOR again.
    inner = dict(environ)
    inner.pop("HTTP_CONTENT_ENCODING", None)
    inner["wsgi.input"] = io.BytesIO(body)
    inner["CONTENT_LENGTH"] = str(len(body))
    request = _CborRequest(inner)

    handler = CborCloudWatchResponse(operation, params)
    # The signature covers the request as sent (a gzip body, its Content-Encoding): IAM
    # enforcement (iam.py) checks it against these, not against the decoded request.
    handler.signed_body = received
    handler.signed_headers = EnvironHeaders(dict(environ))
    try:
        handler.setup_class(request)
        status, headers, out = handler.call_action()
    except Exception as err:  # noqa: BLE001 - any backend failure is a server fault to the client
        return _error_response(
            500,
            "InternalServiceFault",
            "InternalServiceError",
            f"{type(err).__name__}: {err}",
            sender=False,
        )
    headers = {k: str(v) for k, v in dict(headers).items() if k.lower() != "status"}
    text = out.decode("utf-8", "replace") if isinstance(out, bytes) else out
    if int(status) >= 400 and text.lstrip().startswith("<"):
        # moto's authentication/authorization errors (AccessDenied, SignatureDoesNotMatch, ...)
        # come as query-protocol XML: answer them in this protocol.
        code = re.search(r"<Code>([^<]*)</Code>", text)
        message = re.search(r"<Message>([^<]*)</Message>", text)
        code = code.group(1) if code else "InternalFailure"
        return _error_response(
            int(status), code, code, html.unescape(message.group(1)) if message else code, int(status) < 500
        )
    if isinstance(out, str):
        out = out.encode("utf-8")
    return int(status), headers, out


def wrap(app):
    """Return a WSGI app that answers CBOR CloudWatch calls and passes the rest to ``app``."""

    def cbor_app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        match = _PATH.match(path) if environ.get("REQUEST_METHOD") == "POST" else None
        if match is None or match.group("service") not in SERVICE_NAMES:
            return app(environ, start_response)
        status, headers, body = handle(environ, match.group("operation"))
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "server")}
        out = [(k, v) for k, v in headers.items()]
        out.append((PROTOCOL_HEADER.title(), PROTOCOL))
        if not any(k.lower() == "x-amzn-requestid" for k, _ in out):
            out.append(("x-amzn-RequestId", str(uuid.uuid4())))
        out.append(("Content-Length", str(len(body))))
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error", 501: "Not Implemented"}
        start_response(f"{status} {reason.get(status, 'Status')}", out)
        return [body]

    return cbor_app
