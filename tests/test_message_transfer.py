"""message/transfer.py: Content-Transfer-Encoding removed a piece at a time gives the
same bytes as removing it from the whole content, for every split."""

from __future__ import annotations

import base64
import binascii
import random

import pytest

from mailhaven.message.transfer import Decoder, UnknownEncoding, decode

PAYLOAD = random.Random(5).randbytes(700) + b"\x00\xff" + "é ü\t end  \r\n".encode() * 3

SAMPLES = [
    ("base64", base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")),
    ("base64", base64.b64encode(PAYLOAD[:301])),                     # one line, "=" padded
    ("base64", b"QUJD\r\nR*EV\x00GRw==\r\ngarbage after the padding QUJD\r\n"),
    ("base64", b"QUJDRA"),                                           # unpadded, 2 left over
    ("base64", b"QUJDREU"),                                          # 3 left over
    ("base64", b"QUJDR"),                                            # a lone sixth of a byte
    ("quoted-printable", binascii.b2a_qp(PAYLOAD, istext=False)),   # CR and LF as =0D =0A
    ("quoted-printable", b"soft =\r\nbreak, blanks after it =  \r\nand trailing  \t\r\n=C3=A9=\r\n"),
    ("quoted-printable", b"lf only =\nline\nlast line no end =3D  "),
    ("7bit", b"as is\r\n\x00 bytes\r\n"),
    ("BINARY", b"\x00\x01\x02"),
]


@pytest.mark.parametrize(("encoding", "data"), SAMPLES)
def test_every_split_decodes_the_same(encoding: str, data: bytes) -> None:
    whole = decode(data, encoding)
    for cut in range(len(data) + 1):
        d = Decoder(encoding)
        assert d.feed(data[:cut]) + d.feed(data[cut:]) + d.end() == whole, cut
    rnd = random.Random(len(data))
    for _ in range(50):
        d = Decoder(encoding)
        out, pos = b"", 0
        while pos < len(data):
            step = rnd.randint(1, 9)
            out += d.feed(data[pos:pos + step])
            pos += step
        assert out + d.end() == whole


def test_decoded_bytes() -> None:
    assert decode(SAMPLES[0][1], "base64") == PAYLOAD
    assert decode(SAMPLES[1][1], "Base64") == PAYLOAD[:301]
    assert decode(SAMPLES[2][1], "base64") == b"ABCDEFG"
    assert decode(b"QUJDRA", "base64") == b"ABCD"
    assert decode(b"QUJDREU", "base64") == b"ABCDE"
    assert decode(b"QUJDR", "base64") == b"ABC"
    assert decode(SAMPLES[6][1], "quoted-printable") == PAYLOAD
    assert decode(SAMPLES[7][1], "quoted-printable") == "soft break, blanks after it and trailing\r\né".encode()
    assert decode(SAMPLES[8][1], "quoted-printable") == b"lf only line\nlast line no end ="


def test_unknown_encoding() -> None:
    with pytest.raises(UnknownEncoding):
        Decoder("x-uuencode")
