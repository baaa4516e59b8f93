"""What the plugin tells the world once a task is finished: webhooks (callbacks.py, through
egress.py's rules on where they may go) and oslo.messaging notifications."""
