"""kboot doctor: explains what `import keras` will do in any Python, kboot-made or not."""
