"""Identifiers: UUIDs whose first 48 bits are the creation time in milliseconds (the UUIDv7 layout),
so ids sort by creation and serve as pagination cursors."""

import os
import time
import uuid


def new_id() -> str:
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))
