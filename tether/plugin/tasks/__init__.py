"""A task from accept to finish: checks, the outbox and its relay, claims, results, cancellation,
repairs and the reaper; every move of a task is a function of the state machine in lifecycle/."""
