"""Applications: what a trained model can be applied to, one module each.

Each module declares one genlab.registry.Application: its Python function (the algorithm
lives in genlab.tasks), its `genlab apply NAME` options and command, its HTTP route (a
pydantic form and a handler that genlab.serve turns into an endpoint) and whether the studio
lists it. `genlab apply --help`, the server's routes, /docs and the studio's task list are all
built from these declarations; genlab.registry lists the built-in modules.
"""
