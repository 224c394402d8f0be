"""Channels: who is subscribed where (store) and delivering to them (publisher)."""
