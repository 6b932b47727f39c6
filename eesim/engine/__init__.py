"""The engine: step plans executed with torch, measured in wall-clock time."""
