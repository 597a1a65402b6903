"""Meetings section of the protocol over real sockets."""
