"""The service's endpoints, one `APIRouter` per resource; `api.app.create_app` assembles them.

- `plans`: POST /plan, GET /plans/{id}        - `feedback`: POST /feedback
- `check`: POST /check                        - `databases`: GET /databases, GET /databases/{id}/schema
- `models`: GET|PUT /generators[/active], GET|PUT /discriminators[/active]
- `health`: GET /health (open), GET /metrics

Endpoints reach the planner, store, metrics and admission pool through `api.state.State` (a dependency).
"""
