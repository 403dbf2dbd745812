"""RTSP client: messages, SDP, authentication, sessions (TCP interleaved / UDP) and reconnect policy."""
