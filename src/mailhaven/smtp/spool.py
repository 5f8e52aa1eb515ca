"""The content of a port-25 message held until the inbound checks have read it.

A message up to ``max_size`` stays in memory as the pieces DATA delivered, joined once when
the checks ask for it; the checks read it from a ``BytesIO`` that shares that one ``bytes``
(reading it whole from its start copies nothing). A larger one goes to a temporary file,
as ``tempfile.SpooledTemporaryFile`` did. That class held a 100 KB message in a growing
``BytesIO`` and every read of it was a copy: the checks read it three times (the header,
GTUBE, the rest for the blob), 100-150 us of a message's CPU in all (issue 18).
"""

from __future__ import annotations

import io
import tempfile
from typing import BinaryIO

from ..pieces import Pieces


class ContentSpool:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        """Bytes written."""
        self._pieces: Pieces | None = Pieces()
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._pieces is not None:
            if self.size + len(data) <= self.max_size:
                self._pieces.append(data)
                self.size += len(data)
                return
            self._file = tempfile.TemporaryFile()      # noqa: SIM115 - closed by close()
            self._file.writelines(self._pieces.parts())
            self._pieces = None
        assert self._file is not None
        self._file.write(data)
        self.size += len(data)

    def reader(self) -> BinaryIO:
        """The content from its start, to read (and seek in) until :meth:`close`."""
        if self._pieces is not None:
            return io.BytesIO(self._pieces.join())
        assert self._file is not None
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._pieces = None
        f, self._file = self._file, None
        if f is not None:
            f.close()
