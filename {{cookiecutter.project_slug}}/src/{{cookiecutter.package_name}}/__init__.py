"""A real-time WebSocket service: channels, publish/subscribe, persisted messages."""
