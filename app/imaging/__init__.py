"""Image intake: upload limits, multipart, framing pre-scans, decoding and fitting, the decode
pool, device decode."""
