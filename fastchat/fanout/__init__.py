"""Fan-out: the hub (local connections, per-room logs, the flush) and the broker seam."""
