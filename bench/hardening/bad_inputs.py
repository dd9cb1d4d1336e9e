"""Scenario 3, bad input: seeded bad bodies sent to POST /api/predict with no other load.

The cases (BadInputs, heavy_inputs) are generated from one seed, so a run can be repeated
case for case; a crash is a 5xx, a connection error or an unhealthy server afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import random
import re
import struct
import time
import zlib

import httpx2
import numpy as np
from PIL import Image

from bench.hardening.processes import RSS_SAMPLE_SECONDS, RssSampler, log_size, tracebacks_in_log
from bench.hardening.report import say
from harness.app_process import AppProcess
from harness.bad_inputs import PNG_SIGNATURE, multipart_body, png_chunk, png_file
from harness.cassandra_node import CassandraNode
from harness.pictures import encoded, png_bytes

FUZZ_CLIENT_TIMEOUT_SECONDS = 120.0
RAW_RESPONSE_WAIT_SECONDS = 5.0
MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass
class BadInput:
    category: str
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)
    method: str = "POST"
    chunked: bool = False  # sent without Content-Length, in chunks
    raw_request: bytes | None = None  # sent as-is over a socket
    half_close: bool = False  # raw: shut our side after sending (a client that gives up mid-body)
    may_store: bool = False  # a decodable picture: a 200 with a stored row is a fair answer
    heavy: bool = False


@dataclasses.dataclass
class BadInputResult:
    case: BadInput
    status: int | None
    error: str | None
    seconds: float
    json_error: bool
    prediction_id: str | None = None


def blank_png(width: int, height: int, *, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A complete PNG of zeros, compressed row by row so no full-size image is ever held in memory."""
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
    rows_per_block = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts, remaining = [], height
    while remaining:
        rows = min(rows_per_block, remaining)
        parts.append(compressor.compress(row * rows))
        remaining -= rows
    parts.append(compressor.flush())
    return png_file(width, height, bit_depth=bit_depth, colour_type=colour_type, pixel_data=b"".join(parts))


def png_chunk_spans(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, start of data, end of data) of each chunk of a PNG."""
    spans, position = [], len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        spans.append((kind, position + 8, position + 8 + length))
        position += 12 + length
    return spans


class BadInputs:
    """Seeded generators of bad request bodies, one method per category."""

    def __init__(self, seed: int, pictures: list[tuple[Image.Image, int]]) -> None:
        self.random = random.Random(seed)
        self.pngs = [png_bytes(picture) for picture, _ in pictures]
        self.jpegs = [encoded(picture.convert("L"), "JPEG", quality=90) for picture, _ in pictures]
        self.pictures = [picture for picture, _ in pictures]

    def _content_type(self) -> dict:
        return {"Content-Type": self.random.choice(["image/png", "image/jpeg", "application/octet-stream"])}

    def _garbage(self, largest_power: int = 14) -> bytes:
        return self.random.randbytes(max(1, int(2 ** self.random.uniform(0, largest_power))))

    def _boundary(self) -> str:
        return "hardening" + self.random.randbytes(8).hex()

    # Not images at all.
    def empty(self) -> BadInput:
        return BadInput("empty", b"", self.random.choice([{}, self._content_type()]))

    def garbage(self) -> BadInput:
        return BadInput("garbage", self._garbage(), self._content_type())

    def unicode_text(self) -> BadInput:
        text = "".join(chr(self.random.choice([self.random.randrange(32, 127), self.random.randrange(0x80, 0x2FFF)]))
                       for _ in range(self.random.randrange(1, 400)))
        return BadInput("unicode-text", text.encode("utf-8", "surrogatepass"), {"Content-Type": "text/plain; charset=utf-8"})

    def magic_then_garbage(self) -> BadInput:
        magic = self.random.choice([PNG_SIGNATURE, b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                                    b"RIFF\x00\x00\x00\x00WEBP", b"\x00\x00\x01\x00", b"8BPS", b"%!PS-Adobe-3.0 EPSF-3.0\n"])
        return BadInput("magic-then-garbage", magic + self._garbage(12), self._content_type())

    def svg(self) -> BadInput:
        body = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
                b'<path d="M14 4 L14 24" stroke="black" stroke-width="3"/></svg>')
        return BadInput("svg", body, {"Content-Type": "image/svg+xml"})

    def eps(self) -> BadInput:
        body = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 14 4 moveto 14 24 lineto stroke\n%%EOF\n"
        return BadInput("eps", body, {"Content-Type": "application/postscript"})

    # Broken PNG and JPEG files.
    def truncated_png(self) -> BadInput:
        data = self.random.choice(self.pngs)
        idat = [span for span in png_chunk_spans(data) if span[0] == b"IDAT"][0]
        cut = self.random.randrange(1, idat[2] - 1)  # somewhere before the end of the image data
        return BadInput("truncated-png", data[:cut], {"Content-Type": "image/png"})

    def truncated_jpeg(self) -> BadInput:
        data = self.random.choice(self.jpegs)
        cut = self.random.randrange(2, int(len(data) * 0.9))
        return BadInput("truncated-jpeg", data[:cut], {"Content-Type": "image/jpeg"})

    def bad_crc_png(self) -> BadInput:
        data = bytearray(self.random.choice(self.pngs))
        data[len(PNG_SIGNATURE) + 8 + 13 + self.random.randrange(4)] ^= 0xFF  # a byte of IHDR's CRC
        return BadInput("bad-crc-png", bytes(data), {"Content-Type": "image/png"})

    def bit_flipped(self) -> BadInput:
        use_png = self.random.random() < 0.5
        data = bytearray(self.random.choice(self.pngs if use_png else self.jpegs))
        for _ in range(self.random.randrange(1, 16)):
            data[self.random.randrange(8 if use_png else 2, len(data))] ^= 1 << self.random.randrange(8)
        # Corrupted but possibly still decodable (JPEG is forgiving): storing a reading is fair.
        return BadInput("bit-flipped-" + ("png" if use_png else "jpeg"), bytes(data), self._content_type(), may_store=True)

    def huge_header_png(self) -> BadInput:
        """A small valid PNG whose header claims a huge size (CRC fixed so the header itself is well formed)."""
        data = self.random.choice(self.pngs)
        width = self.random.randrange(7000, 2**31 - 1)
        height = self.random.randrange(7000, 2**31 - 1)
        original = data[len(PNG_SIGNATURE) + 8:len(PNG_SIGNATURE) + 8 + 13]
        header = struct.pack(">II", width, height) + original[8:]
        rebuilt = PNG_SIGNATURE + png_chunk(b"IHDR", header) + data[len(PNG_SIGNATURE) + 25:]
        return BadInput("huge-header-png", rebuilt, {"Content-Type": "image/png"})

    def huge_header_jpeg(self) -> BadInput:
        """A small JPEG whose frame header (SOF0) claims up to 65535 x 65535 pixels."""
        data = bytearray(self.random.choice(self.jpegs))
        frame = data.find(b"\xff\xc0")
        height = self.random.randrange(7000, 65536)
        width = self.random.randrange(7000, 65536)
        data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
        return BadInput("huge-header-jpeg", bytes(data), {"Content-Type": "image/jpeg"})

    # Well-formed pictures with nothing to read (the app answers 422 and stores nothing).
    def blank(self) -> BadInput:
        width, height = self.random.randrange(1, 600), self.random.randrange(1, 600)
        shade = self.random.randrange(256)
        mode, image_format = self.random.choice([("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
                                                  ("1", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("L", "JPEG"),
                                                  ("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGB", "BMP"), ("P", "GIF"),
                                                  ("RGB", "TIFF"), ("RGBA", "WEBP")])
        colour = {"1": shade & 1, "L": shade, "P": shade, "I;16": shade * 257, "LA": (shade, 255),
                  "RGB": (shade, shade, 255 - shade), "RGBA": (shade, shade, shade, 0 if shade % 2 else 255),
                  "CMYK": (shade, 0, 0, 0)}[mode]
        image = Image.new(mode, (width, height), colour)
        return BadInput(f"blank-{image_format.lower()}", encoded(image, image_format), self._content_type())

    def faint_noise(self) -> BadInput:
        """Paper with noise of at most 3% (the README: faint noise reads as nothing drawn)."""
        side = self.random.randrange(28, 400)
        generator = np.random.default_rng(self.random.randrange(2**32))
        pixels = np.clip(235 + generator.integers(-7, 8, size=(side, side)), 0, 255).astype(np.uint8)
        return BadInput("faint-noise", png_bytes(Image.fromarray(pixels, "L")), {"Content-Type": "image/png"})

    def single_dot(self) -> BadInput:
        image = Image.new("L", (280, 280), 255)
        x, y, radius = self.random.randrange(20, 260), self.random.randrange(20, 260), self.random.randrange(1, 5)
        image.paste(0, (x - radius, y - radius, x + radius, y + radius))
        return BadInput("single-dot", png_bytes(image), {"Content-Type": "image/png"})

    def other_format_digit(self) -> BadInput:
        """A real digit as BMP, GIF, TIFF or WebP: the API says PNG or JPEG; whatever it does is recorded."""
        image_format = self.random.choice(["BMP", "GIF", "TIFF", "WEBP"])
        picture = self.random.choice(self.pictures)
        return BadInput(f"digit-as-{image_format.lower()}", encoded(picture, image_format), self._content_type(),
                        may_store=True)

    # Wrong content types and broken forms.
    def wrong_content_type(self) -> BadInput:
        content_type, body = self.random.choice([
            ("application/json", json.dumps({"image": self.random.randbytes(30).hex()}).encode()),
            ("application/x-www-form-urlencoded", b"image=" + self.random.randbytes(40).hex().encode()),
            ("text/html", b"<html><body>7</body></html>"),
            ("image/png", b"data:image/png;base64," + self.random.randbytes(60).hex().encode()),
            ("application/gzip", zlib.compress(self.random.choice(self.pngs))),
        ])
        return BadInput("wrong-content-type", body, {"Content-Type": content_type})

    def multipart_without_boundary(self) -> BadInput:
        return BadInput("multipart-no-boundary", self._garbage(10), {"Content-Type": "multipart/form-data"})

    def multipart_without_file(self) -> BadInput:
        boundary = self._boundary()
        body = multipart_body([("image", None, None, b"not a file"), ("note", None, None, b"7")], boundary)
        return BadInput("multipart-no-file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_bad_file(self) -> BadInput:
        boundary = self._boundary()
        content = self.random.choice([self._garbage(12), self.truncated_png().body, b""])
        body = multipart_body([("image", "digit.png", "image/png", content)], boundary)
        return BadInput("multipart-bad-file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_too_many(self) -> BadInput:
        boundary = self._boundary()
        if self.random.random() < 0.5:
            parts = [(f"image{index}", f"{index}.png", "image/png", self._garbage(8)) for index in range(2, 5)]
        else:
            parts = [(f"field{index}", None, None, b"x") for index in range(12, 40)]
        return BadInput("multipart-too-many-parts", multipart_body(parts, boundary),
                        {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def multipart_unterminated(self) -> BadInput:
        boundary = self._boundary()
        body = multipart_body([("image", "digit.png", "image/png", self._garbage(10))], boundary, terminated=False)
        body = body[:self.random.randrange(1, len(body))]
        return BadInput("multipart-unterminated", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    # Too big.
    def oversized(self) -> BadInput:
        size = MAX_BODY_BYTES + self.random.randrange(1, 1024 * 1024)
        kind = self.random.choice(["declared", "chunked", "multipart"])
        if kind == "multipart":
            boundary = self._boundary()
            body = multipart_body([("image", "big.png", "image/png", PNG_SIGNATURE + self.random.randbytes(size))], boundary)
            return BadInput("oversized-multipart", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return BadInput(f"oversized-{kind}", PNG_SIGNATURE + self.random.randbytes(size), {"Content-Type": "image/png"},
                        chunked=kind == "chunked")

    # Wrong method and malformed HTTP, sent as raw bytes.
    def wrong_method(self) -> BadInput:
        return BadInput("wrong-method", b"", method=self.random.choice(["GET", "PUT", "PATCH", "DELETE"]))

    def raw_malformed(self) -> BadInput:
        head = "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        kind = self.random.choice(["content-length-text", "content-length-negative", "content-length-huge",
                                   "short-body", "bad-chunk-size", "header-flood"])
        if kind == "content-length-text":
            raw, half_close = (head + "Content-Length: seven\r\n\r\n").encode() + b"1234567", False
        elif kind == "content-length-negative":
            raw, half_close = (head + "Content-Length: -5\r\n\r\n").encode(), False
        elif kind == "content-length-huge":
            raw, half_close = (head + "Content-Length: 99999999999999999999\r\n\r\n").encode() + b"abc", True
        elif kind == "short-body":
            raw, half_close = (head + "Content-Length: 5000\r\n\r\n").encode() + self.random.choice(self.pngs)[:100], True
        elif kind == "bad-chunk-size":
            raw, half_close = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"zz\r\nabc\r\n0\r\n\r\n", False
        else:
            flood = "".join(f"X-Filler-{index}: {'a' * 200}\r\n" for index in range(400))
            raw, half_close = (head + flood + "Content-Length: 3\r\n\r\n").encode() + b"abc", False
        return BadInput(f"raw-{kind}", raw_request=raw, half_close=half_close)

    LIGHT = ("empty", "garbage", "unicode_text", "magic_then_garbage", "svg", "eps", "truncated_png", "truncated_jpeg",
             "bad_crc_png", "bit_flipped", "huge_header_png", "huge_header_jpeg", "blank", "faint_noise", "single_dot",
             "other_format_digit", "wrong_content_type", "multipart_without_boundary", "multipart_without_file",
             "multipart_bad_file", "multipart_too_many", "multipart_unterminated", "oversized", "wrong_method",
             "raw_malformed")

    def light(self, count: int) -> list[BadInput]:
        cases = [getattr(self, name)() for name in self.LIGHT]  # every category at least once
        while len(cases) < count:
            cases.append(getattr(self, self.random.choice(self.LIGHT))())
        self.random.shuffle(cases)
        return cases[:count]


def heavy_inputs(repeats: int) -> list[BadInput]:
    """Decompression bombs (refused by size) and pictures just under the app's 40 Mpixel limit (decoded)."""
    bombs = [
        ("bomb-png-30000x30000-1bit", blank_png(30000, 30000, bit_depth=1, colour_type=0, channels=1)),
        ("bomb-png-30000x30000-grey", blank_png(30000, 30000, bit_depth=8, colour_type=0, channels=1)),
        ("near-limit-png-6300x6300-rgba", blank_png(6300, 6300, bit_depth=8, colour_type=6, channels=4)),
        ("near-limit-png-6300x6300-rgba16", blank_png(6300, 6300, bit_depth=16, colour_type=6, channels=4)),
        ("near-limit-png-1x39000000-strip", blank_png(1, 39_000_000, bit_depth=8, colour_type=0, channels=1)),
    ]
    return [BadInput(name, body, {"Content-Type": "image/png"}, heavy=True) for name, body in bombs for _ in range(repeats)]


async def send_raw(port: int, case: BadInput) -> tuple[int | None, str | None]:
    """Send bytes as-is; the status of the answer, or None when the server closed without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(case.raw_request)
        await writer.drain()
        if case.half_close:
            writer.write_eof()
        try:
            head = await asyncio.wait_for(reader.readline(), RAW_RESPONSE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            return None, "no answer (connection left open)"
        match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(match.group(1)), None) if match else (None, "closed without an answer")
    finally:
        writer.close()


async def send_bad_input(client: httpx2.AsyncClient, port: int, case: BadInput) -> BadInputResult:
    started = time.monotonic()
    if case.raw_request is not None:
        try:
            status, note = await send_raw(port, case)
        except OSError as error:
            status, note = None, f"connection error {type(error).__name__}"
        # A client that gives up mid-body gets no answer, which is fine; anything else must be answered.
        error = None if status is not None or (case.half_close and note == "closed without an answer") else note
        return BadInputResult(case, status, error, time.monotonic() - started, json_error=False)
    content = case.body
    if case.chunked:
        body = case.body

        async def chunks():
            for offset in range(0, len(body), 64 * 1024):
                yield body[offset:offset + 64 * 1024]

        content = chunks()
    try:
        response = await client.request(case.method, "/api/predict", content=content if case.method != "GET" else None,
                                        headers=case.headers)
    except httpx2.HTTPError as error:
        return BadInputResult(case, None, f"transport {type(error).__name__}", time.monotonic() - started, False)
    try:
        body = response.json()
    except ValueError:
        body = None
    json_error = isinstance(body, dict) and "error" in body
    prediction_id = body.get("id") if isinstance(body, dict) and response.status_code == 200 else None
    return BadInputResult(case, response.status_code, None, time.monotonic() - started, json_error, prediction_id)


async def send_all_bad_inputs(base_url: str, port: int, light: list[BadInput], heavy: list[BadInput],
                              concurrency: int, headers: dict[str, str]) -> list[BadInputResult]:
    limits = httpx2.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, timeout=FUZZ_CLIENT_TIMEOUT_SECONDS, limits=limits,
                                  trust_env=False, headers=headers) as client:
        gate = asyncio.Semaphore(concurrency)

        async def limited(case: BadInput) -> BadInputResult:
            async with gate:
                return await send_bad_input(client, port, case)

        results = list(await asyncio.gather(*(limited(case) for case in light)))
        for case in heavy:  # one at a time: each may take seconds and a gigabyte or more
            results.append(await send_bad_input(client, port, case))
        return results


def run_bad_input(*, app: AppProcess, node: CassandraNode, keyspace: str, arguments, pictures, api_images,
                  figures: dict, expected: dict) -> None:
    generator = BadInputs(arguments.seed, pictures)
    heavy = heavy_inputs(arguments.bomb_repeats)
    light = generator.light(max(0, arguments.fuzz_cases - len(heavy)))
    say(f"(3) bad input: {len(light) + len(heavy)} bodies ({len(light)} light, {arguments.fuzz_concurrency} at a "
        f"time; {len(heavy)} bombs and near-limit pictures one at a time) to POST /api/predict, no other load")
    log_offset = log_size(app.log_path)
    rows_before = sum(node.stored_ids(keyspace)[0].values())
    peak_before = app.memory_mb("VmHWM")
    sampler = RssSampler(app)
    sampler.start()
    started = time.monotonic()
    results = asyncio.run(send_all_bad_inputs(app.base_url, app.port, light, heavy, arguments.fuzz_concurrency,
                                              app.api_headers))
    elapsed = time.monotonic() - started
    rss_peak = sampler.finish()

    healthy = app.running() and app.health() is not None
    try:
        serving = app.http.get(app.base_url + "/_stcore/health").status_code == 200
    except httpx2.HTTPError:
        serving = False
    if healthy:
        app.wait_until_drained(arguments.drain_timeout)  # accepted pictures reach Cassandra before the count
    rows_after = sum(node.stored_ids(keyspace)[0].values())
    # The server still reads a good digit afterwards.
    image, _ = api_images[0]
    try:
        response = app.http.post(app.base_url + "/api/predict", content=image, headers={"Content-Type": "image/png"})
        still_reads = response.status_code == 200
    except httpx2.HTTPError:
        still_reads = False
    if still_reads:
        expected["api"].add(response.json()["id"])

    crashes = [result for result in results if result.error is not None or (result.status or 0) >= 500]
    accepted = [result for result in results if result.status == 200]
    expected["api"] |= {result.prediction_id for result in accepted if result.prediction_id is not None}
    non_json = [result for result in results
                if result.status not in (None, 200) and not result.json_error and result.case.raw_request is None]
    wrongly_accepted = [result for result in accepted if not result.case.may_store]
    figures.update({
        "fuzz_cases": len(results),
        "fuzz_crashes": len(crashes) + (0 if healthy and serving and still_reads else 1),
        "fuzz_status_counts": {str(key): value for key, value in sorted(
            collections.Counter(result.status if result.status is not None else "none" for result in results).items(),
            key=lambda item: str(item[0]))},
        "fuzz_accepted": len(accepted),
        "fuzz_wrongly_accepted": len(wrongly_accepted),
        "fuzz_rows_stored": rows_after - rows_before,
        "fuzz_rows_unexplained": rows_after - rows_before - len(accepted),
        "fuzz_non_json_errors": len(non_json),
        "fuzz_seconds": round(elapsed, 1),
        "fuzz_slowest_s": round(max(result.seconds for result in results), 2) if results else None,
        "fuzz_rss_peak_mb": None if rss_peak is None else round(rss_peak, 1),
        "app_vmhwm_mb": round(app.memory_mb("VmHWM") or 0, 1),
        "healthy_after_fuzz": healthy and serving and still_reads,
    })
    by_category: dict[str, list[BadInputResult]] = collections.defaultdict(list)
    for result in results:
        by_category[result.case.category].append(result)
    say(f"  {'category':<34}{'cases':>6}  {'answers':<32}{'slowest':>9}")
    for category in sorted(by_category):
        group = by_category[category]
        answers = collections.Counter(result.status if result.status is not None else result.error for result in group)
        summary = ", ".join(f"{answer} x{count}" for answer, count in sorted(answers.items(), key=str))
        say(f"  {category:<34}{len(group):>6}  {summary:<32}{max(result.seconds for result in group):>8.2f}s")
    say(f"  {figures['fuzz_cases']} cases in {elapsed:.1f} s: {len(crashes)} crashes (5xx or connection errors); server "
        f"healthy afterwards: {figures['healthy_after_fuzz']}; {len(accepted)} accepted (decodable pictures), "
        f"{len(wrongly_accepted)} of them should have been refused; rows {rows_before} -> {rows_after} "
        f"({figures['fuzz_rows_unexplained']} unexplained); {len(non_json)} refusals not in JSON "
        f"{dict(collections.Counter(f'{result.case.category} {result.status}' for result in non_json))}")
    say(f"  app RSS peak while fuzzing {figures['fuzz_rss_peak_mb']} MB (sampled every {RSS_SAMPLE_SECONDS:g} s); "
        f"VmHWM {figures['app_vmhwm_mb']} MB (was {None if peak_before is None else round(peak_before, 1)} MB)")
    for result in crashes[:10]:
        say(f"    crash: {result.case.category}: {result.status} {result.error}")
    for result in wrongly_accepted[:10]:
        say(f"    accepted but should not be: {result.case.category} ({len(result.case.body)} bytes)")
    tracebacks = tracebacks_in_log(app.log_path, log_offset)
    figures["server_tracebacks_fuzz"] = sum(tracebacks.values())
    figures["server_traceback_kinds_fuzz"] = dict(tracebacks)
    for exception, count in tracebacks.most_common(5):
        say(f"  the app logged {count} traceback(s) while fuzzing, ending in: {exception}")
