"""Containers shared by several formats (the LevelDB-style table of TensorFlow indexes)."""
