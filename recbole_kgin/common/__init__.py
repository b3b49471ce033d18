"""What every part of recbole-kgin uses: its error type, packaged folders, literal config
values, whole-file writes and config value checks."""
