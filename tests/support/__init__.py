"""Helpers shared by the tests, the benchmarks (bench/) and the load tools (loadtest/).

- server: ``fastchat run`` processes, their config files, the fastchat CLI
- accounts: registering users over HTTP, or creating them with the CLI
- client: the picows chat client; rawws: the byte-level WebSocket client
- frames: building and decoding WebSocket frames; upgrade: the HTTP upgrade request
- transports: fake socket transports
- waiting: matching server events, and awaiting conditions that have no event
"""
