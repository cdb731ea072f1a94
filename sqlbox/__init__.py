"""Databases and the sandbox for untrusted SQL: the database registry (`sqlbox.databases`), schema
introspection and prompts (`sqlbox.schema`), the SQL guard (`sqlbox.guard`), the sandboxed execution engines
(`sqlbox.executor`) and the bundled demo database (`sqlbox.demo`). Used by the pipeline, routing features,
evaluation and the API; it imports only `core`."""
