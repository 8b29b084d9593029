"""Test targets built on the server's own code (see :mod:`fastchat.testing.echo`)."""
