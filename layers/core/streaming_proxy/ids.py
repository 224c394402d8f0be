"""What the ids the proxy makes look like: patterns shared by the request models
(contract.py, channels/browser.py) and the stores that make the ids (threads.py), kept
apart so a request model never imports a store."""

from __future__ import annotations

# new_thread_id (threads.py); the tail's length left loose.
THREAD_ID = r"^thread_[A-Za-z0-9_-]{8,64}$"
