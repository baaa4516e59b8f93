"""The agent: consumes work for the providers it serves, runs drivers in a
bounded worker pool and publishes results. It never touches the database."""
