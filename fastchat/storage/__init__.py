"""Storage: the interface the chat uses (:mod:`.base`, :mod:`.ops`) and its backends."""
