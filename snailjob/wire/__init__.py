"""Wire layer: the gRPC envelope, the JSON payload models and their codes.

Nothing here does I/O; the transport module moves these over gRPC.
"""

from snailjob.wire import enums, models
from snailjob.wire.codec import BodyError, decode_body, decode_data, dumps, encode_body

__all__ = ["BodyError", "decode_body", "decode_data", "dumps", "encode_body", "enums", "models"]
