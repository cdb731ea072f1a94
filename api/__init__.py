"""The service surface: the FastAPI app (`api.app`) and the `sqlarbiter` command line (`cli.main`)."""
