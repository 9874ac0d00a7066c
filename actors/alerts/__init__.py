"""The `alerts` subtree: log lines that matter to an operator, sent to Telegram and/or a webhook."""
