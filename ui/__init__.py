"""Dock widget and dialogs of the plugin (built in Python, no .ui files), their map tool, icons and styles."""
