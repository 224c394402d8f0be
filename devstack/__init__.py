"""Local stack: embedded DynamoDB, WebSocket gateway emulator, the stream app (never deployed)."""
