"""`make bench`: load through the real relay on loopback, measured against a baseline."""
