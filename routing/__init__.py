"""Routing: which generator/discriminator pair answers a question. The router protocol and registry with the
fixed router (`routing.router`), CARROT-style predictors (`routing.carrot`), the LinUCB bandit
(`routing.bandit`), the TRIM-style cascade (`routing.cascade`), question/schema features (`routing.features`),
logged outcomes (`routing.outcomes`) and costs of published systems (`routing.costs`). Importing
`routing.registry_all` registers every router. Training data built from evaluations lives in `eval.outcomes`
and the offline study in `eval.routing`."""
