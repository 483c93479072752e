"""IM Edge: a federating XMPP instant-messaging and presence server."""

__version__ = "0.1.0"
