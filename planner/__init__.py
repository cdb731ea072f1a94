"""The planning pipeline and its stages.

One data model (`core.model`) flows one way: question -> route (`routing`) -> generate (`generators`) ->
normalize (`planner.normalize`) -> execute (`sqlbox`) -> discriminate (`discriminators`) -> select
(`planner.select`) -> Plan. `planner.stages` holds the stages as callable units that the service
(`planner.pipeline`) and eval replay both run; `planner.config` is the service configuration,
`planner.checkpoints` the swappable checkpoint pool, `planner.plans` the plan/feedback store and
`planner.metrics` the service metrics.
"""
