"""Load generators for fastchat: raw-socket room fan-out (``fanout``) and Locust chat users."""
