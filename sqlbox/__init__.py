"""Databases and the sandbox for untrusted SQL: the database registry (`sqlbox.databases`), schema
introspection and prompts (`sqlbox.schema`), the SQL guard (`sqlbox.guard`), the sandboxed executor
(`sqlbox.executor`) over its execution engines (`sqlbox.engines`), the SQLite dialect bridge for DuckDB
(`sqlbox.dialect`), canonical result values and fingerprints (`sqlbox.values`) and the bundled demo database
(`sqlbox.demo`). Used by the pipeline, routing features, evaluation and the API; it imports only `core`."""
