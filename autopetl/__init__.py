"""autopetl."""
