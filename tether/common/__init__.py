"""What the plugin, the agents and the drivers share: options, states,
message schemas, transport setup and the exception root."""
