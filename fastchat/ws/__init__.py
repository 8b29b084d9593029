"""WebSocket layer: frame building, permessage-deflate, and the picows listener."""
