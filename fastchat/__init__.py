"""fastchat: a fast, dependable real-time chat server (asyncio + uvloop + picows + SQLite)."""

__version__ = "0.1.0"
