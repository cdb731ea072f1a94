"""One module per `sqlarbiter` command; each exposes `add_to(subparsers)` and imports what it runs inside the
functions that run it, so building the parser stays cheap."""
