"""The agents as the plugin knows them: rpc.py is the endpoint they call, registry.py judges who
is alive, scheduler.py binds roots to agents, providers and capabilities say who can do what."""
