from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metadata(_message.Message):
    __slots__ = ("uri", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URI_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, uri: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GrpcSnailJobRequest(_message.Message):
    __slots__ = ("reqId", "metadata", "body")
    REQID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    reqId: int
    metadata: Metadata
    body: str
    def __init__(self, reqId: _Optional[int] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., body: _Optional[str] = ...) -> None: ...

class GrpcResult(_message.Message):
    __slots__ = ("reqId", "status", "message", "data")
    REQID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    reqId: int
    status: int
    message: str
    data: str
    def __init__(self, reqId: _Optional[int] = ..., status: _Optional[int] = ..., message: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...
