"""Real peer servers for interop tests: a private CA, a DNS stub, Prosody and ejabberd.

Each peer runs as a child process on its own loopback address (see ../shared/PEERS.md),
is waited for (its ports open), stopped by PID and leaves nothing running. Fixtures in
tests/peers/fixtures.py wrap these helpers for pytest.
"""
