# Type stub of the compiled twin built from ext/_sse_c.pyx; mirrors _sse_py.py.
from typing import final

__all__ = ("SSEDecoder",)

@final
class SSEDecoder:
    def __init__(self) -> None: ...
    def feed(self, chunk: bytes) -> list[bytes]: ...
    def flush(self) -> list[bytes]: ...
