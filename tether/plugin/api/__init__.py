"""The REST API of the plugin."""
