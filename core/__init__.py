"""The bottom layer, shared by every other package and importing none of them: the data model
(`core.model`), the name registry (`core.registry`), model specs (`core.specs`), settings and paths
(`core.settings`), errors (`core.errors`), the SQLAlchemy base of the store (`core.store`), and the model
runtime that generators and discriminators both run on (`core.runtime`: checkpoint loading, sampling and
detokenization, the embedded default model, chat framing, the OpenAI-compatible HTTP client)."""
