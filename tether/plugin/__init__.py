"""The plugin: api/ answers requests, tasks/ carries each task from accept to finish,
agents/ knows the agents and places work, outbound/ tells the world, db/ keeps it all."""
