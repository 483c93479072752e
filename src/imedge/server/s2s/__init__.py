"""RFC 6120 server-to-server streams: resolution, connections, authentication."""
